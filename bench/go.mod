module peero/bench

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	golang.org/x/net v0.62.0
)
