// Peero is a WebRTC signaling server: it keeps the list of online peers of
// each room and passes signals (SDP offers and answers, ICE candidates)
// between them. All real traffic then flows peer to peer.
//
// Usage: go run main.go [-port 8080] [-ping 20s] [-max-peers 10000] [-origin https://a.example,…] [-v]
//
// Peers connect with a WebSocket to ws://HOST:8080/ROOM; the URL path names
// the room. Every message, both ways, is one text frame holding one JSON
// object with a string field "type". A session:
//
//	A connects to /chat     A <- {"type":"peers","id":"A…","peers":[]}
//	B connects to /chat     B <- {"type":"peers","id":"B…","peers":["A…"]}
//	                        A <- {"type":"announce","peerId":"B…"}
//	B -> {"type":"offer","peerId":"A…","signal":{"type":"offer","sdp":"…"}}
//	                        A <- {"type":"offer","peerId":"B…","signal":{…}}
//	A -> {"type":"answer","peerId":"B…","signal":{…}}   (candidates likewise)
//	B disconnects           A <- {"type":"remove","peerId":"B…"}
//
// protocol.md is the full specification. The server is an http.Handler:
// mount New(opts) directly (not under a mux that cleans paths), or call Run.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// maxQueuedBytes bounds what may wait for one peer: a burst of hundreds of
// signals is normal, megabytes mean that the peer has stopped reading.
const maxQueuedBytes = 4 << 20

var (
	errLeft          = errors.New("left")           // a normal leave
	errServerClosing = errors.New("server closing") // Close; like errLeft, not an Events.Error
)

// Options configures a Server. A zero field means its default.
type Options struct {
	Port            string        // TCP port Run listens on; default "8080"; "0" picks a free one
	MaxMessageBytes int           // largest frame accepted; default 64 KiB
	MaxPeers        int           // over all rooms; default 10000
	PingInterval    time.Duration // how often peers are pinged; default 20s
	WriteTimeout    time.Duration // how long one write to a peer may take; default 10s
	Origins         []string      // browser Origin values allowed; empty allows any. A request with no Origin header (not a browser) is always allowed.
}

// Events lets a program watch the server, like the original Node.js Peero's
// events. Any hook may be nil. Hooks run without the server's lock held,
// possibly from several goroutines at once, and must not call Close. For each
// peer, Connection, Peers and Announce come first; Remove comes once, last.
type Events struct {
	Connection func(p *Peer)                                        // p connected and joined its room (before its peers list is sent)
	Message    func(p *Peer, message []byte)                        // any message received from p, before it is handled, bad ones included
	Offer      func(p *Peer, signal json.RawMessage)                // p's offer was handed on to every other peer of the room, or to the one named
	Answer     func(p *Peer, peerID string, signal json.RawMessage) // an answer was handed on to p; peerID is the answering peer
	Announce   func(p *Peer)                                        // the others of p's room were told p joined
	Peers      func(p *Peer, peers []string)                        // the peers list was sent to p
	Remove     func(peerID string)                                  // the peer left its room (closed, dropped, or server closing); the room was told
	Error      func(err error, p *Peer)                             // the server dropped p for a fault (a write failed or timed out, its queue overflowed, no sign of life for two ping intervals); Remove follows. Not called for a normal close or for Close
}

// Peer is one connected client.
type Peer struct {
	ID   string // assigned by the server: 128 random bits as text, never reused
	Room string // the URL path the peer connected to

	srv      *Server
	conn     *websocket.Conn
	lastSeen atomic.Int64 // UnixNano of the last bytes read from the peer, pongs included

	mu      sync.Mutex // guards the fields below
	queue   [][]byte   // messages waiting for the writer, oldest first; nil stands for a ping
	queued  int        // bytes queued or being written
	writing bool       // a writer goroutine owns the queue
	dropped error      // why the peer is leaving, once it is: nothing more is queued then
}

// Server is a Peero signaling server. Create it with New, set Events, then
// call Run or mount it as an http.Handler. Call Close when finished.
type Server struct {
	Events Events // set before serving

	opts Options
	wg   sync.WaitGroup // counts read loops, writers and the pinger, for Close
	stop chan struct{}  // closed by Close to end the pinger and Run

	mu     sync.Mutex                  // guards the fields below
	rooms  map[string]map[string]*Peer // room -> peer id -> peer; a room goes with its last peer
	count  int                         // peers in all rooms
	closed bool
}

// New returns a Server with opts, defaults filled in, and starts its pinger.
func New(opts Options) *Server {
	opts.Port = cmp.Or(opts.Port, "8080")
	opts.MaxMessageBytes = cmp.Or(opts.MaxMessageBytes, 64<<10)
	opts.MaxPeers = cmp.Or(opts.MaxPeers, 10000)
	opts.PingInterval = cmp.Or(opts.PingInterval, 20*time.Second)
	opts.WriteTimeout = cmp.Or(opts.WriteTimeout, 10*time.Second)
	s := &Server{opts: opts, stop: make(chan struct{}), rooms: make(map[string]map[string]*Peer)}
	s.wg.Add(1)
	go s.pingLoop()
	return s
}

// ServeHTTP upgrades r to a WebSocket and serves the peer until it leaves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1) // under the lock, so that Close cannot begin waiting first
		defer s.wg.Done()
	}
	s.mu.Unlock()
	if closed {
		http.Error(w, "peero: server closed", http.StatusServiceUnavailable)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "peero: this is a WebRTC signaling server; connect with a WebSocket to ws://HOST/ROOM", http.StatusUpgradeRequired)
		return
	}
	p := &Peer{ID: rand.Text(), Room: r.URL.Path, srv: s}
	p.lastSeen.Store(time.Now().UnixNano())
	// Not websocket.Handler: it refuses clients with no Origin, and file:// pages.
	ws := websocket.Server{Handshake: func(_ *websocket.Config, r *http.Request) error {
		if o := r.Header.Get("Origin"); o != "" && len(s.opts.Origins) > 0 && !slices.Contains(s.opts.Origins, o) {
			return fmt.Errorf("origin %q not allowed", o)
		}
		return nil
	}, Handler: func(c *websocket.Conn) {
		c.MaxPayloadBytes = s.opts.MaxMessageBytes
		p.conn = c
		s.serve(p)
	}}
	ws.ServeHTTP(&liveConn{ResponseWriter: w, seen: &p.lastSeen}, r)
}

// serve is p's read loop, on the request's goroutine: it joins p to its room,
// handles its messages in order, then removes p and closes the connection.
func (s *Server) serve(p *Peer) {
	others, err := s.join(p)
	if err != nil {
		p.closeConn(errorMessage(err.Error()))
		return
	}
	if s.Events.Connection != nil {
		s.Events.Connection(p)
	}
	s.wg.Add(1)
	go p.write() // join queued p's peers list but held the writer back until now
	if s.Events.Peers != nil {
		s.Events.Peers(p, peerIDs(others))
	}
	sendAll(others, []byte(`{"type":"announce","peerId":"`+p.ID+`"}`)) // ids need no escaping
	if s.Events.Announce != nil {
		s.Events.Announce(p)
	}
	var last []byte // a final message for p, sent just before closing
	for {
		var f frame
		if err := codec.Receive(p.conn, &f); err != nil { // EOF, a close frame, a broken connection, a drop
			if err == websocket.ErrFrameTooLarge {
				last = errorMessage(fmt.Sprintf("frame larger than %d bytes; closing", s.opts.MaxMessageBytes))
			}
			break
		}
		if s.Events.Message != nil {
			s.Events.Message(p, f.data)
		}
		m, err := parse(f)
		switch {
		case err != nil:
		case m.Type == "ping":
			p.send(pong)
		case m.Type == "peers":
			ids := peerIDs(s.others(p, ""))
			p.send(peersMessage(p.ID, ids))
			if s.Events.Peers != nil {
				s.Events.Peers(p, ids)
			}
		default: // offer, answer or candidate: relayed with p as the sender
			to := s.others(p, m.PeerID)
			if m.PeerID != "" && len(to) == 0 {
				err = fmt.Errorf("no peer %q in this room", m.PeerID)
				break
			}
			sendAll(to, relayed(m.Type, p.ID, m.Signal))
			if m.Type == "offer" && s.Events.Offer != nil {
				s.Events.Offer(p, m.Signal)
			}
			if m.Type == "answer" && s.Events.Answer != nil {
				s.Events.Answer(to[0], p.ID, m.Signal)
			}
		}
		if err != nil {
			p.send(errorMessage(err.Error()))
		}
	}
	if reason := p.drop(errLeft); reason != errLeft && reason != errServerClosing && s.Events.Error != nil {
		s.Events.Error(reason, p)
	}
	sendAll(s.leave(p), []byte(`{"type":"remove","peerId":"`+p.ID+`"}`))
	if s.Events.Remove != nil {
		s.Events.Remove(p.ID)
	}
	p.closeConn(last)
}

// message is a client message that parse has checked.
type message struct {
	Type   string          // "peers", "ping", "offer", "answer" or "candidate"
	PeerID string          // the recipient; "" if absent (an offer to the whole room)
	Signal json.RawMessage // present and not null for offer, answer and candidate
}

// parse checks a frame against the protocol, all but whether PeerID is in
// the sender's room, which only the server can tell.
func parse(f frame) (m message, err error) {
	var fields map[string]json.RawMessage // not a struct: encoding/json matches struct fields case-insensitively
	switch {
	case f.binary:
		return m, errors.New("binary frames are not accepted; send JSON as text")
	case !utf8.Valid(f.data):
		return m, errors.New("message is not valid UTF-8")
	case json.Unmarshal(f.data, &fields) != nil || fields == nil:
		return m, errors.New("message is not a JSON object")
	}
	if m.Type, err = jsonString(fields, "type", true); err != nil || m.Type == "ping" || m.Type == "peers" {
		return m, err
	}
	if m.Type != "offer" && m.Type != "answer" && m.Type != "candidate" {
		return m, fmt.Errorf("unknown message type %q", m.Type)
	}
	if m.Signal = fields["signal"]; m.Signal == nil || string(m.Signal) == "null" {
		return m, fmt.Errorf("%s needs a signal", m.Type)
	}
	m.PeerID, err = jsonString(fields, "peerId", m.Type != "offer")
	return m, err
}

// jsonString returns fields[key] if it is a JSON string that is not empty,
// "" if it is absent and not required, or else an error.
func jsonString(fields map[string]json.RawMessage, key string, required bool) (s string, err error) {
	raw, ok := fields[key]
	if ok && (raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s == "") || !ok && required {
		err = fmt.Errorf("message needs %q, a string that is not empty", key)
	}
	return s, err
}

// join adds p to its room with its peers list queued as its first message, and
// returns the others of the room: those that list names, to be told of p.
func (s *Server) join(p *Peer) ([]*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errServerClosing
	}
	if s.count >= s.opts.MaxPeers {
		return nil, errors.New("server full")
	}
	if s.rooms[p.Room] == nil {
		s.rooms[p.Room] = make(map[string]*Peer)
	}
	others := peersIn(s.rooms[p.Room], nil)
	s.rooms[p.Room][p.ID] = p
	s.count++
	// No one else can see p before s.mu is released: its queue needs no lock yet.
	p.queue, p.writing = [][]byte{peersMessage(p.ID, peerIDs(others))}, true
	return others, nil
}

func (s *Server) leave(p *Peer) (others []*Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rooms[p.Room], p.ID)
	if s.count--; len(s.rooms[p.Room]) == 0 {
		delete(s.rooms, p.Room)
	}
	return peersIn(s.rooms[p.Room], nil)
}

// others returns the peers of p's room but p or, if id is not "", the one
// with that id; none if it is not there or is p.
func (s *Server) others(p *Peer, id string) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if to := s.rooms[p.Room][id]; id != "" && to != nil && to != p {
		return []*Peer{to}
	} else if id != "" {
		return nil
	}
	return peersIn(s.rooms[p.Room], p)
}

func (s *Server) all() (peers []*Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, room := range s.rooms {
		peers = append(peers, peersIn(room, nil)...)
	}
	return peers
}

func peersIn(room map[string]*Peer, except *Peer) []*Peer {
	peers := make([]*Peer, 0, len(room))
	for _, p := range room {
		if p != except {
			peers = append(peers, p)
		}
	}
	return peers
}

func sendAll(peers []*Peer, msg []byte) {
	for _, p := range peers {
		p.send(msg)
	}
}

// send queues msg (nil for a ping) for p and starts p's writer if none runs.
// It never blocks; if more than maxQueuedBytes would wait, it drops p instead.
func (p *Peer) send(msg []byte) {
	p.mu.Lock()
	full := p.queued+len(msg) > maxQueuedBytes
	ok, start := p.dropped == nil && !full, p.dropped == nil && !full && !p.writing
	if ok {
		p.queue, p.queued, p.writing = append(p.queue, msg), p.queued+len(msg), true
	}
	p.mu.Unlock()
	if full {
		p.drop(errors.New("more than 4 MiB waiting to be sent"))
	}
	if start {
		p.srv.wg.Add(1) // the caller is counted too, so Close is still waiting
		go p.write()
	}
}

// write is p's writer goroutine: send starts it, and it returns once the queue
// is empty or p is dropped. One at most runs per peer, so order is kept.
func (p *Peer) write() {
	defer p.srv.wg.Done()
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue, p.writing = nil, len(batch) > 0 && p.dropped == nil
		writing := p.writing
		p.mu.Unlock()
		if !writing {
			return
		}
		n := 0
		for _, msg := range batch {
			p.conn.SetWriteDeadline(time.Now().Add(p.srv.opts.WriteTimeout))
			if err := codec.Send(p.conn, msg); err != nil {
				p.drop(fmt.Errorf("send to %s: %w", p.ID, err))
				return
			}
			n += len(msg)
		}
		p.mu.Lock()
		p.queued -= n
		p.mu.Unlock()
	}
}

// drop ends p's traffic and wakes its read loop, which then leaves the room.
// It returns the first reason given.
func (p *Peer) drop(reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped == nil {
		p.dropped, p.queue = reason, nil
		p.conn.SetDeadline(time.Now()) // not I/O: it wakes the blocked read and write
	}
	return p.dropped
}

// closeConn sends last (if not nil) and a close frame, best effort, and closes p's connection.
func (p *Peer) closeConn(last []byte) {
	p.conn.SetWriteDeadline(time.Now().Add(time.Second)) // x/net's Close waits behind a write in progress
	if last != nil {
		p.conn.Write(last)
	}
	p.conn.Close()
}

// pingLoop, started by New, pings every peer each interval and drops those
// silent for two (browsers answer pings by themselves); on Close it drops all.
func (s *Server) pingLoop() {
	defer s.wg.Done()
	ticker := time.NewTicker(s.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			for _, p := range s.all() {
				p.drop(errServerClosing)
			}
			return
		case now := <-ticker.C:
			for _, p := range s.all() {
				if now.UnixNano()-p.lastSeen.Load() > int64(2*s.opts.PingInterval) {
					p.drop(errors.New("nothing received for two ping intervals"))
				} else {
					p.send(nil)
				}
			}
		}
	}
}

// Run listens on Options.Port, calls ready (if not nil) with the real port,
// and serves until Close has finished; then it returns nil.
func (s *Server) Run(ready func(port string)) error {
	ln, err := net.Listen("tcp", ":"+s.opts.Port)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { // ended by Close, which so ends Serve
		<-s.stop
		hs.Close() // leaves hijacked connections alone: Close ends those
	}()
	if ready != nil {
		ready(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	}
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return s.Close(nil) // waits for the Close in progress
}

// Close stops accepting, sends every peer a close frame, waits for every
// goroutine of the server to end, then calls done (if not nil). Returns nil.
func (s *Server) Close(done func()) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	if first {
		close(s.stop) // the pinger then drops every peer
	}
	s.wg.Wait()
	if done != nil {
		done()
	}
	return nil
}

type frame struct {
	data   []byte
	binary bool
}

// codec sends a []byte as a text frame, or nil as a ping (x/net has no ping
// call; changing Conn.PayloadType while another goroutine writes is a race),
// and receives a frame with its kind, which x/net's Message codec hides.
var codec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		if msg := v.([]byte); msg != nil {
			return msg, websocket.TextFrame, nil
		}
		return nil, websocket.PingFrame, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		*v.(*frame) = frame{data, payloadType != websocket.TextFrame}
		return nil
	},
}

// liveConn hands x/net a connection whose every read stores the time in seen:
// x/net takes pongs inside Receive, so this is how a quiet peer shows life.
type liveConn struct {
	http.ResponseWriter
	r    io.Reader
	seen *atomic.Int64
}

func (c *liveConn) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil {
		c.r, rw.Reader = rw.Reader, bufio.NewReader(c)
	}
	return conn, rw, err
}

func (c *liveConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.seen.Store(time.Now().UnixNano())
	}
	return n, err
}

// relayed builds {"type":T,"peerId":FROM,"signal":S} by hand so that S passes
// byte for byte (json.Marshal escapes <, >, &); T and FROM need no escaping.
func relayed(typ, from string, signal []byte) []byte {
	b := append(make([]byte, 0, len(signal)+64), `{"type":"`+typ+`","peerId":"`+from+`","signal":`...)
	return append(append(b, signal...), '}')
}

var pong = []byte(`{"type":"pong"}`)

func peersMessage(id string, peers []string) []byte {
	list, _ := json.Marshal(peers) // cannot fail for strings
	return []byte(`{"type":"peers","id":"` + id + `","peers":` + string(list) + `}`)
}

func errorMessage(text string) []byte {
	quoted, _ := json.Marshal(text)
	return []byte(`{"type":"error","error":` + string(quoted) + `}`)
}

func peerIDs(peers []*Peer) []string {
	ids := make([]string, len(peers))
	for i, p := range peers {
		ids[i] = p.ID
	}
	return ids
}

func main() {
	port := flag.String("port", cmp.Or(os.Getenv("PORT"), "8080"), "TCP port to listen on (default $PORT, else 8080)")
	ping := flag.Duration("ping", 20*time.Second, "how often to ping peers; a peer silent for two intervals is dropped")
	maxPeers := flag.Int("max-peers", 10000, "most peers held at once, over all rooms")
	origins := flag.String("origin", "", "comma-separated browser origins allowed (default any)")
	verbose := flag.Bool("v", false, "also log every relayed offer and answer")
	flag.Parse()
	commas := func(r rune) bool { return r == ',' }
	srv := New(Options{Port: *port, PingInterval: *ping, MaxPeers: *maxPeers, Origins: strings.FieldsFunc(*origins, commas)})
	srv.Events = Events{
		Connection: func(p *Peer) { slog.Info("join", "peer", p.ID, "room", p.Room) },
		Remove:     func(id string) { slog.Info("leave", "peer", id) },
		Error:      func(err error, p *Peer) { slog.Warn("drop", "peer", p.ID, "room", p.Room, "err", err) },
	}
	if *verbose {
		srv.Events.Offer = func(p *Peer, _ json.RawMessage) { slog.Info("offer", "from", p.ID) }
		srv.Events.Answer = func(p *Peer, from string, _ json.RawMessage) { slog.Info("answer", "from", from, "to", p.ID) }
	}
	stop, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(stop, func() { srv.Close(nil) }) // Run returns once Close has finished
	if err := srv.Run(func(port string) { slog.Info("peero listening", "port", port) }); err != nil {
		slog.Error("peero", "err", err)
		os.Exit(1)
	}
}
