module peero/deploy

go 1.26
