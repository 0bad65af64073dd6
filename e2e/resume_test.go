package e2e

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// countConnections makes the tab's page count the RTCPeerConnections made
// from now on, in window.made.
func (tb *tab) countConnections() {
	tb.t.Helper()
	eval[bool](tb, `window.made = 0;
		window.RTCPeerConnection = class extends RTCPeerConnection {
			constructor(...args) { super(...args); made++; }
		};
		true`)
}

// count returns how many events of type the tab has had.
func (tb *tab) count(typ string) int {
	tb.t.Helper()
	return eval[int](tb, fmt.Sprintf(`events.filter((e) => e.type === %q).length`, typ))
}

// forgetReplaced drops the "replaced" errors from the server that the tab's
// page recorded: where a test expects them, they are not a failure.
func (tb *tab) forgetReplaced() {
	tb.t.Helper()
	eval[bool](tb, `window.received = received.filter((m) => !(m.type === "error" && m.error.startsWith("replaced:"))); true`)
}

// waitResumed waits until the tab has joined n times, the last time resumed,
// with the id it had, id.
func (tb *tab) waitResumed(n int, id string) {
	tb.t.Helper()
	tb.waitFor(fmt.Sprintf("join %d, resumed as %s", n, id), fmt.Sprintf(
		`events.filter((e) => e.type === "ready").length >= %d && events.findLast((e) => e.type === "ready").resumed && room.id === %q`, n, id))
}

// TestResumeServerRestart: the server crashes (SIGKILL) under two connected
// tabs and comes back on the same port with the same $PEERO_SECRET. Both tabs
// reconnect with their resume tokens and get their ids back; they keep the
// connection they have, which never closed: no leave, no join, no new
// RTCPeerConnection. Messages sent while the server is away and after it is
// back arrive over it.
func TestResumeServerRestart(t *testing.T) {
	ctx := setup(t)
	server, pages := runServer(t, []string{"PEERO_SECRET=the same secret"}), servePages(t)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTab("a", pages, server.url, "/resume")
	c, cID := b.clientTab("c", pages, server.url, "/resume")
	a.waitOpen(cID)
	c.waitOpen(aID)
	a.send(cID, "before")
	c.waitMessage(aID, "before")
	for _, tb := range []*tab{a, c} {
		tb.countConnections()
		eval[bool](tb, `window.mark = received.length; true`)
	}

	server.kill()
	for _, tb := range []*tab{a, c} {
		tb.waitFor("a reconnecting event", `events.some((e) => e.type === "reconnecting")`)
	}
	a.send(cID, "while the server is away")
	c.waitMessage(aID, "while the server is away")

	server.restart()
	a.waitResumed(2, aID)
	c.waitResumed(2, cID)
	// Whichever came back first is told of the other: wait until both know.
	for _, x := range []struct {
		tb    *tab
		other string
	}{{a, cID}, {c, aID}} {
		x.tb.waitFor("the server's word that "+x.other+" is back", fmt.Sprintf(
			`received.slice(mark).some((m) => m.type === "peers" && m.peers.includes(%[1]q) || m.type === "announce" && m.peerId === %[1]q)`, x.other))
	}
	c.send(aID, "after")
	a.waitMessage(cID, "after")
	a.send(cID, "after, back")
	c.waitMessage(aID, "after, back")

	for tb, messages := range map[*tab]int{a: 1, c: 3} { // each message once
		for typ, want := range map[string]int{"leave": 0, "join": 1, "open": 1, "message": messages} {
			if n := tb.count(typ); n != want {
				t.Errorf("tab %s: %d %s events; want %d", tb.name, n, typ, want)
			}
		}
		if n := eval[int](tb, `made`); n != 0 {
			t.Errorf("tab %s made %d RTCPeerConnections after the restart; want 0", tb.name, n)
		}
	}
}

// TestResumeNewSecret: the server comes back with another $PEERO_SECRET, so
// the tokens no longer work: both tabs get new ids and fall back to what
// peero.js did before resume tokens. They connect again under the new ids,
// recognise each other by the fingerprint of the DTLS certificate, close the
// old connection (its leave says rejoinedAs), and talk.
func TestResumeNewSecret(t *testing.T) {
	ctx := setup(t)
	server, pages := runServer(t, []string{"PEERO_SECRET=the first secret"}), servePages(t)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTab("a", pages, server.url, "/new-secret")
	c, cID := b.clientTab("c", pages, server.url, "/new-secret")
	a.waitOpen(cID)
	c.waitOpen(aID)

	server.kill()
	for _, tb := range []*tab{a, c} {
		tb.waitFor("a reconnecting event", `events.some((e) => e.type === "reconnecting")`)
	}
	a.send(cID, "while the server is away")
	c.waitMessage(aID, "while the server is away")
	server.env = []string{"PEERO_SECRET=the second secret"}
	server.restart()

	aNew, cNew := a.waitRejoin(aID), c.waitRejoin(cID)
	a.waitOpen(cNew)
	c.waitOpen(aNew)
	c.send(aNew, "after")
	a.waitMessage(cNew, "after")
	a.send(cNew, "after, back")
	c.waitMessage(aNew, "after, back")
	for _, x := range []struct {
		tb           *tab
		oldID, newID string
	}{{a, cID, cNew}, {c, aID, aNew}} {
		x.tb.waitFor("the old connection's leave", fmt.Sprintf(
			`events.some((e) => e.type === "leave" && e.id === %q && e.rejoinedAs === %q)`, x.oldID, x.newID))
		if eval[bool](x.tb, `events.findLast((e) => e.type === "ready").resumed === true`) {
			t.Errorf("tab %s: ready says resumed with a new id; want resumed false", x.tb.name)
		}
	}
}

// TestResumeFrozenServer: the server stops answering (SIGSTOP) under two
// connected tabs, which give up on it and on tries to join it; when it runs
// again it reads their old connections' ends and takes their tries, those
// they gave up on too, in whatever order its goroutines run. Both tabs end up
// in the room with their own ids, connected to each other, and talk.
func TestResumeFrozenServer(t *testing.T) {
	const opts = `{"pingInterval":300,"reconnect":{"first":100,"max":200}}`
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTabWith("a", pages, server.url, "/frozen-pair", opts)
	c, cID := b.clientTabWith("c", pages, server.url, "/frozen-pair", opts)
	a.waitOpen(cID)
	c.waitOpen(aID)

	server.signal(syscall.SIGSTOP)
	for _, tb := range []*tab{a, c} {
		tb.waitFor("a try that timed out", `events.some((e) => e.type === "reconnecting" && e.reason === "the server did not let us join in time")`)
	}
	server.signal(syscall.SIGCONT)
	a.waitResumed(2, aID)
	c.waitResumed(2, cID)
	// The channel is open if the last open or leave of the peer is an open.
	connected := func(id string) string {
		return fmt.Sprintf(`room.id !== null && events.findLast((e) => (e.type === "open" || e.type === "leave") && e.id === %q)?.type === "open"`, id)
	}
	a.waitFor("a channel open to "+cID, connected(cID))
	c.waitFor("a channel open to "+aID, connected(aID))
	a.send(cID, "after the freeze")
	c.waitMessage(aID, "after the freeze")
	c.send(aID, "after the freeze, back")
	a.waitMessage(cID, "after the freeze, back")
	for _, tb := range []*tab{a, c} {
		if n := tb.count("replaced"); n != 0 {
			t.Errorf("tab %s: %d replaced events; want 0", tb.name, n)
		}
		// A try of its own that the server took late may have replaced the
		// tab's connection (and the tab reconnected): that error is expected.
		tb.forgetReplaced()
	}
}

// TestResumeReplaced: another client connects with a tab's resume token and
// takes its id. The tab gets the error that says so and stops: a replaced
// event, no id, no reconnecting; the other client keeps the id.
func TestResumeReplaced(t *testing.T) {
	const maxDelay = 200 // ms between tries, were the tab to reconnect
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTabWith("a", pages, server.url, "/replaced",
		fmt.Sprintf(`{"reconnect":{"first":%d,"max":%d}}`, maxDelay/2, maxDelay))
	eval[bool](a, `room.addEventListener("replaced", (e) => events.push({ type: "replaced", ...e.detail })); true`)
	token := eval[string](a, `received.findLast((m) => m.type === "peers").resume`)

	ws, err := websocket.Dial(server.url+"/replaced?resume="+url.QueryEscape(token), "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first signal
	if err := websocket.JSON.Receive(ws, &first); err != nil || first.Type != "peers" || first.ID != aID {
		t.Fatalf("with the tab's token: first message %+v, %v; want peers with id %s", first, err, aID)
	}

	a.waitFor("a replaced event", fmt.Sprintf(`events.some((e) => e.type === "replaced" && e.id === %q)`, aID))
	if id := eval[*string](a, `room.id`); id != nil {
		t.Errorf("tab a: room.id = %q after it was replaced; want null", *id)
	}
	// Were the tab to reconnect with its token, it would take the id back
	// within a try or two, and the server would tell this client so.
	ws.SetReadDeadline(time.Now().Add(10 * maxDelay * time.Millisecond))
	var m signal
	if err := websocket.JSON.Receive(ws, &m); err == nil {
		t.Errorf("the client with the id got %+v; want nothing: the tab should not reconnect", m)
	}
	if n := a.count("reconnecting"); n != 0 {
		t.Errorf("tab a: %d reconnecting events; want 0", n)
	}
	// The error this test wants.
	a.forgetReplaced()
}

// TestResumeRoomSawUsGo: tab c's connection to the server is cut while the
// server runs. The server tells the room c left, and c comes back with its id
// before a hears of it (a's connection is held up). Then a hears both: it
// closes its connection to c at the remove, and waits for c's offer at the
// announce. c, which kept that connection when it resumed, sees it close and
// offers, as it did when it first joined after a. Both see leave then join,
// and talk over the new connection under the same ids.
func TestResumeRoomSawUsGo(t *testing.T) {
	const opts = `{"reconnect":{"first":100,"max":200}}`
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	toA, toC := startProxy(t, server.url), startProxy(t, server.url)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTabWith("a", pages, toA.url, "/saw-us-go", opts)
	c, cID := b.clientTabWith("c", pages, toC.url, "/saw-us-go", opts)
	a.waitOpen(cID)
	c.waitOpen(aID)

	toA.hold()
	toC.down()
	// Were c back before the server saw it go, c would replace its old
	// connection and the room would hear nothing: not the case under test.
	toA.waitHeld(t, `{"type":"remove","peerId":"`+cID+`"}`)
	toC.up()
	c.waitResumed(2, cID)
	toA.release()

	reopened := func(id string) string {
		return fmt.Sprintf(`events.filter((e) => e.type === "open" && e.id === %q).length === 2`, id)
	}
	a.waitFor("a second channel open to "+cID, reopened(cID))
	c.waitFor("a second channel open to "+aID, reopened(aID))
	a.send(cID, "after")
	c.waitMessage(aID, "after")
	c.send(aID, "after, back")
	a.waitMessage(cID, "after, back")
	for _, tb := range []*tab{a, c} {
		for typ, want := range map[string]int{"leave": 1, "join": 2, "open": 2} {
			if n := tb.count(typ); n != want {
				t.Errorf("tab %s: %d %s events; want %d", tb.name, n, typ, want)
			}
		}
	}
	if id := eval[string](a, `room.id`); id != aID {
		t.Errorf("tab a: id %s; want %s, its first", id, aID)
	}
}

// proxy passes the TCP connections of pages on to a server, so that a test
// can cut them, or hold up what the server sends them, while the server runs.
type proxy struct {
	url    string // ws://127.0.0.1:PORT, for pages
	server string // 127.0.0.1:PORT

	mu      sync.Mutex    // guards the fields below
	conns   []net.Conn    // both ends of every connection
	refuse  bool          // whether new connections are closed at once
	flowing chan struct{} // closed while what the server sends flows on
	held    []byte        // what the server sent while held
	grew    chan struct{} // closed when held grows, and replaced
}

// startProxy starts a proxy to serverURL (ws://127.0.0.1:PORT). It stops when
// the test ends.
func startProxy(t *testing.T, serverURL string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{url: "ws://" + ln.Addr().String(), server: strings.TrimPrefix(serverURL, "ws://"),
		flowing: make(chan struct{}), grew: make(chan struct{})}
	close(p.flowing)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // ends when the listener closes
		defer wg.Done()
		for {
			page, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			refuse := p.refuse
			p.mu.Unlock()
			if refuse {
				page.Close()
				continue
			}
			server, err := net.Dial("tcp", p.server)
			if err != nil {
				page.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, page, server)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.copy(server, page, false) }() // end when either end closes
			go func() { defer wg.Done(); p.copy(page, server, true) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.release()
		p.down()
		wg.Wait()
	})
	return p
}

// copy copies from src to dst until either fails, then closes both. If
// fromServer, it waits while the proxy holds what the server sends.
func (p *proxy) copy(dst, src net.Conn, fromServer bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromServer {
			<-p.flow(buf[:n])
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// flow returns a channel that is closed when data from the server may flow
// on; if it is held, data is added to held.
func (p *proxy) flow(data []byte) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		p.held = append(p.held, data...)
		close(p.grew)
		p.grew = make(chan struct{})
	}
	return p.flowing
}

// down cuts every connection through the proxy, at both ends, and closes new
// ones at once until up.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// up lets new connections through again.
func (p *proxy) up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = false
}

// hold holds up what the server sends, until release.
func (p *proxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flowing = make(chan struct{})
	p.held = nil
}

// waitHeld waits up to 5 s until what the proxy holds contains text.
func (p *proxy) waitHeld(t *testing.T, text string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		p.mu.Lock()
		held, grew := string(p.held), p.grew
		p.mu.Unlock()
		if strings.Contains(held, text) {
			return
		}
		select {
		case <-grew:
		case <-timeout:
			t.Fatalf("the proxy holds %q; want it to hold %s", held, text)
		}
	}
}

// release lets what the server sends flow again, what was held first.
func (p *proxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}
