// Command echo is the benchmark's ceiling: a bare golang.org/x/net/websocket
// server that sends every text message back to its sender, so that the relay
// load measures what this WebSocket library allows on one core, with none of
// Peero's work.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	echo := websocket.Server{Handler: func(c *websocket.Conn) {
		for {
			var msg []byte
			if err := websocket.Message.Receive(c, &msg); err != nil {
				return
			}
			if _, err := c.Write(msg); err != nil { // a text frame, as received
				return
			}
		}
	}}
	http.Serve(ln, echo)
}
