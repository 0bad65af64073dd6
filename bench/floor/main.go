// Command floor is the benchmark's floor for idle memory: the least a
// golang.org/x/net/websocket server can hold per connected peer. Each
// connection gets a peers message, as Peero's peers do, and then one
// goroutine blocked in websocket.Message.Receive with x/net's own buffers
// (websocket.Server with its defaults, served by net/http). It relays
// nothing and keeps no rooms.
//
// SIGUSR2 runs debug.FreeOSMemory, so that the benchmark can measure memory
// after a full garbage collection as it does for Peero. With PEERO_DEBUG_ADDR
// set, a second listener there serves net/http/pprof, as Peero's benchmark
// build does (profile.sh compares their heaps).
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

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
	gc := make(chan os.Signal, 1)
	signal.Notify(gc, syscall.SIGUSR2)
	go func() { // lives as long as the process
		for range gc {
			debug.FreeOSMemory()
		}
	}()
	if addr := os.Getenv("PEERO_DEBUG_ADDR"); addr != "" {
		go http.ListenAndServe(addr, nil) // DefaultServeMux: net/http/pprof's handlers
	}
	fmt.Printf("listening %s\n", ln.Addr())
	// websocket.Server rather than websocket.Handler: the Handler refuses
	// clients that send no Origin header, as the benchmark's do not.
	floor := websocket.Server{Handler: func(c *websocket.Conn) {
		hello := `{"type":"peers","id":"` + rand.Text() + `","peers":[]}`
		if websocket.Message.Send(c, hello) != nil {
			return
		}
		for { // ends when the client leaves; Receive answers pings itself
			var msg []byte
			if websocket.Message.Receive(c, &msg) != nil {
				return
			}
		}
	}}
	http.Serve(ln, floor)
}
