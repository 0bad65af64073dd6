package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// readTimeout bounds every read in these tests, so a bug fails fast instead of hanging.
const readTimeout = 5 * time.Second

// setupTest starts a Server with opts and events under httptest and returns
// it with its ws:// base URL. Both are closed when the test ends.
func setupTest(t *testing.T, opts Options, events Events) (*Server, string) {
	t.Helper()
	srv := New(opts)
	srv.Events = events
	ts := httptest.NewServer(srv)
	ts.Config.ErrorLog = nil
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return srv, "ws" + strings.TrimPrefix(ts.URL, "http")
}

// setupLogged is setupTest with ln under the server, to see what the server
// does with each connection; ln's fields but Listener are set by the caller.
func setupLogged(t *testing.T, opts Options, events Events, ln *connLog) (*Server, string) {
	t.Helper()
	srv := New(opts)
	srv.Events = events
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ErrorLog = nil
	ln.Listener = ts.Listener
	ts.Listener = ln
	ts.Start()
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return srv, "ws" + strings.TrimPrefix(ts.URL, "http")
}

// connLog is a listener that keeps every connection it accepts, to see what
// the server did with it.
type connLog struct {
	net.Listener
	// writeBuffer, if not 0, is the size of the server's socket send buffers,
	// so that what a peer does not read builds up in the server, not the kernel.
	writeBuffer int
	onWrite     func(*loggedConn, []byte) // if not nil, called before each write after the handshake
	hold        chan struct{}             // if not nil, the handshake's response waits for it to close
	holding     chan struct{}             // with hold: sent to when a response waits
	// slowClose, if not 0, is how long closing a connection takes: a server
	// that does not wait for its sockets to close is then seen to return first.
	slowClose time.Duration

	mu    sync.Mutex
	conns []*loggedConn
}

// loggedConn is the server's side of a connection, as connLog sees it.
type loggedConn struct {
	net.Conn
	log      *connLog
	upgraded atomic.Bool  // the handshake's response is written: frames follow
	written  atomic.Int64 // bytes of frames written, after the handshake's response
	writes   atomic.Int32 // writes in progress
	overlap  atomic.Bool  // two writes were in progress at once
	closed   chan struct{}
	once     sync.Once
}

func (l *connLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tcp, ok := c.(*net.TCPConn); ok && l.writeBuffer > 0 {
		tcp.SetWriteBuffer(l.writeBuffer)
	}
	lc := &loggedConn{Conn: c, log: l, closed: make(chan struct{})}
	l.mu.Lock()
	l.conns = append(l.conns, lc)
	l.mu.Unlock()
	return lc, nil
}

// of returns the server's side of the client connection c.
func (l *connLog) of(c net.Conn) *loggedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lc := range l.conns {
		if lc.RemoteAddr().String() == c.LocalAddr().String() {
			return lc
		}
	}
	panic("no connection from " + c.LocalAddr().String())
}

// upgraded returns the connections that became WebSockets.
func (l *connLog) upgraded() []*loggedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(l.conns), func(c *loggedConn) bool { return !c.upgraded.Load() })
}

func (c *loggedConn) Write(b []byte) (int, error) {
	if c.writes.Add(1) > 1 {
		c.overlap.Store(true)
	}
	defer c.writes.Add(-1)
	if !c.upgraded.Load() { // x/net writes the response in one write, before any frame
		if c.log.hold != nil && bytes.HasPrefix(b, []byte("HTTP/1.1 101")) {
			c.log.holding <- struct{}{}
			<-c.log.hold
		}
		c.upgraded.Store(bytes.HasPrefix(b, []byte("HTTP/1.1 101")) && bytes.HasSuffix(b, []byte("\r\n\r\n")))
		return c.Conn.Write(b)
	}
	if c.log.onWrite != nil {
		c.log.onWrite(c, b)
	}
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

func (c *loggedConn) Close() error {
	time.Sleep(c.log.slowClose)
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// isClosed reports whether the server has closed c.
func (c *loggedConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// msg is any server message, decoded.
type msg struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Peers  []string        `json:"peers"`
	PeerID string          `json:"peerId"`
	Signal json.RawMessage `json:"signal"`
	Error  string          `json:"error"`
	Resume string          `json:"resume"`
	raw    string
}

type client struct {
	t      testing.TB
	conn   *websocket.Conn
	id     string   // from the first peers message
	peers  []string // from the first peers message
	resume string   // from the first peers message: the token that gives id back
}

// dial connects a client to base+path and reads its first message, which must be peers.
func dial(t testing.TB, base, path string) *client {
	t.Helper()
	conn, err := websocket.Dial(base+path, "", "http://localhost/")
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn}
	m := c.read()
	if m.Type != "peers" || m.ID == "" || m.Peers == nil {
		t.Fatalf("first message = %s; want peers with id and a list", m.raw)
	}
	c.id, c.peers, c.resume = m.ID, m.Peers, m.Resume
	return c
}

func (c *client) send(text string) {
	c.t.Helper()
	if err := websocket.Message.Send(c.conn, text); err != nil {
		c.t.Fatalf("send %s: %v", text, err)
	}
}

func (c *client) read() msg {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	var text string
	if err := websocket.Message.Receive(c.conn, &text); err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m msg
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		c.t.Fatalf("read %q: %v", text, err)
	}
	m.raw = text
	if len(text) > 300 { // keep failure messages readable
		m.raw = text[:300] + "…"
	}
	return m
}

// nextInBackground reads c's next message while the test goes on, as a client
// must for the server to finish closing, and sends the message, or "EOF" for a
// close frame (after which it closes c), or the error.
func (c *client) nextInBackground() <-chan string {
	next := make(chan string, 1)
	go func() {
		c.conn.SetReadDeadline(time.Now().Add(readTimeout))
		var text string
		if err := websocket.Message.Receive(c.conn, &text); err != nil {
			text = err.Error()
			c.conn.Close() // as a client answers a close frame
		}
		next <- text
	}()
	return next
}

// expect reads one message and fails unless its type is typ.
func (c *client) expect(typ string) msg {
	c.t.Helper()
	m := c.read()
	if m.Type != typ {
		c.t.Fatalf("got %s; want a %s message", m.raw, typ)
	}
	return m
}

// quiet checks that nothing is waiting for c: the reply to a ping comes next.
func (c *client) quiet() {
	c.t.Helper()
	c.send(`{"type":"ping"}`)
	c.expect("pong")
}

// sync sends a ping and reads to its reply, skipping messages of the types
// given: once it returns, the server has handled all that c sent before.
func (c *client) sync(skip ...string) {
	c.t.Helper()
	c.send(`{"type":"ping"}`)
	for m := c.read(); m.Type != "pong"; m = c.read() {
		if !slices.Contains(skip, m.Type) {
			c.t.Fatalf("got %s; want a pong, after %q messages only", m.raw, skip)
		}
	}
}

// recorder collects Events as lines, each hook's name and arguments: such
// as "connection ID ROOM", or "peers ID [ID ID]" ("peers ID nil" for a nil
// list).
type recorder chan string

func (r recorder) events() Events {
	return Events{
		Connection: func(p *Peer) { r <- "connection " + p.ID + " " + p.Room },
		Message:    func(p *Peer, m []byte) { r <- "message " + p.ID + " " + string(m) },
		Offer:      func(p *Peer, s json.RawMessage) { r <- "offer " + p.ID + " " + string(s) },
		Answer:     func(p *Peer, from string, s json.RawMessage) { r <- "answer " + p.ID + " " + from + " " + string(s) },
		Announce:   func(p *Peer) { r <- "announce " + p.ID },
		Peers: func(p *Peer, ids []string) {
			list := "[" + strings.Join(ids, " ") + "]"
			if ids == nil {
				list = "nil"
			}
			r <- "peers " + p.ID + " " + list
		},
		Remove: func(p *Peer) { r <- "remove " + p.ID },
		Error:  func(err error, p *Peer) { r <- "error " + p.ID + " " + err.Error() },
	}
}

// next returns the next event line that starts with one of prefixes, skipping others.
func (r recorder) next(t *testing.T, prefixes ...string) string {
	t.Helper()
	timeout := time.After(readTimeout)
	for {
		select {
		case e := <-r:
			for _, p := range prefixes {
				if strings.HasPrefix(e, p) {
					return e
				}
			}
		case <-timeout:
			t.Fatalf("no event starting with %q within %v", prefixes, readTimeout)
		}
	}
}

func TestFirstMessageIsPeers(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	conn, err := websocket.Dial(base+"/room", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	var text string
	if err := websocket.Message.Receive(conn, &text); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal([]byte(text), &m)
	id, _ := m["id"].(string)
	resume, _ := m["resume"].(string)
	if m["type"] != "peers" || len(id) != 26 || !strings.Contains(text, `"peers":[]`) ||
		!strings.HasPrefix(resume, id+".") || len(m) != 4 {
		t.Errorf("first message = %s; want {\"type\":\"peers\",\"id\":<26 chars>,\"peers\":[],\"resume\":<id>.…}", text)
	}
}

func TestIDsAreUnique(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	seen := map[string]bool{}
	for range 20 {
		c := dial(t, base, "/")
		if seen[c.id] {
			t.Fatalf("id %s given twice", c.id)
		}
		seen[c.id] = true
		c.conn.Close()
	}
}

func TestAnnounce(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	if !slices.Equal(b.peers, []string{a.id}) {
		t.Errorf("b's peers = %v; want [%s]", b.peers, a.id)
	}
	if m := a.expect("announce"); m.PeerID != b.id || m.raw != `{"type":"announce","peerId":"`+b.id+`"}` {
		t.Errorf("a got %s; want announce of %s", m.raw, b.id)
	}
	b.quiet() // b is not announced to itself, nor a to b
}

func TestPeersRequest(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	c := dial(t, base, "/r")
	a.expect("announce")
	a.expect("announce")
	a.send(`{"type":"peers"}`)
	m := a.expect("peers")
	slices.Sort(m.Peers)
	want := []string{b.id, c.id}
	slices.Sort(want)
	if m.ID != a.id || !slices.Equal(m.Peers, want) {
		t.Errorf("peers reply = %s; want id %s, peers %v", m.raw, a.id, want)
	}
}

func TestPing(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/")
	a.send(`{"type":"ping"}`)
	if m := a.expect("pong"); m.raw != `{"type":"pong"}` {
		t.Errorf("got %s; want {\"type\":\"pong\"}", m.raw)
	}
}

// signal has characters json.Marshal would escape and spacing it would drop:
// the server must pass it on byte for byte.
const sdp = `{ "type": "offer", "sdp": "v=0\r\n<a> & <b>" , "n": [1, 2.50] }`

func TestOfferToRoom(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	c := dial(t, base, "/r")
	b.expect("announce")
	a.send(`{"type":"offer","signal":` + sdp + `}`)
	want := `{"type":"offer","peerId":"` + a.id + `","signal":` + sdp + `}`
	for _, x := range []*client{b, c} {
		if m := x.read(); m.raw != want {
			t.Errorf("got %s; want %s", m.raw, want)
		}
	}
	a.expect("announce")
	a.expect("announce")
	a.quiet() // the sender does not get its own offer
}

func TestOfferToOnePeer(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	c := dial(t, base, "/r")
	b.expect("announce")
	a.expect("announce") // b's and c's, in either order: b's may be sent after c joined
	a.expect("announce")
	c.send(`{"type":"offer","peerId":"` + a.id + `","signal":"sdp"}`)
	if m := a.read(); m.raw != `{"type":"offer","peerId":"`+c.id+`","signal":"sdp"}` {
		t.Errorf("a got %s; want c's offer", m.raw)
	}
	b.quiet()
}

func TestAnswer(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	b.send(`{"type":"answer","peerId":"` + a.id + `","signal":` + sdp + `}`)
	a.expect("announce")
	want := `{"type":"answer","peerId":"` + b.id + `","signal":` + sdp + `}`
	if m := a.read(); m.raw != want {
		t.Errorf("got %s; want %s", m.raw, want)
	}
}

func TestCandidate(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	cand := `{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}`
	a.send(`{"type":"candidate","peerId":"` + b.id + `","signal":` + cand + `}`)
	want := `{"type":"candidate","peerId":"` + a.id + `","signal":` + cand + `}`
	if m := b.read(); m.raw != want {
		t.Errorf("got %s; want %s", m.raw, want)
	}
}

// TestSenderCannotBeForged: whatever a client writes, the relayed message
// names the real sender and carries only type, peerId and signal.
func TestSenderCannotBeForged(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	b.send(`{"type":"offer","peerId":"` + a.id + `","from":"X","id":"X","signal":1,"extra":{"peerId":"X"}}`)
	if m := a.read(); m.raw != `{"type":"offer","peerId":"`+b.id+`","signal":1}` {
		t.Errorf("a got %s; want only type, b's id and the signal", m.raw)
	}
}

func TestRemove(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	b.conn.Close()
	if m := a.expect("remove"); m.raw != `{"type":"remove","peerId":"`+b.id+`"}` {
		t.Errorf("a got %s; want remove of %s", m.raw, b.id)
	}
	a.send(`{"type":"candidate","peerId":"` + b.id + `","signal":{}}`)
	a.expect("error") // b is gone
}

func TestEmptyRoomLeavesNothing(t *testing.T) {
	events := make(recorder, 100)
	srv, base := setupTest(t, Options{}, events.events())
	for _, path := range []string{"/x", "/y", "/x"} {
		c := dial(t, base, path)
		c.conn.Close()
		events.next(t, "remove")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.rooms) != 0 || srv.count != 0 {
		t.Errorf("after everyone left: rooms = %v, count = %d; want none", srv.rooms, srv.count)
	}
}

func TestRoomsAreApart(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	paths := []string{"/a", "/a/", "/b", "/", "//a", "/a%2Fb"}
	clients := make([]*client, len(paths))
	for i, path := range paths {
		clients[i] = dial(t, base, path)
		if len(clients[i].peers) != 0 {
			t.Errorf("%q: peers = %v; want [] (a room of its own)", path, clients[i].peers)
		}
	}
	a, b := clients[0], clients[2]
	a.send(`{"type":"offer","signal":1}`)
	a.send(`{"type":"offer","peerId":"` + b.id + `","signal":1}`)
	if m := a.expect("error"); !strings.Contains(m.Error, b.id) {
		t.Errorf("error = %q; want it to name %s", m.Error, b.id)
	}
	for _, c := range clients {
		c.quiet()
	}
}

func TestQueryStringIsIgnored(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r?x=1")
	b := dial(t, base, "/r?y=2")
	if !slices.Equal(b.peers, []string{a.id}) {
		t.Errorf("peers = %v; want [%s]: the query string must not split a room", b.peers, a.id)
	}
}

func TestSimultaneousJoins(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	for i := range 20 {
		room := fmt.Sprintf("/race%d", i)
		var wg sync.WaitGroup
		var a, b *client
		wg.Go(func() { a = dial(t, base, room) })
		wg.Go(func() { b = dial(t, base, room) })
		wg.Wait()
		if t.Failed() {
			return
		}
		first, second := a, b
		if len(a.peers) == 1 {
			first, second = b, a
		}
		if len(first.peers) != 0 || !slices.Equal(second.peers, []string{first.id}) {
			t.Fatalf("peers lists %v and %v; want exactly one to name the other", a.peers, b.peers)
		}
		if m := first.expect("announce"); m.PeerID != second.id {
			t.Errorf("announce of %s; want %s", m.PeerID, second.id)
		}
		second.quiet()
	}
}

// TestBadInput sends each kind of bad message: each gets an error reply,
// nothing reaches anyone else, and the connection stays usable.
func TestBadInput(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	other := dial(t, base, "/elsewhere")
	a.expect("announce")
	tests := []struct{ name, text string }{
		{"not JSON", `{"type":"ping"`},
		{"empty", ``},
		{"invalid UTF-8 in a string", "{\"type\":\"offer\",\"signal\":\"\xff\"}"},
		{"invalid UTF-8 outside strings", "{\"type\":\"ping\"}\xff"},
		{"null", `null`},
		{"array", `[{"type":"ping"}]`},
		{"string", `"ping"`},
		{"number", `1`},
		{"no type", `{"signal":1}`},
		{"type not a string", `{"type":1}`},
		{"type null", `{"type":null}`},
		{"unknown type", `{"type":"hello"}`},
		{"server-only type announce", `{"type":"announce","peerId":"` + b.id + `"}`},
		{"server-only type pong", `{"type":"pong"}`},
		{"server-only type error", `{"type":"error","error":"x"}`},
		{"server-only type remove", `{"type":"remove","peerId":"` + b.id + `"}`},
		{"type in another case", `{"type":"PING"}`},
		{"key in another case", `{"Type":"ping"}`},
		{"offer without signal", `{"type":"offer"}`},
		{"offer with null signal", `{"type":"offer","signal":null}`},
		{"answer without signal", `{"type":"answer","peerId":"` + b.id + `"}`},
		{"candidate with null signal", `{"type":"candidate","peerId":"` + b.id + `","signal":null}`},
		{"answer without peerId", `{"type":"answer","signal":1}`},
		{"candidate without peerId", `{"type":"candidate","signal":1}`},
		{"peerId a number", `{"type":"offer","peerId":1,"signal":1}`},
		{"peerId null", `{"type":"offer","peerId":null,"signal":1}`},
		{"peerId empty", `{"type":"answer","peerId":"","signal":1}`},
		{"peerId unknown", `{"type":"answer","peerId":"NOSUCHPEER","signal":1}`},
		{"peerId in another room", `{"type":"offer","peerId":"` + other.id + `","signal":1}`},
		{"peerId the sender", `{"type":"candidate","peerId":"` + a.id + `","signal":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t, b.t, other.t = t, t, t
			a.send(tt.text)
			m := a.expect("error")
			if m.Error == "" || !utf8.ValidString(m.raw) {
				t.Errorf("error reply %q; want a reason in words", m.raw)
			}
			a.quiet()
			b.quiet()
			other.quiet()
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		a.t, b.t = t, t
		if err := websocket.Message.Send(a.conn, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		a.expect("error")
		a.quiet()
		b.quiet()
	})
	t.Run("fragmented frame", func(t *testing.T) {
		r := dialRaw(t, base+"/r", nil)
		r.readFrame()                                   // peers
		r.writeFrame(false, 0x1, []byte(`{"type":"pi`)) // text, not final
		r.writeFrame(true, 0x0, []byte(`ng"}`))         // continuation
		for i := range 2 {
			if op, data := r.readFrame(); op != 0x1 || !strings.Contains(string(data), `"type":"error"`) {
				t.Errorf("reply %d to a fragment = %d %s; want an error", i, op, data)
			}
		}
		r.writeFrame(true, 0x1, []byte(`{"type":"ping"}`))
		if _, data := r.readFrame(); string(data) != `{"type":"pong"}` {
			t.Errorf("after fragments: %s; want pong", data)
		}
	})
}

func TestOrigins(t *testing.T) {
	_, base := setupTest(t, Options{Origins: []string{"https://good.example"}}, Events{})
	for _, tt := range []struct {
		origin string
		want   int
	}{
		{"https://good.example", http.StatusSwitchingProtocols},
		{"https://evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"", http.StatusSwitchingProtocols}, // not a browser
	} {
		header := http.Header{}
		if tt.origin != "" {
			header.Set("Origin", tt.origin)
		}
		if got := dialRaw(t, base+"/", header).status; got != tt.want {
			t.Errorf("origin %q: status %d; want %d", tt.origin, got, tt.want)
		}
	}
}

func TestAnyOriginByDefault(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	for _, origin := range []string{"https://any.example", "null", ""} {
		header := http.Header{}
		if origin != "" {
			header.Set("Origin", origin)
		}
		if got := dialRaw(t, base+"/", header).status; got != http.StatusSwitchingProtocols {
			t.Errorf("origin %q: status %d; want 101", origin, got)
		}
	}
}

func TestPlainHTTPGets426(t *testing.T) {
	srv := New(Options{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/room")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "WebSocket") {
		t.Errorf("plain GET: %d %q; want 426 with a hint", resp.StatusCode, body)
	}
	srv.Close()
	resp, err = http.Get(ts.URL + "/room")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d; want 503", resp.StatusCode)
	}
}

func TestMaxPeers(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{MaxPeers: 2}, events.events())
	a := dial(t, base, "/a")
	dial(t, base, "/b")
	conn, err := websocket.Dial(base+"/a", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	var text string
	if err := websocket.Message.Receive(conn, &text); err != nil || text != `{"type":"error","error":"server full"}` {
		t.Errorf("third peer got %q, %v; want the server full error", text, err)
	}
	if err := websocket.Message.Receive(conn, &text); err != io.EOF {
		t.Errorf("after server full: %q, %v; want the connection closed", text, err)
	}
	a.quiet() // a was not told of it
	a.conn.Close()
	events.next(t, "remove")
	dial(t, base, "/c") // room again
}

func TestMaxMessageBytes(t *testing.T) {
	_, base := setupTest(t, Options{MaxMessageBytes: 1000}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	fits := `{"type":"offer","signal":"` + strings.Repeat("x", 1000-len(`{"type":"offer","signal":""}`)) + `"}`
	a.send(fits)
	b.expect("offer")
	a.send(`{"type":"offer","signal":"` + strings.Repeat("x", 1000) + `"}`)
	if m := a.expect("error"); !strings.Contains(m.Error, "1000") {
		t.Errorf("error %q; want it to say the limit", m.Error)
	}
	a.conn.SetReadDeadline(time.Now().Add(readTimeout))
	var text string
	if err := websocket.Message.Receive(a.conn, &text); err == nil {
		t.Errorf("after too large a frame: got %q; want the connection closed", text)
	}
	if m := b.expect("remove"); m.PeerID != a.id {
		t.Errorf("remove of %s; want %s", m.PeerID, a.id)
	}
}

func TestEventsOfOnePeer(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{}, events.events())
	a := dial(t, base, "/r")
	want := []string{"connection " + a.id + " /r", "peers " + a.id + " []", "announce " + a.id}
	for _, w := range want {
		if got := events.next(t, ""); got != w {
			t.Fatalf("event %q; want %q", got, w)
		}
	}
	a.send(`{"type":"ping"}`)
	a.expect("pong")
	if got, want := events.next(t, "message"), "message "+a.id+` {"type":"ping"}`; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	a.send(`not json`)
	a.expect("error")
	if got, want := events.next(t, "message"), "message "+a.id+" not json"; got != want {
		t.Errorf("event %q; want %q (bad messages included)", got, want)
	}
	a.conn.Close()
	if got, want := events.next(t, "remove", "error"), "remove "+a.id; got != want {
		t.Errorf("event %q; want %q and no error for a normal close", got, want)
	}
}

func TestEventOffer(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{}, events.events())
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.send(`{"type":"offer","signal":{"sdp":1}}`)
	if got, want := events.next(t, "offer"), "offer "+a.id+` {"sdp":1}`; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	a.send(`{"type":"offer","peerId":"` + b.id + `","signal":2}`)
	if got, want := events.next(t, "offer"), "offer "+a.id+" 2"; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
}

func TestEventAnswer(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{}, events.events())
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	b.send(`{"type":"answer","peerId":"` + a.id + `","signal":"sdp"}`)
	if got, want := events.next(t, "answer"), "answer "+a.id+" "+b.id+` "sdp"`; got != want {
		t.Errorf("event %q; want %q (to, from, signal)", got, want)
	}
}

func TestEventRemoveOnClose(t *testing.T) {
	events := make(recorder, 100)
	srv, base := setupTest(t, Options{}, events.events())
	a := dial(t, base, "/r")
	next := a.nextInBackground()
	srv.Close()
	if got, want := events.next(t, "remove", "error"), "remove "+a.id; got != want {
		t.Errorf("event %q; want %q and no error on Close", got, want)
	}
	if got := <-next; got != "EOF" {
		t.Errorf("after Close: %s; want a close frame (EOF)", got)
	}
}

// flood sends n offers of 60 KB from c to its room, in the background, and
// returns a channel for the error, or nil when all are sent.
func flood(c *client, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		c.conn.SetWriteDeadline(time.Now().Add(time.Minute)) // held up by flood control, if at all, for less
		for i := range n {
			if err := websocket.Message.Send(c.conn, `{"type":"offer","signal":`+bigSignal(i, 60<<10)+`}`); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// readFlood reads the offers of a flood from the peer from, n of them, in
// order, and returns the ids in the remove messages among them. It does not
// decode them: that would make it slower than a flood under -race.
func readFlood(reader *client, from string, n int) (removed []string, err error) {
	for got := 0; got < n; {
		reader.conn.SetReadDeadline(time.Now().Add(readTimeout))
		var text string
		if err := websocket.Message.Receive(reader.conn, &text); err != nil {
			return removed, fmt.Errorf("read: %v after %d offers", err, got)
		}
		if id, ok := strings.CutPrefix(text, `{"type":"remove","peerId":"`); ok {
			removed = append(removed, strings.TrimSuffix(id, `"}`))
			continue
		}
		if want := relayedOffer(from, bigSignal(got, 60<<10)); text != want {
			return removed, fmt.Errorf("got %d bytes %.60q; want offer %d whole", len(text), text, got)
		}
		got++
	}
	return removed, nil
}

// TestStalledPeerIsDropped: a peer that never reads, with the messages of
// several senders waiting for it, holds none of them up: it is dropped once it
// has too much waiting, not after the write timeout (10 s). Each sender
// reads the other's flood, and gets it all.
func TestStalledPeerIsDropped(t *testing.T) {
	events := make(recorder, 1000)
	_, base := setupLogged(t, Options{PingInterval: time.Hour}, events.events(), &connLog{writeBuffer: 16 << 10})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	stalled := dialPeer(t, base+"/r", 16<<10) // never reads again
	a.expect("announce")
	a.expect("announce")
	b.expect("announce")
	const n = 100 // from each sender: 6 MB, more than 64 frames of the largest size
	start := time.Now()
	floods := []<-chan error{flood(a, n), flood(b, n)}
	read := make(chan error, 1)
	var removedForB []string
	go func() {
		var err error
		removedForB, err = readFlood(b, a.id, n)
		read <- err
	}()
	removed, err := readFlood(a, b.id, n)
	for _, err := range []error{err, <-read, <-floods[0], <-floods[1]} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("the floods took %v; want the stalled peer to hold them up for less than half the write timeout", elapsed)
	}
	if got, want := events.next(t, "error"), "error "+stalled.id+" more than 64 frames of the largest size waiting"; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	if got, want := events.next(t, "remove"), "remove "+stalled.id; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	for _, c := range []*client{a, b} {
		if c == b {
			removed = removedForB
		}
		if len(removed) == 0 {
			removed = append(removed, c.expect("remove").PeerID)
		}
		if !slices.Equal(removed, []string{stalled.id}) {
			t.Errorf("told of the removal of %q; want the stalled peer %s", removed, stalled.id)
		}
		c.quiet()
	}
}

// TestStalledPeerHoldsUpItsOnlySender: a peer that never reads, with only
// one sender's flood waiting for it, holds that sender up (a flood costs its
// source) until a write to it has taken WriteTimeout; then it is dropped, and
// the flood goes on to the others.
func TestStalledPeerHoldsUpItsOnlySender(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	events := make(recorder, 1000)
	_, base := setupLogged(t, Options{PingInterval: time.Hour, WriteTimeout: writeTimeout},
		events.events(), &connLog{writeBuffer: 16 << 10})
	sender := dial(t, base, "/r")
	reader := dial(t, base, "/r")
	stalled := dialPeer(t, base+"/r", 16<<10) // never reads again
	sender.expect("announce")
	sender.expect("announce")
	reader.expect("announce")
	const n = 100
	start := time.Now()
	done := flood(sender, n)
	removed, err := readFlood(reader, sender.id, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("sender: %v", err)
	}
	sender.sync("remove")
	if elapsed := time.Since(start); elapsed < writeTimeout || elapsed > 10*writeTimeout {
		t.Errorf("the flood took %v; want it held up for the write timeout, %v, and not much more", elapsed, writeTimeout)
	}
	if e := events.next(t, "error"); !strings.HasPrefix(e, "error "+stalled.id+" send to "+stalled.id) || !strings.HasSuffix(e, "i/o timeout") {
		t.Errorf("event %q; want the stalled peer dropped for a write timeout", e)
	}
	if got, want := events.next(t, "remove"), "remove "+stalled.id; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	if len(removed) == 0 {
		removed = append(removed, reader.expect("remove").PeerID)
	}
	if !slices.Equal(removed, []string{stalled.id}) {
		t.Errorf("reader told of the removal of %q; want the stalled peer %s", removed, stalled.id)
	}
	reader.quiet()
}

// TestSlowReaderSlowsItsSender: a peer that reads, but more slowly than a
// flood comes, is not dropped: the sender is slowed instead, and the reader
// gets every message. (The reader reads 4 KB a millisecond: 4 MB/s.)
func TestSlowReaderSlowsItsSender(t *testing.T) {
	const size, n = 4000, 1500 // 6 MB, 64 frames of the largest size (4096) waiting drop the reader
	events := make(recorder, 100)
	_, base := setupTest(t, Options{MaxMessageBytes: 4096, PingInterval: time.Hour},
		Events{Error: events.events().Error, Remove: events.events().Remove})
	sender := dialPeer(t, base+"/r", 0)
	reader := dial(t, base, "/r")
	sender.readFrame() // announce
	var flood []byte   // made first: a flood as fast as the server reads, even under -race
	for i := range n {
		flood = append(flood, clientFrame(true, 0x1, []byte(offerTo(reader.id, bigSignal(i, size))))...)
	}
	done := make(chan error, 1)
	go func() {
		sender.conn.SetWriteDeadline(time.Now().Add(time.Minute))
		_, err := sender.conn.Write(flood)
		done <- err
	}()
	for i := range n {
		reader.conn.SetReadDeadline(time.Now().Add(readTimeout))
		var text string // not decoded, which takes long under the race detector
		err := websocket.Message.Receive(reader.conn, &text)
		if want := relayedOffer(sender.id, bigSignal(i, size)); err != nil || text != want {
			t.Fatalf("reader got %d bytes %.90q, %v; want offer %d whole", len(text), text, err, i)
		}
		time.Sleep(time.Millisecond) // a slow reader: the behaviour under test
	}
	if err := <-done; err != nil {
		t.Fatalf("sender: %v", err)
	}
	reader.quiet()
	for len(events) > 0 {
		if e := <-events; strings.HasPrefix(e, "error") || strings.HasPrefix(e, "remove") {
			t.Errorf("event %q; want the reader to stay", e)
		}
	}
}

// TestUnresponsivePeerIsDropped: a peer that never answers pings is dropped
// after two intervals of silence, within about three; a peer that reads (and
// so answers) stays. The margins are several intervals: the machine may be busy.
func TestUnresponsivePeerIsDropped(t *testing.T) {
	const interval = 100 * time.Millisecond
	events := make(recorder, 1000)
	_, base := setupTest(t, Options{PingInterval: interval}, events.events())
	good := dial(t, base, "/r")
	received := make(chan msg, 10)
	go func() { // reads, and so answers pings, until the test ends
		defer close(received)
		for {
			var text string
			if websocket.Message.Receive(good.conn, &text) != nil {
				return
			}
			var m msg
			json.Unmarshal([]byte(text), &m)
			received <- m
		}
	}()
	start := time.Now()
	silent := dialPeer(t, base+"/r", 0) // never reads again, never answers
	e := events.next(t, "error")
	elapsed := time.Since(start)
	if want := "error " + silent.id + " nothing received for two ping intervals"; e != want {
		t.Errorf("event %q; want %q", e, want)
	}
	if elapsed < 2*interval || elapsed > 10*interval {
		t.Errorf("dropped after %v; want after two intervals of silence, within about three (%v)", elapsed, 3*interval)
	}
	if got, want := events.next(t, "remove"), "remove "+silent.id; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	for m := range received {
		if m.Type == "remove" {
			break
		}
	}
	select {
	case e := <-events:
		if strings.HasPrefix(e, "error") || strings.HasPrefix(e, "remove") {
			t.Errorf("event %q; want the reading peer to stay", e)
		}
	case <-time.After(10 * interval): // ten intervals: five times the timeout
	}
}

// TestCloseEndsEverything: when Close returns, the connection of every peer
// is closed (seen under the server, by connLog), and no goroutine of the
// server is left: the read loops, the writers and the pinger have ended.
func TestCloseEndsEverything(t *testing.T) {
	quiesce(t)
	ln := &connLog{slowClose: 20 * time.Millisecond}
	srv, base := setupLogged(t, Options{PingInterval: 100 * time.Millisecond}, Events{}, ln) // pings on the way
	var clients []*client
	for i := range 10 {
		c := dial(t, base, fmt.Sprint("/", i%3))
		c.send(`{"type":"offer","signal":1}`)
		clients = append(clients, c)
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { // each reads promptly, as a client should, until the close frame
			defer c.conn.Close() // x/net's client answers the close frame as it closes
			for {
				c.conn.SetReadDeadline(time.Now().Add(readTimeout))
				var text string
				err := websocket.Message.Receive(c.conn, &text)
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Errorf("client: %v; want a close frame after whatever was on its way", err)
					return
				}
			}
		})
	}
	waitFor(t, "the handshakes' goroutines to end", func() bool { // as they do after start
		return len(goroutines(serverMethod+"ServeHTTP")) == 0
	})
	srv.Close()
	for i, c := range ln.upgraded() {
		if !c.isClosed() {
			t.Errorf("connection %d of %d open when Close returned; want all closed", i, len(ln.upgraded()))
		}
	}
	if left := goroutines(serverMethod); len(left) > 0 {
		t.Errorf("%d goroutines of the server when Close returned; want none:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	wg.Wait()
}

// serverMethod is how a goroutine's stack names a method of Server, less the
// method's name: "peero.(*Server)." when the module is peero.
var serverMethod = strings.TrimSuffix(runtime.FuncForPC(reflect.ValueOf((*Server).Close).Pointer()).Name(), "Close")

// goroutines returns the stacks of the goroutines with a function whose
// name contains fn, among those they run or that created them.
func goroutines(fn string) []string {
	buf := make([]byte, 1<<20)
	for runtime.Stack(buf, true) == len(buf) {
		buf = make([]byte, 2*len(buf))
	}
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			found = append(found, g)
		}
	}
	return found
}

// quiesce waits until no goroutine of any server is left from earlier tests,
// as those of refused joins, which read to their client's close frame after
// Close has returned, for at most a second.
func quiesce(t *testing.T) {
	t.Helper()
	waitFor(t, "the servers of earlier tests to end", func() bool {
		return len(goroutines(serverMethod)) == 0
	})
}

// waitFor polls done until it reports true, for what has no event to wait
// on, and fails the test if that takes longer than readTimeout.
func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", readTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	srv := New(Options{Addr: "127.0.0.1:0"}) // loopback only
	ports := make(chan string, 1)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(func(port string) { ports <- port }) }()
	var port string
	select {
	case port = <-ports:
	case err := <-ran:
		t.Fatalf("Run: %v", err)
	case <-time.After(readTimeout):
		t.Fatal("Run did not call ready")
	}
	a := dial(t, "ws://127.0.0.1:"+port, "/")
	next := a.nextInBackground()
	srv.Close()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run = %v; want nil after Close", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Run did not return after Close")
	}
	if got := <-next; got != "EOF" {
		t.Errorf("after Close: %s; want a close frame (EOF)", got)
	}
	if _, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		t.Error("still accepting connections after Close")
	}
}

// TestOrderUnderLoad: many peers relay to each other at once, and each
// receiver gets each sender's messages in the order they were sent.
func TestOrderUnderLoad(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	const peers, perTarget = 8, 100
	clients := make([]*client, peers)
	for i := range clients {
		clients[i] = dial(t, base, "/load")
	}
	for i, c := range clients {
		for range peers - 1 - i {
			c.expect("announce")
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, peers*2)
	for _, c := range clients {
		wg.Go(func() { // sender
			for n := range perTarget {
				for _, to := range clients {
					if to != c {
						text := fmt.Sprintf(`{"type":"offer","peerId":"%s","signal":%d}`, to.id, n)
						if err := websocket.Message.Send(c.conn, text); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		})
		wg.Go(func() { // receiver
			next := map[string]int{}
			for range perTarget * (peers - 1) {
				c.conn.SetReadDeadline(time.Now().Add(readTimeout))
				var m msg
				if err := websocket.JSON.Receive(c.conn, &m); err != nil {
					errs <- err
					return
				}
				if n, _ := json.Marshal(next[m.PeerID]); string(m.Signal) != string(n) {
					errs <- fmt.Errorf("from %s: signal %s; want %s", m.PeerID, m.Signal, n)
					return
				}
				next[m.PeerID]++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestIdlePeerIsOneGoroutine: once its messages are written, a peer costs the
// server one goroutine, its read loop; the server adds one pinger in all.
// Goroutines are told apart by their stacks, not counted against a baseline
// that goroutines of earlier tests, still ending, would disturb.
func TestIdlePeerIsOneGoroutine(t *testing.T) {
	quiesce(t)
	_, base := setupTest(t, Options{}, Events{})
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, base, "/idle")
	}
	for i, c := range clients {
		for range n - 1 - i {
			c.expect("announce")
		}
		c.quiet()
	}
	waitFor(t, fmt.Sprintf("%d goroutines for %d idle peers and the pinger", n+1, n), func() bool {
		all := goroutines(serverMethod)
		loops := goroutines(serverMethod + "serve(")
		pinger := goroutines(serverMethod + "ping(")
		return len(all) == n+1 && len(loops) == n && len(pinger) == 1 // writers end once done
	})
	for _, c := range clients {
		c.quiet() // all still served
	}
}

// TestClientPingAfterQuiet: a WebSocket ping from a client that has been quiet
// for longer than the write timeout gets its pong, and the peer stays.
func TestClientPingAfterQuiet(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{WriteTimeout: 50 * time.Millisecond}, events.events())
	r := dialRaw(t, base+"/r", nil)
	r.readFrame()                      // peers
	time.Sleep(150 * time.Millisecond) // quiet for three write timeouts: what the test is about
	r.writeFrame(true, 0x9, []byte("are you there"))
	if op, data := r.readFrame(); op != 0xA || string(data) != "are you there" {
		t.Fatalf("reply to a ping: opcode %#x %q; want a pong with the ping's data", op, data)
	}
	r.writeFrame(true, 0x1, []byte(`{"type":"ping"}`))
	if _, data := r.readFrame(); string(data) != `{"type":"pong"}` {
		t.Errorf("after the pong: %s; want the connection still usable", data)
	}
	for len(events) > 0 {
		if e := <-events; strings.HasPrefix(e, "error") || strings.HasPrefix(e, "remove") {
			t.Errorf("event %q; want the peer to stay", e)
		}
	}
}

// TestClientPingsWhileReceiving: a client that pings every few milliseconds,
// for longer than the write timeout, while relayed messages stream to it, gets
// every pong and every message.
func TestClientPingsWhileReceiving(t *testing.T) {
	_, base := setupTest(t, Options{WriteTimeout: 100 * time.Millisecond}, Events{})
	sender := dial(t, base, "/r")
	r := dialRaw(t, base+"/r", nil)
	_, data := r.readFrame()
	var peers msg
	json.Unmarshal(data, &peers)
	sender.expect("announce")
	const pings, offers = 15, 60
	errs := make(chan error, 2)
	go func() { // one ping every 20 ms: 300 ms in all
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := range pings {
			<-tick.C
			if _, err := r.conn.Write(clientFrame(true, 0x9, []byte(fmt.Sprint(i)))); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := range offers {
			<-tick.C
			text := fmt.Sprintf(`{"type":"offer","peerId":"%s","signal":%d}`, peers.ID, i)
			if err := websocket.Message.Send(sender.conn, text); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	gotPongs, gotOffers := 0, 0
	for gotPongs < pings || gotOffers < offers {
		switch op, data := r.readFrame(); op {
		case 0xA:
			if string(data) != fmt.Sprint(gotPongs) {
				t.Fatalf("pong %q; want %q", data, fmt.Sprint(gotPongs))
			}
			gotPongs++
		case 0x1:
			if want := fmt.Sprintf(`"signal":%d}`, gotOffers); !strings.HasSuffix(string(data), want) {
				t.Fatalf("got %s; want offer %d", data, gotOffers)
			}
			gotOffers++
		default:
			t.Fatalf("got opcode %#x %q after %d pongs and %d offers", op, data, gotPongs, gotOffers)
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestFramesStayWholeOverTLS: a pong never lands inside a message, even over
// TLS, where a batch of frames takes a write for each header and payload.
// Beyond what the client reads, a frame could be cut only by a write from
// another goroutine between two of the writer's: so every write after the
// handshake must come from the peer's writer (seen from its stack), and no
// two writes to a connection may be under way at once.
func TestFramesStayWholeOverTLS(t *testing.T) {
	outside := make(chan string, 1) // the stack of a write from another goroutine
	ln := &connLog{onWrite: func(_ *loggedConn, _ []byte) {
		stack := make([]byte, 8<<10)
		stack = stack[:runtime.Stack(stack, false)]
		if !strings.Contains(string(stack), serverMethod+"write(") {
			select {
			case outside <- string(stack):
			default:
			}
		}
	}}
	srv := New(Options{})
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS() // for its certificate; connLog goes between TLS and net/http below
	config := ts.TLS.Clone()
	ts.Close()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Listener = tls.NewListener(inner, config)
	hs := &http.Server{Handler: srv, ErrorLog: log.New(io.Discard, "", 0)}
	go hs.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	base := "wss://" + inner.Addr().String()
	sender := dialRaw(t, base+"/r", nil)
	sender.readFrame() // peers
	r := dialRaw(t, base+"/r", nil)
	_, data := r.readFrame()
	var peers msg
	json.Unmarshal(data, &peers)
	r.writeFrame(true, 0x9, []byte("first")) // a pong while nothing else is written
	if op, data := r.readFrame(); op != 0xA || string(data) != "first" {
		t.Fatalf("reply to a ping: opcode %#x %q; want its pong", op, data)
	}
	const offers = 1000
	errs := make(chan error, 2)
	go func() {
		for i := range offers {
			text := fmt.Sprintf(`{"type":"offer","peerId":"%s","signal":%d}`, peers.ID, i)
			if _, err := sender.conn.Write(clientFrame(true, 0x1, []byte(text))); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	stop := make(chan bool)
	go func() { // pings as fast as the connection takes them, while the offers stream in
		for i := 0; ; i++ {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			if _, err := r.conn.Write(clientFrame(true, 0x9, []byte("p"))); err != nil {
				errs <- err
				return
			}
		}
	}()
	for got := 0; got < offers; {
		switch op, data := r.readFrame(); {
		case op == 0xA && string(data) == "p":
		case op == 0x1 && strings.HasSuffix(string(data), fmt.Sprintf(`"signal":%d}`, got)):
			got++
		default:
			t.Fatalf("after %d offers: opcode %#x %q; want whole offers and pongs", got, op, data)
		}
	}
	close(stop)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case stack := <-outside:
		t.Errorf("a write after the handshake from outside the peer's writer:\n%s", stack)
	default:
	}
	for i, c := range ln.upgraded() {
		if c.overlap.Load() {
			t.Errorf("connection %d: two writes under way at once; want one at a time", i)
		}
	}
}

// TestFaultsAreReported: a peer that breaks the protocol is reported
// through Error, with the peer and the reason, then Remove; the room is told.
func TestFaultsAreReported(t *testing.T) {
	for _, tt := range []struct {
		name  string
		frame []byte
		err   string // the reason; the final message adds "; closing"
	}{
		{"frame too large", clientFrame(true, 0x1, []byte(strings.Repeat("x", 101))), "frame larger than 100 bytes"},
		{"reserved opcode", clientFrame(true, 0x3, []byte("{}")), "reserved WebSocket opcode"},
		{"unmasked frame", []byte{0x81, 2, '{', '}'}, "unmasked frame"},
		{"continuation of nothing", clientFrame(true, 0x0, []byte("{}")), "reserved WebSocket opcode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			events := make(recorder, 100)
			_, base := setupTest(t, Options{MaxMessageBytes: 100}, events.events())
			other := dial(t, base, "/r")
			r := dialPeer(t, base+"/r", 0)
			other.expect("announce")
			r.conn.Write(tt.frame)
			if _, data := r.readFrame(); string(data) != `{"type":"error","error":"`+tt.err+`; closing"}` {
				t.Errorf("got %s; want the error %q", data, tt.err+"; closing")
			}
			if op, _ := r.readFrame(); op != 0x8 {
				t.Errorf("opcode %#x; want a close frame", op)
			}
			if got, want := events.next(t, "error", "remove"), "error "+r.id+" "+tt.err; got != want {
				t.Errorf("event %q; want %q, before remove", got, want)
			}
			if got, want := events.next(t, "error", "remove"), "remove "+r.id; got != want {
				t.Errorf("event %q; want %q", got, want)
			}
			if m := other.expect("remove"); m.PeerID != r.id {
				t.Errorf("other told of the removal of %s; want %s", m.PeerID, r.id)
			}
		})
	}
}

// TestHandshakeLimits: what Run accepts of a WebSocket handshake.
func TestHandshakeLimits(t *testing.T) {
	srv := New(Options{Addr: "127.0.0.1:0"}) // loopback only
	ports := make(chan string, 1)
	go srv.Run(func(port string) { ports <- port })
	t.Cleanup(func() { srv.Close() })
	var base string
	select {
	case port := <-ports:
		base = "ws://127.0.0.1:" + port
	case <-time.After(readTimeout):
		t.Fatal("Run did not call ready")
	}
	header := func(k, v string) http.Header { return http.Header{k: {v}} }
	for _, tt := range []struct {
		name   string
		path   string
		header http.Header
		want   int
	}{
		{"10 KiB of headers", "/r", header("X-Big", strings.Repeat("x", 10<<10)), 101},
		{"20 KiB of headers", "/r", header("X-Big", strings.Repeat("x", 20<<10)), 431},
		{"a URI of 1024 bytes", "/" + strings.Repeat("r", 1023), nil, 101},
		{"a URI of 1025 bytes", "/" + strings.Repeat("r", 1024), nil, 414},
		{"a query that makes it 1025", "/r?" + strings.Repeat("q", 1022), nil, 414},
		{"one subprotocol", "/r", header("Sec-WebSocket-Protocol", "chat"), 101},
		{"two subprotocols", "/r", header("Sec-WebSocket-Protocol", "chat, superchat"), 101},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, base+tt.path, tt.header)
			if r.status != tt.want {
				t.Fatalf("status %d; want %d", r.status, tt.want)
			}
			if p := r.header.Get("Sec-WebSocket-Protocol"); p != "" {
				t.Errorf("subprotocol %q selected; want none", p)
			}
		})
	}
	// A proxy sends handshakes over connections it used before: net/http read ahead into
	// the second request while it waited for it, and let 17.5 KB of headers through.
	t.Run("17 KiB of headers after a refused request", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "ws://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(readTimeout))
		in := bufio.NewReader(conn)
		fmt.Fprint(conn, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n") // refused: no upgrade
		resp, err := http.ReadResponse(in, nil)
		if err != nil || resp.StatusCode != 426 {
			t.Fatalf("a request without an upgrade: %v, %v; want 426", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		fmt.Fprint(conn, "GET /r HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
			"X-Big: "+strings.Repeat("x", 17<<10)+"\r\n\r\n")
		if resp, err := http.ReadResponse(in, nil); err == nil && resp.StatusCode != 431 {
			t.Errorf("status %d on the same connection; want 431, or the connection closed",
				resp.StatusCode)
		}
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "ws://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET /r HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(readTimeout))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d; want 400: a WebSocket needs HTTP/1.1", resp.StatusCode)
		}
	})
}

// TestRequestIsNotKept: the server keeps nothing of the handshake's request
// for the life of the connection: peers whose requests had 16 KiB of headers
// hold no more memory than peers whose requests had none.
func TestRequestIsNotKept(t *testing.T) {
	quiesce(t) // what earlier tests' servers hold is freed while we measure
	_, base := setupTest(t, Options{}, Events{})
	const n = 50
	heap := func() int64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools held until the last
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	growth := func(room string, header http.Header) int64 {
		before := heap()
		for range n { // each kept open until the test ends
			dialRaw(t, base+room, header).readFrame()
		}
		return heap() - before
	}
	plain := growth("/plain", nil)
	big := growth("/big", http.Header{"X-Big": {strings.Repeat("x", 16<<10)}})
	if more := (big - plain) / n; more > 4<<10 {
		t.Errorf("a peer whose request had 16 KiB of headers holds %d bytes more than one with none; want the request not kept", more)
	}
}

func TestRoomFull(t *testing.T) {
	_, base := setupTest(t, Options{MaxRoomPeers: 2}, Events{})
	a := dial(t, base, "/r")
	dial(t, base, "/r")
	conn, err := websocket.Dial(base+"/r", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	var text string
	if err := websocket.Message.Receive(conn, &text); err != nil || text != `{"type":"error","error":"room full"}` {
		t.Errorf("third peer of the room got %q, %v; want the room full error", text, err)
	}
	if err := websocket.Message.Receive(conn, &text); err != io.EOF {
		t.Errorf("after room full: %q, %v; want the connection closed", text, err)
	}
	a.expect("announce")
	a.quiet() // not told of the third
	dial(t, base, "/other")
}

// TestQueuedBytesAreBoundedForAllPeers: what waits to be sent to all peers
// stays within Options.MaxQueuedBytes. Peers that never read, each with a
// different amount waiting, are dropped as a flood goes on, the one with the
// most waiting first; a peer that reads gets every message. What waits for a
// peer is measured: the frames the server was given for it (known here) less
// the bytes it wrote to the peer's connection (seen under it, by connLog).
func TestQueuedBytesAreBoundedForAllPeers(t *testing.T) {
	const bound, size, stalled = 3 << 20, 60 << 10, 5
	events := make(recorder, 1000)
	ln := &connLog{writeBuffer: 16 << 10}
	_, base := setupLogged(t, Options{MaxMessageBytes: largeFrames, MaxQueuedBytes: bound, PingInterval: time.Hour},
		Events{Error: events.events().Error}, ln)
	sender := dial(t, base, "/r")
	reader := dial(t, base, "/r")
	peers := make([]*rawConn, stalled)
	for i := range peers {
		peers[i] = dialPeer(t, base+"/r", 16<<10)
	}
	for i, p := range peers { // each reads the announces of those after it, then no more
		for range stalled - 1 - i {
			p.readFrame()
		}
	}
	for range stalled + 1 {
		sender.expect("announce")
	}
	for range stalled {
		reader.expect("announce")
	}
	given := map[*rawConn]int64{} // frame bytes the server was given for each stalled peer
	for _, p := range peers {
		given[p] = p.read
	}
	n := 0
	for i, p := range peers { // 3, 6, 9, 12 and 15 offers: 2.8 MB in all
		for range 3 * (i + 1) {
			signal := bigSignal(n, size)
			sender.send(offerTo(p.id, signal))
			given[p] += frameSize(len(relayedOffer(sender.id, signal)))
			n++
		}
	}
	sender.quiet()
	var dropped []*rawConn // in the order the Error hook reported them
	report := func(e string) {
		f := strings.Fields(e)
		i := slices.IndexFunc(peers, func(p *rawConn) bool { return p.id == f[1] })
		if i < 0 || slices.Contains(dropped, peers[i]) || !strings.Contains(e, "the most waiting") {
			t.Fatalf("event %q; want a stalled peer dropped once, for having the most waiting", e)
		}
		if want := peers[stalled-1-len(dropped)]; peers[i] != want {
			t.Errorf("dropped %s; want %s, the one with the most waiting of those left", f[1], want.id)
		}
		dropped = append(dropped, peers[i])
	}
	waiting := func() (total int64) {
		for _, p := range peers {
			if !slices.Contains(dropped, p) {
				total += given[p] - ln.of(p.conn).written.Load()
			}
		}
		return total
	}
	checkBound := func(when string) { // drops are reported soon after they happen: wait for them
		t.Helper()
		for {
			select {
			case e := <-events:
				report(e)
				continue
			default:
			}
			total := waiting()
			if total <= bound {
				return
			}
			select {
			case e := <-events:
				report(e)
			case <-time.After(readTimeout):
				t.Fatalf("%s: %d bytes waiting for the peers held; want at most %d", when, total, bound)
			}
		}
	}
	checkBound("before the flood")
	for i := range 10 { // to all the room: each offer adds 0.3 MB for the stalled peers
		signal := bigSignal(n+i, size)
		sender.send(`{"type":"offer","signal":` + signal + `}`)
		for _, p := range peers {
			given[p] += frameSize(len(relayedOffer(sender.id, signal)))
		}
		for m := reader.read(); m.Type != "offer"; m = reader.read() { // removes first
			if m.Type != "remove" {
				t.Fatalf("reader got %s; want offers and removes", m.raw)
			}
		}
		sender.sync("remove")
		checkBound(fmt.Sprintf("after offer %d to the room", i))
	}
	if len(dropped) < 2 {
		t.Errorf("%d stalled peers dropped; want several: 3 MB passed the bound", len(dropped))
	}
	t.Logf("%d bytes waiting at the end; %d of %d stalled peers dropped", waiting(), len(dropped), stalled)
	reader.sync("remove")
}

// TestOneEvictionForManySenders: senders that pass MaxQueuedBytes at once
// drop one peer, the one with the most waiting, when that makes room for all.
func TestOneEvictionForManySenders(t *testing.T) {
	const bound, size, senders = 1 << 20, 60 << 10, 8
	events := make(recorder, 100)
	srv, base := setupLogged(t, Options{MaxMessageBytes: largeFrames, MaxQueuedBytes: bound, PingInterval: time.Hour},
		Events{Error: events.events().Error}, &connLog{writeBuffer: 16 << 10})
	clients := make([]*client, senders)
	for i := range clients {
		clients[i] = dial(t, base, "/r")
	}
	most := dialPeer(t, base+"/r", 16<<10) // these three never read
	less := dialPeer(t, base+"/r", 16<<10)
	target := dialPeer(t, base+"/r", 16<<10)
	for i, c := range clients {
		for range senders - 1 - i + 3 {
			c.expect("announce")
		}
	}
	for i := range 15 { // 0.74 MB waiting for most, 0.18 for less
		to := most
		if i >= 12 {
			to = less
		}
		clients[0].send(offerTo(to.id, bigSignal(i, size)))
	}
	clients[0].quiet()
	if len(events) > 0 {
		t.Fatalf("event %q before the bound was passed", <-events)
	}
	start := make(chan bool)
	var wg sync.WaitGroup
	for i, c := range clients { // 0.5 MB more for target, at once: past the bound
		wg.Go(func() {
			<-start
			c.conn.SetWriteDeadline(time.Now().Add(readTimeout))
			websocket.Message.Send(c.conn, offerTo(target.id, bigSignal(100+i, size)))
		})
	}
	close(start)
	wg.Wait()
	for _, c := range clients {
		c.sync("remove")
	}
	srv.Close() // every Error hook has run when it returns
	var drops []string
	for len(events) > 0 {
		drops = append(drops, <-events)
	}
	if want := "error " + most.id + " the most waiting, past the bound for all"; !slices.Equal(drops, []string{want}) {
		t.Errorf("Error events %q; want one: %q", drops, want)
	}
}

// TestEvictionsMakeRoomForTheMessage: a message that would pass
// MaxQueuedBytes drops peers, those with the most waiting first, until it
// fits: as many as that takes, and no more.
func TestEvictionsMakeRoomForTheMessage(t *testing.T) {
	const bound, size, stalled = 1300 << 10, 100 << 10, 6
	events := make(recorder, 100)
	ln := &connLog{writeBuffer: 16 << 10}
	srv, base := setupLogged(t, Options{MaxMessageBytes: largeFrames, MaxQueuedBytes: bound,
		PingInterval: time.Hour}, Events{Error: events.events().Error}, ln)
	sender := dial(t, base, "/r")
	peers := make([]*rawConn, stalled+1) // the last is the target of the large message
	for i := range peers {
		peers[i] = dialPeer(t, base+"/r", 16<<10)
	}
	for i, p := range peers { // each reads the announces of those after it, then no more
		for range len(peers) - 1 - i {
			p.readFrame()
		}
		sender.expect("announce")
	}
	target := peers[stalled]
	given := map[*rawConn]int64{}
	for _, p := range peers {
		given[p] = p.read
	}
	for i, p := range peers[:stalled] { // 200 KB waiting for each: 1.2 MB in all
		for j := range 2 {
			signal := bigSignal(2*i+j, size)
			sender.send(offerTo(p.id, signal))
			given[p] += frameSize(len(relayedOffer(sender.id, signal)))
		}
	}
	sender.quiet()
	if len(events) > 0 {
		t.Fatalf("event %q before the bound was passed", <-events)
	}
	var waiting []int64
	var total int64
	for _, p := range peers {
		w := given[p] - ln.of(p.conn).written.Load()
		waiting = append(waiting, w)
		total += w
	}
	signal := bigSignal(-1, 1000<<10)
	large := frameSize(len(relayedOffer(sender.id, signal)))
	slices.Sort(waiting)
	need := 0 // peers to drop, those with the most waiting first, for the message to fit
	for total+large > bound {
		total -= waiting[len(waiting)-1-need]
		need++
	}
	sender.send(offerTo(target.id, signal))
	sender.sync("remove")
	var dropped []string
	deadline := time.After(readTimeout)
	for len(dropped) < need { // drops are reported soon after they happen
		select {
		case e := <-events:
			dropped = append(dropped, e)
		case <-deadline:
			t.Fatalf("%d peers dropped: %q; want %d to make room for %d bytes", len(dropped), dropped, need, large)
		}
	}
	var held int64
	for _, p := range peers {
		if !slices.ContainsFunc(dropped, func(e string) bool { return strings.Fields(e)[1] == p.id }) {
			held += given[p] - ln.of(p.conn).written.Load()
		}
	}
	if held > bound {
		t.Errorf("%d bytes waiting for the peers held; want at most %d", held, bound)
	}
	srv.Close() // every Error hook has run when it returns; Close drops nobody for a fault
	for len(events) > 0 {
		dropped = append(dropped, <-events)
	}
	if len(dropped) != need {
		t.Errorf("%d peers dropped: %q; want %d, the fewest that make room for %d bytes", len(dropped), dropped, need, large)
	}
}

// TestTURNCredential checks the TURN REST API password against a vector
// made with openssl dgst -sha1 -hmac north-wind | base64.
func TestTURNCredential(t *testing.T) {
	if got, want := turnCredential("north-wind", "1700000000:PEER"), "P4YnTinj3xJJB7eLeYteR8AI6u0="; got != want {
		t.Errorf("credential %q; want %q", got, want)
	}
}

// TestICEServers: with TURN configured, every peers message carries a
// credential for the receiver that expires after TURNTTL, made anew for each.
func TestICEServers(t *testing.T) {
	urls := []string{"turn:127.0.0.1:3478?transport=udp", "turns:turn.example:5349?transport=tcp"}
	_, base := setupTest(t, Options{TURN: urls, TURNSecret: "s3cret", TURNTTL: time.Hour}, Events{})
	conn, err := websocket.Dial(base+"/r", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func() int64 {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(readTimeout))
		var m struct {
			Type, ID   string
			ICEServers []struct {
				URLs                 []string
				Username, Credential string
			} `json:"iceServers"`
		}
		if err := websocket.JSON.Receive(conn, &m); err != nil || m.Type != "peers" || len(m.ICEServers) != 1 {
			t.Fatalf("got %+v, %v; want peers with one ICE server", m, err)
		}
		ice := m.ICEServers[0]
		expiry, id, _ := strings.Cut(ice.Username, ":")
		exp, _ := strconv.ParseInt(expiry, 10, 64)
		if want := time.Now().Add(time.Hour).Unix(); id != m.ID || exp < want-2 || exp > want {
			t.Errorf("username %q; want %d:%s", ice.Username, want, m.ID)
		}
		if !slices.Equal(ice.URLs, urls) || ice.Credential != turnCredential("s3cret", ice.Username) {
			t.Errorf("ICE server %+v; want urls %q and the credential of the username", ice, urls)
		}
		return exp
	}
	first := check()
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // the next second
	websocket.Message.Send(conn, `{"type":"peers"}`)
	if again := check(); again <= first {
		t.Errorf("expiry %d on a peers request; want later than the first, %d", again, first)
	}
}

// TestTURNFlagsGoTogether: main refuses -turn without the secret, and the
// secret without -turn.
func TestTURNFlagsGoTogether(t *testing.T) {
	for _, tt := range []struct{ args, env []string }{
		{[]string{"-turn", "turn:127.0.0.1:3478"}, nil},
		{nil, []string{"PEERO_TURN_SECRET=s3cret"}},
	} {
		cmd := command(t, append(tt.args, "-addr", "127.0.0.1:0")...)
		cmd.Env = append(cmd.Env, tt.env...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "PEERO_TURN_SECRET") {
			t.Errorf("%q with %q: exit %d, %v, %q; want 2 and a message", tt.args, tt.env, code, err, out)
		}
	}
}

// TestAddr: Options.Addr wins over Port, and binds only the address given:
// other addresses of this machine are refused, 127.0.0.2 (all of 127/8 is
// loopback on Linux) and [::1], each where the machine has it.
func TestAddr(t *testing.T) {
	srv := New(Options{Addr: "127.0.0.1:0", Port: "1"})
	ports := make(chan string, 1)
	go srv.Run(func(port string) { ports <- port })
	t.Cleanup(func() { srv.Close() })
	var port string
	select {
	case port = <-ports:
	case <-time.After(readTimeout):
		t.Fatal("Run did not call ready")
	}
	dial(t, "ws://127.0.0.1:"+port, "/").quiet()
	checked := 0
	for _, host := range []string{"127.0.0.2", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Logf("not checked on %s, which this machine does not have: %v", host, err)
			continue
		}
		ln.Close()
		checked++
		if conn, err := net.Dial("tcp", net.JoinHostPort(host, port)); err == nil {
			conn.Close()
			t.Errorf("listening on %s port %s too; want only 127.0.0.1", host, port)
		}
	}
	if checked == 0 {
		t.Skip("no other local address to check that only 127.0.0.1 is bound")
	}
}

// FuzzParse checks parse against referenceParse, a second decoder of the
// same input, on which messages are accepted and with what type, peerId and
// signal; and that a relayed message is a JSON object of exactly type,
// peerId and the signal, byte for byte. The seeds, in testdata/fuzz/FuzzParse,
// are messages that must be accepted (accept-*) or refused (refuse-*), as
// TestParseCorpus checks.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		typ, peerID, signal, err := parse(binary, data)
		refTyp, refPeerID, refSignal, ok := referenceParse(binary, data)
		if (err == nil) != ok {
			t.Fatalf("parse(%t, %q): %v; the reference accepts it: %t", binary, data, err, ok)
		}
		if !ok {
			return
		}
		if typ != refTyp || peerID != refPeerID {
			t.Fatalf("parse(%q) = type %q, peerId %q; the reference reads type %q, peerId %q", data, typ, peerID, refTyp, refPeerID)
		}
		if typ == "ping" || typ == "peers" {
			return
		}
		var decoded any
		dec := json.NewDecoder(bytes.NewReader(signal))
		dec.UseNumber()
		if err := dec.Decode(&decoded); err != nil || !reflect.DeepEqual(decoded, refSignal) || !bytes.Contains(data, signal) {
			t.Fatalf("parse(%q): signal %q, %v; want the signal as sent, %v", data, signal, err, refSignal)
		}
		out := relayed(typ, "SENDER", signal)
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(out, &fields); err != nil {
			t.Fatalf("relayed %q is not a JSON object: %v", out, err)
		}
		if len(fields) != 3 || string(fields["type"]) != `"`+typ+`"` || string(fields["peerId"]) != `"SENDER"` || !bytes.Equal(fields["signal"], signal) {
			t.Fatalf("relayed %q from %q; want type, peerId and the signal unchanged", out, data)
		}
	})
}

// referenceParse decides as protocol.md says, decoding into interface values
// with a json.Decoder, not into raw values as parse does: whether a message
// is accepted, and then its type, peerId and signal (decoded).
func referenceParse(binary bool, data []byte) (typ, peerID string, signal any, ok bool) {
	if binary || !utf8.Valid(data) {
		return "", "", nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // any number is a signal, even one a float64 cannot hold
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", "", nil, false
	}
	if _, err := dec.Token(); err != io.EOF { // one JSON value, and only space after it
		return "", "", nil, false
	}
	object, _ := v.(map[string]any)
	typ, _ = object["type"].(string)
	switch typ {
	case "ping", "peers":
		return typ, "", nil, true
	case "offer", "answer", "candidate":
	default:
		return "", "", nil, false
	}
	signal = object["signal"]
	if signal == nil { // absent or null
		return "", "", nil, false
	}
	id, named := object["peerId"]
	peerID, _ = id.(string)
	if named && peerID == "" || !named && typ != "offer" {
		return "", "", nil, false
	}
	return typ, peerID, signal, true
}

// TestParseCorpus checks the saved seeds of FuzzParse: the files named
// accept-* hold messages parse must accept, those named refuse-* messages
// it must refuse.
func TestParseCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzParse/*")
	if err != nil || len(files) < 20 {
		t.Fatalf("%d seeds, %v; want the saved corpus", len(files), err)
	}
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(text)), "\n")
		if len(lines) != 3 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: %q; want a fuzz seed of []byte and bool", file, text)
		}
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %q: %v", file, lines[1], err)
		}
		_, _, _, err = parse(lines[2] == "bool(true)", []byte(data))
		switch name := filepath.Base(file); {
		case strings.HasPrefix(name, "accept-") && err != nil:
			t.Errorf("%s: parse(%q) = %v; want it accepted", name, data, err)
		case strings.HasPrefix(name, "refuse-") && err == nil:
			t.Errorf("%s: parse(%q) accepted it; want it refused", name, data)
		case !strings.HasPrefix(name, "accept-") && !strings.HasPrefix(name, "refuse-"):
			t.Errorf("%s: a seed named neither accept-* nor refuse-*", name)
		}
	}
}

// FuzzReadFrame checks readFrame against referenceFrame, which decodes the
// same bytes by indexing them as RFC 6455's figure lays a frame out: the same
// frames accepted, with the same opcode, payload and length read, and the
// same frames refused, with the same close status and reason.
func FuzzReadFrame(f *testing.F) {
	for _, seed := range [][]byte{
		clientFrame(true, 0x1, []byte(`{"type":"ping"}`)), clientFrame(false, 0x2, []byte("ab")),
		clientFrame(true, 0x0, nil), clientFrame(true, 0x9, []byte("ping")), clientFrame(true, 0x8, []byte{3, 0xe8}),
		clientFrame(true, 0xA, make([]byte, 125)), clientFrame(true, 0x9, make([]byte, 126)),
		clientFrame(false, 0x9, nil), clientFrame(true, 0x3, nil), clientFrame(true, 0xB, nil),
		clientFrame(true, 0x1, make([]byte, 300)), clientFrame(true, 0x1, make([]byte, 70000)),
		{0x81, 0x02, '{', '}'}, {0xC1, 0x80, 1, 2, 3, 4}, {0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0},
		{0x81, 0xFE, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}, {0x81}, {},
		append(clientFrame(true, 0x1, []byte("x")), clientFrame(true, 0x1, []byte("y"))...),
	} {
		f.Add(seed, uint16(1000))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		in := bytes.NewReader(data)
		r := bufio.NewReader(in)
		fin, op, payload, err := readFrame(r, int(limit))
		read := len(data) - in.Len() - r.Buffered()
		want := referenceFrame(data, int(limit))
		var refused *closeError
		switch {
		case want.short:
			if err == nil || errors.As(err, &refused) {
				t.Fatalf("readFrame(% x): %v; want the end of the input (it ends inside the frame)", data, err)
			}
		case want.code != 0:
			if !errors.As(err, &refused) || refused.code != want.code || refused.text != want.reason {
				t.Fatalf("readFrame(% x, %d): %v; want it refused: %d %s", data, limit, err, want.code, want.reason)
			}
		case err != nil || fin != want.fin || op != want.op || !bytes.Equal(payload, want.payload) || read != want.size:
			t.Fatalf("readFrame(% x, %d) = %t %#x %q, %v, %d bytes read; want %t %#x %q, %d bytes",
				data, limit, fin, op, payload, err, read, want.fin, want.op, want.payload, want.size)
		}
	})
}

// refFrame is what referenceFrame finds at the start of some bytes.
type refFrame struct {
	short   bool   // the bytes end inside the frame
	code    int    // the close status of a frame refused; 0 if accepted
	reason  string // why it is refused
	fin     bool
	op      byte
	payload []byte // unmasked
	size    int    // of the frame, header and all
}

// referenceFrame decodes the frame data begins with, by RFC 6455 (section
// 5.2 and 5.5): a frame of more than limit bytes of payload is refused
// (1009) as soon as its length is known; one that is whole but unmasked,
// with reserved bits set, with a reserved opcode, or a control frame
// fragmented or longer than 125 bytes, is refused as a protocol error (1002).
func referenceFrame(data []byte, limit int) refFrame {
	if len(data) < 2 {
		return refFrame{short: true}
	}
	header, length := 2, uint64(data[1]&0x7f)
	switch length {
	case 126:
		header = 4
	case 127:
		header = 10
	}
	if len(data) < header {
		return refFrame{short: true}
	}
	switch header {
	case 4:
		length = uint64(data[2])<<8 | uint64(data[3])
	case 10:
		length = 0
		for _, b := range data[2:10] {
			length = length<<8 | uint64(b)
		}
	}
	if length > uint64(limit) {
		return refFrame{code: 1009, reason: fmt.Sprintf("frame larger than %d bytes", limit)}
	}
	masked := data[1]&0x80 != 0
	if masked {
		header += 4
	}
	if len(data) < header || uint64(len(data)-header) < length {
		return refFrame{short: true}
	}
	fin, rsv, op := data[0]&0x80 != 0, data[0]&0x70, data[0]&0x0f
	switch {
	case !masked:
		return refFrame{code: 1002, reason: "unmasked frame"}
	case rsv != 0:
		return refFrame{code: 1002, reason: "reserved bits set, with no extension"}
	case 3 <= op && op <= 7 || 0xB <= op:
		return refFrame{code: 1002, reason: "reserved WebSocket opcode"}
	case op >= 8 && (!fin || length > 125):
		return refFrame{code: 1002, reason: "control frame fragmented or too long"}
	}
	key := data[header-4 : header]
	payload := make([]byte, length)
	for i := range payload {
		payload[i] = data[header+i] ^ key[i%4]
	}
	return refFrame{fin: fin, op: op, payload: payload, size: header + int(length)}
}

// rawConn is a hand-made WebSocket client, for what x/net's client cannot
// do: leave out the Origin header, send fragments, or never read.
type rawConn struct {
	t      *testing.T
	conn   net.Conn
	r      *bufio.Reader
	status int
	header http.Header // of the response
	id     string      // from the first peers message, if read with dialPeer
	resume string      // and its resume token
	read   int64       // bytes of the frames read
}

// dialRaw does a WebSocket handshake with header added and returns the
// connection with the response status; it is closed when the test ends.
func dialRaw(t *testing.T, url string, header http.Header) *rawConn {
	t.Helper()
	return dialRawBuffer(t, url, header, 0)
}

// dialRawBuffer is dialRaw with the socket's receive buffer set to
// readBuffer if not 0: a client that does not read then holds little.
func dialRawBuffer(t *testing.T, url string, header http.Header, readBuffer int) *rawConn {
	t.Helper()
	return dialRawEarly(t, url, header, readBuffer, nil)
}

// dialRawEarly is dialRawBuffer that sends early, frames, right behind the
// request, in the same write.
func dialRawEarly(t *testing.T, url string, header http.Header, readBuffer int, early []byte) *rawConn {
	t.Helper()
	scheme, u, _ := strings.Cut(url, "://")
	host, path, _ := strings.Cut(u, "/")
	conn, err := net.Dial("tcp", host)
	if scheme == "wss" { // to an httptest TLS server
		conn, err = tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tcp, ok := conn.(*net.TCPConn); ok && readBuffer > 0 {
		tcp.SetReadBuffer(readBuffer)
	}
	req, _ := http.NewRequest("GET", "http://"+host+"/"+path, nil)
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	var head bytes.Buffer
	req.Write(&head)
	if _, err := conn.Write(append(head.Bytes(), early...)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, conn: conn, r: r, status: resp.StatusCode, header: resp.Header}
}

// dialPeer is dialRawBuffer that also reads the first message, which must be
// peers, and keeps the id it gives.
func dialPeer(t *testing.T, url string, readBuffer int) *rawConn {
	t.Helper()
	c := dialRawBuffer(t, url, nil, readBuffer)
	op, data := c.readFrame()
	var m msg
	if json.Unmarshal(data, &m); op != 0x1 || m.Type != "peers" || m.ID == "" {
		t.Fatalf("first frame: opcode %#x %s; want a peers message", op, data)
	}
	c.id, c.resume = m.ID, m.Resume
	return c
}

// writeFrame writes one masked client frame.
func (c *rawConn) writeFrame(fin bool, opcode byte, payload []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(clientFrame(fin, opcode, payload)); err != nil {
		c.t.Fatal(err)
	}
}

// clientFrame is a masked client frame.
func clientFrame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	frame := []byte{b0, 0x80 | byte(len(payload))}
	switch n := len(payload); {
	case n >= 1<<16:
		frame = binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, uint64(n))
	case n >= 126:
		frame = binary.BigEndian.AppendUint16([]byte{b0, 0x80 | 126}, uint16(n))
	}
	var key [4]byte
	rand.Read(key[:])
	frame = append(frame, key[:]...)
	for i, b := range payload {
		frame = append(frame, b^key[i%4])
	}
	return frame
}

// readFrame reads one server frame (unmasked, unfragmented).
func (c *rawConn) readFrame() (opcode byte, payload []byte) {
	c.t.Helper()
	opcode, payload, err := c.next()
	if err != nil {
		c.t.Fatal(err)
	}
	return opcode, payload
}

// next reads one server frame, or returns the error: io.EOF if the
// connection ended between frames, io.ErrUnexpectedEOF inside one.
func (c *rawConn) next() (opcode byte, payload []byte, err error) {
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	var h [2]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	if n >= 126 {
		var l [8]byte
		size := 8
		if n == 126 {
			size = 2
		}
		if _, err := io.ReadFull(c.r, l[8-size:]); err != nil {
			return 0, nil, io.ErrUnexpectedEOF
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 || n > 64<<20 {
		return 0, nil, fmt.Errorf("not a server frame: % x, length %d", h, n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	c.read += frameSize(len(payload))
	return h[0] & 0x0f, payload, nil
}

// frameSize is the size of a server frame with n bytes of payload.
func frameSize(n int) int64 {
	switch {
	case n >= 1<<16:
		return int64(10 + n)
	case n >= 126:
		return int64(4 + n)
	}
	return int64(2 + n)
}

// expectClose reads the next frame, which must be a close frame with status
// code; then it answers with a close frame, as a client does, and checks
// that nothing follows: the server closes the connection.
func (c *rawConn) expectClose(code int) {
	c.t.Helper()
	c.expectCloseThen(code, io.EOF)
}

// expectCloseThen is expectClose with end, the error that must follow the
// close frame: io.EOF, or syscall.ECONNRESET where the server may reset.
func (c *rawConn) expectCloseThen(code int, end error) {
	c.t.Helper()
	op, payload, err := c.next()
	if err != nil || op != 0x8 || len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) != code {
		c.t.Fatalf("got opcode %#x %q, %v; want a close frame with status %d", op, payload, err, code)
	}
	if _, err := c.conn.Write(clientFrame(true, 0x8, payload[:2])); err != nil && !errors.Is(err, end) {
		c.t.Errorf("answering the close frame: %v; want the server to read it", err) // a reset
		return
	}
	if op, payload, err := c.next(); err != io.EOF && !errors.Is(err, end) {
		c.t.Errorf("after the close frame: opcode %#x %q, %v; want the connection closed (%v)", op, payload, err, end)
	}
}

// benchSignal is a 1 KB signal, the size of a typical SDP offer.
var benchSignal = `{"type":"offer","sdp":"` + strings.Repeat("x", 1000) + `"}`

// BenchmarkRelay measures one targeted offer from a peer to another through
// the server, client work included.
func BenchmarkRelay(b *testing.B) {
	srv := New(Options{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	base := "ws" + strings.TrimPrefix(ts.URL, "http")
	from, to := dial(b, base, "/bench"), dial(b, base, "/bench")
	from.read() // announce
	offer := `{"type":"offer","peerId":"` + to.id + `","signal":` + benchSignal + `}`
	b.SetBytes(int64(len(offer)))
	b.ReportAllocs()
	var got string
	for b.Loop() {
		websocket.Message.Send(from.conn, offer)
		if err := websocket.Message.Receive(to.conn, &got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBroadcast100 measures one offer to a room of 100 other peers,
// until all of them have it.
func BenchmarkBroadcast100(b *testing.B) {
	srv := New(Options{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	base := "ws" + strings.TrimPrefix(ts.URL, "http")
	sender := dial(b, base, "/bench")
	arrived := make(chan struct{}, 100)
	for range 100 {
		c := dial(b, base, "/bench")
		go func() { // ends when the server closes the connection
			for {
				var m string
				if websocket.Message.Receive(c.conn, &m) != nil {
					return
				}
				if strings.HasPrefix(m, `{"type":"offer"`) {
					arrived <- struct{}{}
				}
			}
		}()
	}
	for range 100 {
		sender.read() // announces
	}
	offer := `{"type":"offer","signal":` + benchSignal + `}`
	b.ReportAllocs()
	for b.Loop() {
		websocket.Message.Send(sender.conn, offer)
		for range 100 {
			<-arrived
		}
	}
}

// TestCopyIntoAProgram follows the README's steps for using main.go from Go:
// copy it into a module as package peero, delete func main and the imports
// only it used, and build the README's program with it (go vet included).
func TestCopyIntoAProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program with the go command")
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "main.go", nil, 0) // comments dropped with func main's
	if err != nil {
		t.Fatal(err)
	}
	f.Name.Name = "peero"
	f.Decls = slices.DeleteFunc(f.Decls, func(d ast.Decl) bool {
		fn, ok := d.(*ast.FuncDecl)
		return ok && fn.Name.Name == "main"
	})
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if x, ok := sel.X.(*ast.Ident); ok {
				used[x.Name] = true
			}
		}
		return true
	})
	var deleted []string
	imports := f.Decls[0].(*ast.GenDecl)
	imports.Specs = slices.DeleteFunc(imports.Specs, func(s ast.Spec) bool {
		p, _ := strconv.Unquote(s.(*ast.ImportSpec).Path.Value)
		if used[path.Base(p)] {
			return false
		}
		deleted = append(deleted, p)
		return true
	})
	if want := []string{"flag", "log/slog", "os", "os/signal", "syscall"}; !slices.Equal(deleted, want) {
		t.Errorf("imports only func main used: %q; want %q, as the README says", deleted, want)
	}
	var lib bytes.Buffer
	if err := format.Node(&lib, fset, f); err != nil {
		t.Fatal(err)
	}

	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Using it from Go")
	_, program, _ := strings.Cut(section, "```go\n")
	program, _, _ = strings.Cut(program, "```")
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	gosum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"go.mod":         bytes.Replace(gomod, []byte("module peero"), []byte("module example.com/app"), 1),
		"go.sum":         gosum,
		"main.go":        []byte(program),
		"peero/peero.go": lib.Bytes(),
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"build", "./..."}, {"vet", "./..."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go %s in the copy: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// bigSignal is a signal of about size bytes, a JSON string that begins with
// n, so that a reader can tell the messages apart.
func bigSignal(n, size int) string {
	return fmt.Sprintf(`"%d%s"`, n, strings.Repeat("x", size))
}

// offerTo is an offer of signal for the peer id.
func offerTo(id, signal string) string {
	return `{"type":"offer","peerId":"` + id + `","signal":` + signal + `}`
}

// A peer that does not read holds up a sender whose messages are all that
// waits for it once more than 4 frames of the largest size wait (the flood
// control). Tests that need megabytes to wait for such a peer, without being
// held up, set MaxMessageBytes to 1 MiB.
const largeFrames = 1 << 20

// relayedOffer is an offer of signal as the server relays it from the peer from.
func relayedOffer(from, signal string) string {
	return `{"type":"offer","peerId":"` + from + `","signal":` + signal + `}`
}

// TestCloseFrameComesLast: a peer with a backlog being written when the
// server closes it, on Close or for a protocol fault of its own, gets every
// frame whole, then the close frame, then nothing.
func TestCloseFrameComesLast(t *testing.T) {
	for _, tt := range []struct {
		name  string
		end   func(*Server, *rawConn)
		final string // the message before the close frame, if any
		code  int
	}{
		{"on Close", func(srv *Server, _ *rawConn) { go srv.Close() }, "", 1001},
		{"on a protocol fault", func(_ *Server, r *rawConn) { r.writeFrame(true, 0x3, nil) },
			`{"type":"error","error":"reserved WebSocket opcode; closing"}`, 1002},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, base := setupLogged(t, Options{MaxMessageBytes: largeFrames, PingInterval: time.Hour},
				Events{}, &connLog{writeBuffer: 16 << 10})
			sender := dial(t, base, "/r")
			r := dialPeer(t, base+"/r", 0) // not a smaller buffer: r reads 1.8 MB within 1 s below
			sender.expect("announce")
			const n, size = 30, 60 << 10 // 1.8 MB: more than the socket buffers hold
			for i := range n {
				sender.send(offerTo(r.id, bigSignal(i, size)))
			}
			sender.quiet() // all relayed: what r has not read waits in the server
			tt.end(srv, r)
			for i := range n {
				want := relayedOffer(sender.id, bigSignal(i, size))
				op, data, err := r.next()
				if err != nil || op != 0x1 || string(data) != want {
					t.Fatalf("frame %d: opcode %#x, %d bytes %.40q, %v; want offer %d whole", i, op, len(data), data, err, i)
				}
			}
			if tt.final != "" {
				if op, data, err := r.next(); err != nil || op != 0x1 || string(data) != tt.final {
					t.Fatalf("after the offers: opcode %#x %.80q, %v; want %s", op, data, err, tt.final)
				}
			}
			r.expectClose(tt.code)
		})
	}
}

// TestCloseIsPromptWithAStalledPeer: a peer that never reads, with a backlog
// the server cannot write, holds Close up for the close timeout (1 s), not a
// write timeout (10 s), even while it keeps pinging: each of its pings asks
// for a pong that cannot be written either.
func TestCloseIsPromptWithAStalledPeer(t *testing.T) {
	srv, base := setupLogged(t, Options{MaxMessageBytes: largeFrames, PingInterval: time.Hour},
		Events{}, &connLog{writeBuffer: 16 << 10})
	sender := dial(t, base, "/r")
	r := dialPeer(t, base+"/r", 16<<10)
	sender.expect("announce")
	for i := range 20 {
		sender.send(offerTo(r.id, bigSignal(i, 60<<10)))
	}
	sender.quiet()
	stop, stopped := make(chan bool), make(chan bool)
	var pings []byte // many at once: the server reads them at once, and answers one by one
	for range 100 {
		pings = append(pings, clientFrame(true, 0x9, []byte("p"))...)
	}
	go func() { // pings every millisecond until the server closes or the test ends
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r.conn.SetWriteDeadline(time.Now().Add(readTimeout))
			if _, err := r.conn.Write(pings); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-stopped }()
	time.Sleep(50 * time.Millisecond) // pings piling up unanswered: the situation under test
	closed := make(chan bool)
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Errorf("Close has taken 5s; want about the close timeout, 1s, not the write timeout, 10s")
		r.conn.Close() // the pings stop: Close can end
	}
}

// TestCloseCodes: each way the server ends a connection has its status code
// (RFC 6455, section 7.4.1) in one close frame, after an error message that
// says why, if there is one; nothing follows the close frame.
func TestCloseCodes(t *testing.T) {
	withRSV := clientFrame(true, 0x1, []byte(`{"type":"ping"}`))
	withRSV[0] |= 0x40
	for _, tt := range []struct {
		name string
		end  func(*Server, *rawConn)
		err  string // the error message before the close frame; "" for none
		code int
	}{
		{"Close", func(srv *Server, _ *rawConn) { go srv.Close() }, "", 1001},
		{"reserved opcode", func(_ *Server, r *rawConn) { r.writeFrame(true, 0x3, []byte("{}")) },
			"reserved WebSocket opcode; closing", 1002},
		{"reserved control opcode", func(_ *Server, r *rawConn) { r.writeFrame(true, 0xB, nil) },
			"reserved WebSocket opcode; closing", 1002},
		{"unmasked frame", func(_ *Server, r *rawConn) { r.conn.Write([]byte{0x81, 2, '{', '}'}) },
			"unmasked frame; closing", 1002},
		{"reserved bits set", func(_ *Server, r *rawConn) { r.conn.Write(withRSV) },
			"reserved bits set, with no extension; closing", 1002},
		{"control frame too long", func(_ *Server, r *rawConn) { r.writeFrame(true, 0x9, make([]byte, 126)) },
			"control frame fragmented or too long; closing", 1002},
		{"control frame fragmented", func(_ *Server, r *rawConn) { r.writeFrame(false, 0x9, []byte("p")) },
			"control frame fragmented or too long; closing", 1002},
		{"frame too large", func(_ *Server, r *rawConn) { r.writeFrame(true, 0x1, make([]byte, 1001)) },
			"frame larger than 1000 bytes; closing", 1009},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, base := setupTest(t, Options{MaxMessageBytes: 1000}, Events{})
			r := dialPeer(t, base+"/r", 0)
			tt.end(srv, r)
			if tt.err != "" {
				if op, data, err := r.next(); err != nil || string(data) != `{"type":"error","error":"`+tt.err+`"}` {
					t.Fatalf("got opcode %#x %q, %v; want the error %q", op, data, err, tt.err)
				}
			}
			end := error(io.EOF)
			if tt.code == 1009 { // the server did not read the rest of the frame: closing resets
				end = syscall.ECONNRESET
			}
			r.expectCloseThen(tt.code, end)
		})
	}
	t.Run("client closed", func(t *testing.T) {
		_, base := setupTest(t, Options{}, Events{})
		r := dialPeer(t, base+"/r", 0)
		r.writeFrame(true, 0x8, []byte{0x03, 0xe9}) // 1001: the page is going away
		op, data, err := r.next()
		if err != nil || op != 0x8 || !bytes.Equal(data, []byte{0x03, 0xe8}) {
			t.Fatalf("reply to a close frame: opcode %#x %q, %v; want a close frame with status 1000", op, data, err)
		}
		if op, data, err := r.next(); err != io.EOF {
			t.Errorf("after the close frame: opcode %#x %q, %v; want the connection closed (EOF)", op, data, err)
		}
	})
}

// TestRefusedJoinsGetTheirError: a client that cannot join gets an error
// message and a close frame with the status of the reason, even if it sent
// a frame before it read: the server reads to the client's close frame, so
// that unread bytes do not make closing a reset, which can overtake them.
func TestRefusedJoinsGetTheirError(t *testing.T) {
	// More than net/http reads with the request: the rest waits in the socket.
	early := clientFrame(true, 0x1, []byte(`{"type":"offer","signal":"`+strings.Repeat("x", 8<<10)+`"}`))
	refused := func(t *testing.T, r *rawConn, text string, code int) {
		t.Helper()
		if r.status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d; want 101: the refusal comes as a message", r.status)
		}
		if op, data, err := r.next(); err != nil || string(data) != `{"type":"error","error":"`+text+`"}` {
			t.Fatalf("got opcode %#x %q, %v; want the error %q", op, data, err, text)
		}
		r.expectClose(code)
	}
	t.Run("room full", func(t *testing.T) {
		_, base := setupTest(t, Options{MaxRoomPeers: 1}, Events{})
		dial(t, base, "/r")
		refused(t, dialRawEarly(t, base+"/r", nil, 0, early), "room full", 1013)
	})
	t.Run("server full", func(t *testing.T) {
		_, base := setupTest(t, Options{MaxPeers: 1}, Events{})
		dial(t, base, "/r")
		refused(t, dialRawEarly(t, base+"/other", nil, 0, early), "server full", 1013)
	})
	t.Run("server closing", func(t *testing.T) { // a handshake under way when Close begins
		ln := &connLog{hold: make(chan struct{}), holding: make(chan struct{}, 1)}
		srv, base := setupLogged(t, Options{}, Events{}, ln)
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "ws://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(append([]byte("GET /r HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"), early...))
		select {
		case <-ln.holding: // the server has accepted the handshake and waits to answer it
		case <-time.After(readTimeout):
			t.Fatal("no handshake response")
		}
		srv.Close()
		close(ln.hold)
		r := &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
		conn.SetReadDeadline(time.Now().Add(readTimeout))
		resp, err := http.ReadResponse(r.r, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.status = resp.StatusCode
		refused(t, r, "server closing", 1001)
	})
}

// TestPeerBoundFollowsMaxMessageBytes: what may wait for one peer grows with
// MaxMessageBytes, so that a message of the largest size, here above 4 MiB,
// reaches a peer that reads.
func TestPeerBoundFollowsMaxMessageBytes(t *testing.T) {
	const size = 5 << 20
	events := make(recorder, 100)
	_, base := setupTest(t, Options{MaxMessageBytes: size}, events.events())
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	signal := bigSignal(0, size-200)
	a.send(offerTo(b.id, signal))
	if m := b.read(); m.Type != "offer" || string(m.Signal) != signal {
		t.Errorf("b got %s; want a's offer of %d bytes", m.raw, len(signal))
	}
	b.quiet()
	if got := events.next(t, "offer", "error"); !strings.HasPrefix(got, "offer "+a.id) {
		t.Errorf("event %.80q; want a's offer, and no error", got)
	}
}

// TestPeersListCountsTowardTheBound: the peers list that join queues counts
// toward MaxQueuedBytes: a peer that never reads its list, made large here by
// many TURN URLs, is the one dropped when a message would pass the bound.
func TestPeersListCountsTowardTheBound(t *testing.T) {
	var turn []string
	for i := range 2000 { // 300 KB in each peers message
		turn = append(turn, fmt.Sprintf("turn:turn%04d.example:3478?transport=udp&padding=%s", i, strings.Repeat("x", 100)))
	}
	events := make(recorder, 100)
	_, base := setupLogged(t, Options{TURN: turn, TURNSecret: "s", MaxQueuedBytes: 400 << 10},
		events.events(), &connLog{writeBuffer: 16 << 10})
	a := dial(t, base, "/r") // reads its list whole
	stalled := dialRawBuffer(t, base+"/r", nil, 16<<10)
	a.expect("announce")
	a.send(`{"type":"peers"}`) // 300 KB for a: with the stalled peer's list, past the bound
	a.expect("peers")
	if m := a.read(); m.Type != "remove" {
		t.Errorf("a got %s; want the stalled peer removed", m.raw)
	}
	e := events.next(t, "error")
	if want := " the most waiting, past the bound for all"; !strings.HasSuffix(e, want) || strings.Fields(e)[1] == a.id {
		t.Errorf("event %q; want the stalled peer dropped for having the most waiting", e)
	}
	_ = stalled
}

// TestBlockingHookStopsOnlyItsPeer: while a hook blocks, nothing more is read
// from its peer, but the others are served, and messages still reach it.
func TestBlockingHookStopsOnlyItsPeer(t *testing.T) {
	const block = `{"type":"offer","signal":"block"}`
	blocked, release := make(chan string, 1), make(chan bool)
	_, base := setupTest(t, Options{}, Events{Message: func(p *Peer, m []byte) {
		if string(m) == block {
			blocked <- p.ID
			<-release
		}
	}})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	a.send(block)
	select {
	case <-blocked:
	case <-time.After(readTimeout):
		t.Fatal("the hook was not called")
	}
	a.send(`{"type":"ping"}`) // read once the hook returns
	b.quiet()
	b.send(`{"type":"offer","peerId":"` + a.id + `","signal":"from b"}`)
	if m := a.read(); m.Type != "offer" || m.PeerID != b.id {
		t.Errorf("a got %s while its hook blocked; want b's offer, and no pong yet", m.raw)
	}
	close(release)
	if m := b.read(); m.raw != `{"type":"offer","peerId":"`+a.id+`","signal":"block"}` {
		t.Errorf("b got %s; want a's offer, once the hook returned", m.raw)
	}
	a.expect("pong")
}

// TestHookBlockingTwoPingIntervalsDropsItsPeer: a hook that blocks for more
// than two ping intervals gets its peer dropped as silent, as Events says:
// Error, then Remove, once the hook returns.
func TestHookBlockingTwoPingIntervalsDropsItsPeer(t *testing.T) {
	const interval = 100 * time.Millisecond
	events := make(recorder, 100)
	hooks := events.events()
	hooks.Message = func(p *Peer, m []byte) {
		if string(m) == `{"type":"offer","signal":"block"}` {
			time.Sleep(10 * interval) // a hook that blocks: the behaviour under test
		}
	}
	_, base := setupTest(t, Options{PingInterval: interval}, hooks)
	a := dial(t, base, "/r")
	a.send(`{"type":"offer","signal":"block"}`)
	if got, want := events.next(t, "error", "remove"), "error "+a.id+" nothing received for two ping intervals"; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
	if got, want := events.next(t, "remove"), "remove "+a.id; got != want {
		t.Errorf("event %q; want %q", got, want)
	}
}

// peeroBinary builds the command once for the tests that run it.
var peeroBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "peero-test-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "peero")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := peeroBinary(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// command returns the built peero with args, and $PORT unset.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := peeroBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "PORT=") })
	return cmd
}

// startPeero starts the built peero with args and returns it, with its log
// lines and a function that waits for the line containing a text.
func startPeero(t *testing.T, args ...string) (cmd *exec.Cmd, waitLine func(text string) string) {
	t.Helper()
	cmd = command(t, args...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		r.Close()
	})
	lines := make(chan string, 100)
	go func() { // ends when peero does
		defer close(lines)
		s := bufio.NewScanner(r)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	waitLine = func(text string) string {
		t.Helper()
		timeout := time.After(readTimeout)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("peero ended before logging %q", text)
				}
				if strings.Contains(line, text) {
					return line
				}
			case <-timeout:
				t.Fatalf("peero did not log %q within %v", text, readTimeout)
			}
		}
	}
	return cmd, waitLine
}

// TestUsage: -h names the command peero, not the path go run builds it at,
// and says each default once.
func TestUsage(t *testing.T) {
	out, err := command(t, "-h").CombinedOutput()
	usage := string(out)
	if err != nil || !strings.HasPrefix(usage, "Usage of peero:\n") {
		t.Errorf("peero -h: %v, %q; want exit 0 and \"Usage of peero:\" first", err, usage)
	}
	_, port, _ := strings.Cut(usage, "\n  -port ")
	port, _, _ = strings.Cut(port, "\n  -")
	if strings.Count(port, "default") != 1 || !strings.Contains(port, `(default "8080")`) {
		t.Errorf("-port's help %q; want its default, \"8080\", said once", port)
	}
}

// TestStartLineNamesTheURL: the line peero logs when it listens says where
// to connect, and a client can.
func TestStartLineNamesTheURL(t *testing.T) {
	cmd, waitLine := startPeero(t, "-addr", "127.0.0.1:0")
	line := waitLine("peero listening")
	_, port, _ := strings.Cut(line, " port=")
	port, _, _ = strings.Cut(port, " ")
	url := "ws://127.0.0.1:" + port + "/ROOM"
	if !strings.Contains(line, " url="+url) {
		t.Errorf("start line %q; want it to say url=%s", line, url)
	}
	c := dial(t, strings.TrimSuffix(url, "/ROOM"), "/room")
	c.quiet()
	c.nextInBackground() // answers the close frame
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after an interrupt: %v; want exit 0", err)
	}
}

// TestSecondInterruptEndsAtOnce: an interrupt while peero closes, here kept
// busy by a client that does not answer its close frame, ends it at once:
// the signal kills it, before Close returns.
func TestSecondInterruptEndsAtOnce(t *testing.T) {
	cmd, waitLine := startPeero(t, "-addr", "127.0.0.1:0")
	_, port, _ := strings.Cut(waitLine("peero listening"), " port=")
	port, _, _ = strings.Cut(port, " ")
	dialPeer(t, "ws://127.0.0.1:"+port+"/r", 0) // never answers the close frame
	waitLine("join")
	cmd.Process.Signal(os.Interrupt)
	waitLine("closing")
	cmd.Process.Signal(os.Interrupt)
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	select {
	case <-ended:
	case <-time.After(readTimeout):
		t.Fatal("peero still runs after a second interrupt")
	}
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("peero ended with %v; want killed by the second interrupt", cmd.ProcessState)
	}
}

// TestRunClosesWhenItCannotListen: Run on an address in use returns the
// error, and closes the server: its pinger ends.
func TestRunClosesWhenItCannotListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := New(Options{Addr: ln.Addr().String()})
	if err := srv.Run(func(string) { t.Error("ready called") }); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Run = %v; want address in use", err)
	}
	ended := make(chan bool)
	go func() {
		srv.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(readTimeout):
		t.Error("the pinger still runs after Run returned; want the server closed")
	}
}

// TestEventsOfARoom: every hook is called with its arguments, in order for
// each peer; Remove once for each peer that joined; and no hook at all for a
// client that could not join (room full, server full).
func TestEventsOfARoom(t *testing.T) {
	events := make(recorder, 100)
	srv, base := setupTest(t, Options{MaxRoomPeers: 2, MaxPeers: 3}, events.events())
	a := dial(t, base, "/r")
	for _, w := range []string{"connection " + a.id + " /r", "peers " + a.id + " []", "announce " + a.id} {
		if got := events.next(t, ""); got != w {
			t.Fatalf("event %q; want %q", got, w)
		}
	}
	b := dial(t, base, "/r") // after a's hooks, which run after a has its peers list
	a.expect("announce")
	for _, w := range []string{"connection " + b.id + " /r", "peers " + b.id + " [" + a.id + "]", "announce " + b.id} {
		if got := events.next(t, ""); got != w {
			t.Fatalf("event %q; want %q", got, w)
		}
	}
	full := dialRaw(t, base+"/r", nil) // room full
	full.readFrame()
	full.expectClose(1013)
	c := dial(t, base, "/s")
	if got, want := events.next(t, ""), "connection "+c.id+" /s"; got != want {
		t.Fatalf("event %q; want %q, and none for the peer refused", got, want)
	}
	events.next(t, "announce") // after c's peers

	full = dialRaw(t, base+"/t", nil) // server full
	full.readFrame()
	full.expectClose(1013)

	for _, step := range []struct {
		from *client
		send string
		want []string // the events of the sender, in order
	}{
		{a, `{"type":"peers"}`, []string{"peers " + a.id + " [" + b.id + "]"}},
		{b, `{"type":"answer","peerId":"` + a.id + `","signal":{"sdp":"b"}}`, []string{"answer " + a.id + " " + b.id + ` {"sdp":"b"}`}},
		{a, `{"type":"offer","signal":"to all"}`, []string{"offer " + a.id + ` "to all"`}},
	} {
		step.from.send(step.send)
		for _, w := range append([]string{"message " + step.from.id + " " + step.send}, step.want...) {
			if got := events.next(t, ""); got != w {
				t.Fatalf("event %q; want %q", got, w)
			}
		}
	}
	a.expect("peers")
	a.expect("answer")
	b.expect("offer")
	b.conn.Close()
	if got, want := events.next(t, ""), "remove "+b.id; got != want {
		t.Fatalf("event %q; want %q", got, want)
	}
	a.expect("remove")
	a.nextInBackground() // a and c answer the close frame
	c.nextInBackground()
	srv.Close() // every hook has run when it returns
	var removed []string
	for len(events) > 0 {
		e := <-events
		if !strings.HasPrefix(e, "remove ") {
			t.Errorf("event %q after Close; want only removes", e)
		}
		removed = append(removed, strings.TrimPrefix(e, "remove "))
	}
	slices.Sort(removed)
	wantRemoved := []string{a.id, c.id}
	slices.Sort(wantRemoved)
	if !slices.Equal(removed, wantRemoved) {
		t.Errorf("removed %q on Close; want a and c, once each (b was removed before)", removed)
	}
}

// TestResumeKeepsTheID: a peer that comes back to its room with the resume
// token of its last peers message gets its id back; the room, which saw it
// leave, is told it arrived, and messages to the id reach it.
func TestResumeKeepsTheID(t *testing.T) {
	_, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	b := dial(t, base, "/r")
	a.expect("announce")
	b.conn.Close()
	a.expect("remove")
	c := dial(t, base, "/r?resume="+url.QueryEscape(b.resume))
	if c.id != b.id || !slices.Equal(c.peers, []string{a.id}) {
		t.Fatalf("back with its token: id %s, peers %v; want %s, [%s]", c.id, c.peers, b.id, a.id)
	}
	if m := a.expect("announce"); m.PeerID != b.id {
		t.Errorf("announce of %s; want %s", m.PeerID, b.id)
	}
	a.send(`{"type":"offer","peerId":"` + b.id + `","signal":1}`)
	if m := c.expect("offer"); m.PeerID != a.id {
		t.Errorf("offer from %s; want %s", m.PeerID, a.id)
	}
}

// TestResumeReplacesTheOldConnection: a token used while its peer is still
// connected (a half-open connection, as the server sees it) moves the id to
// the new connection: the old one gets an error and a close frame (1000), the
// room is told nothing, and the events say Connection for the new peer and
// Remove for the old one, with no Announce and no Error.
func TestResumeReplacesTheOldConnection(t *testing.T) {
	events := make(recorder, 100)
	_, base := setupTest(t, Options{}, events.events())
	a := dial(t, base, "/r")
	old := dialPeer(t, base+"/r", 0)
	a.expect("announce")
	for events.next(t, "announce") != "announce "+old.id { // a's comes first
	}
	c := dial(t, base, "/r?resume="+url.QueryEscape(old.resume))
	if c.id != old.id || !slices.Equal(c.peers, []string{a.id}) {
		t.Fatalf("with a token in use: id %s, peers %v; want %s, [%s]", c.id, c.peers, old.id, a.id)
	}
	op, data := old.readFrame()
	if want := `{"type":"error","error":"replaced: this id connected again"}`; op != 0x1 || string(data) != want {
		t.Errorf("the old connection got opcode %#x %s; want %s", op, data, want)
	}
	old.expectClose(1000)
	a.quiet() // no remove, no announce: the id never left
	a.send(`{"type":"offer","peerId":"` + old.id + `","signal":1}`)
	if m := c.expect("offer"); m.PeerID != a.id {
		t.Errorf("offer from %s; want %s", m.PeerID, a.id)
	}
	for _, want := range []string{"connection " + c.id + " /r", "remove " + old.id} {
		if got := events.next(t, "connection", "remove", "announce", "error"); got != want {
			t.Errorf("event %q; want %q", got, want)
		}
	}
	c.quiet() // the hooks of c's ping come after those of its joining, and of a's offer
	for len(events) > 0 {
		if e := <-events; strings.HasPrefix(e, "announce") || strings.HasPrefix(e, "error") {
			t.Errorf("event %q; want none for a replacement", e)
		}
	}
}

// TestReplacedPeerRelaysNothing: an offer that a replaced connection was
// handling when its id resumed elsewhere is not relayed: not to the room after
// the resumed peer has left it (nothing after remove), nor to the resumed peer.
func TestReplacedPeerRelaysNothing(t *testing.T) {
	handling, release := make(chan struct{}), make(chan struct{})
	_, base := setupTest(t, Options{}, Events{Message: func(p *Peer, m []byte) {
		if string(m) == `{"type":"offer","signal":"late"}` {
			close(handling)
			<-release
		}
	}})
	a := dial(t, base, "/r")
	old := dial(t, base, "/r")
	a.expect("announce")
	old.send(`{"type":"offer","signal":"late"}`)
	<-handling // old's read loop has read the offer, and has yet to relay it
	resumed := dial(t, base, "/r?resume="+url.QueryEscape(old.resume))
	resumed.conn.Close()
	if m := a.expect("remove"); m.PeerID != old.id {
		t.Fatalf("remove of %s; want %s", m.PeerID, old.id)
	}
	close(release)
	a.quiet()
}

// TestRemoveComesBeforeTheResumedAnnounce: the room is told that a peer left
// as it leaves, so that when its id comes back at once with a token, the room
// hears "remove" before "announce", never the other way round.
func TestRemoveComesBeforeTheResumedAnnounce(t *testing.T) {
	srv, base := setupTest(t, Options{}, Events{})
	a := dial(t, base, "/r")
	old := dial(t, base, "/r")
	a.expect("announce")
	i := slices.IndexFunc(srv.room("/r"), func(p *Peer) bool { return p.ID == old.id })
	srv.leave(srv.room("/r")[i]) // as old's read loop does when its connection ends
	dial(t, base, "/r?resume="+url.QueryEscape(old.resume))
	for _, want := range []string{"remove", "announce"} {
		if m := a.expect(want); m.PeerID != old.id {
			t.Errorf("%s of %s; want %s", want, m.PeerID, old.id)
		}
	}
}

// TestResumeRefusesOtherTokens: a token that was changed, comes from another
// room, has expired, or was signed with another secret gets a new id, as no
// token does; so does a validly signed one whose id is not one the server
// could have given. A server with the same secret (a restart, or another
// instance) gives the id back.
func TestResumeRefusesOtherTokens(t *testing.T) {
	srv, base := setupTest(t, Options{Secret: "north"}, Events{})
	_, sameSecret := setupTest(t, Options{Secret: "north"}, Events{})
	_, otherSecret := setupTest(t, Options{Secret: "south"}, Events{})
	a := dial(t, base, "/r")
	id, rest, _ := strings.Cut(a.resume, ".")
	expiry, _, _ := strings.Cut(rest, ".")
	past := fmt.Sprint(time.Now().Add(-time.Second).Unix())
	changed := []byte(a.resume)
	changed[len(changed)-1] ^= 1
	forged := `A","type":"offer`
	for _, tt := range []struct{ name, base, room, token string }{
		{"changed", base, "/r", string(changed)},
		{"from another room", base, "/s", a.resume},
		{"expired", base, "/r", id + "." + past + "." + srv.sign(id, past, "/r")},
		{"signed with another secret", otherSecret, "/r", a.resume},
		{"an id the server could not give", base, "/r", forged + "." + expiry + "." + srv.sign(forged, expiry, "/r")},
		{"not a token", base, "/r", "nonsense"},
	} {
		if c := dial(t, tt.base, tt.room+"?resume="+url.QueryEscape(tt.token)); c.id == id || len(c.id) != 26 {
			t.Errorf("%s: id %q; want a new one", tt.name, c.id)
		}
	}
	if c := dial(t, sameSecret, "/r?resume="+url.QueryEscape(a.resume)); c.id != id {
		t.Errorf("a server with the same secret: id %s; want %s", c.id, id)
	}
}
