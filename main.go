// Peero is a WebRTC signaling server: it keeps the list of online peers of
// each room and passes signals (SDP offers and answers, ICE candidates)
// between them. All real traffic then flows peer to peer.
//
// Usage:
//
//	go run main.go [-port 8080] [-ping 20s] [-max-peers 10000] [-origin https://a.example,https://b.example] [-v]
//
// Peers connect with a WebSocket to ws://HOST:8080/ROOM; the URL path names
// the room. Every message, both ways, is one text frame holding one JSON
// object with a string field "type". A session:
//
//	A connects to /chat     <- {"type":"peers","id":"A…","peers":[]}
//	B connects to /chat     <- {"type":"peers","id":"B…","peers":["A…"]}
//	                      A <- {"type":"announce","peerId":"B…"}
//	B -> {"type":"offer","peerId":"A…","signal":{"type":"offer","sdp":"…"}}
//	                      A <- {"type":"offer","peerId":"B…","signal":{…}}
//	A -> {"type":"answer","peerId":"B…","signal":{…}}  (candidates likewise)
//	B disconnects         A <- {"type":"remove","peerId":"B…"}
//
// protocol.md is the full specification. The server is an http.Handler:
// mount New(opts) directly (not under a mux that cleans paths), or call Run.
package main

import (
	"bufio"
	"bytes"
	"cmp"
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
	errServerClosing = errors.New("server closing")
	errServerFull    = errors.New("server full")
	errQueueFull     = errors.New("more than 4 MiB waiting to be sent")
	errNoSignOfLife  = errors.New("nothing received for two ping intervals")
)

// Options configures a Server. The zero value of each field means its default.
type Options struct {
	Port            string        // TCP port Run listens on; default "8080"; "0" picks a free one
	MaxMessageBytes int           // largest frame accepted; default 64 KiB
	MaxPeers        int           // over all rooms; default 10000
	PingInterval    time.Duration // how often peers are pinged; default 20s
	WriteTimeout    time.Duration // how long one write to a peer may take; default 10s
	Origins         []string      // browser Origin values allowed; empty allows any. A request with no Origin header (not a browser) is always allowed.
}

// Events lets a program watch the server, as the events of the original
// Node.js Peero did. Any hook may be nil. Hooks run without the server's lock
// held, possibly from several goroutines at once, and must not call Close.
// For each peer, Connection, Peers and Announce come first, in that order;
// Remove comes exactly once, last.
type Events struct {
	Connection func(p *Peer)                                        // p connected and joined its room (before its peers list is sent)
	Message    func(p *Peer, message []byte)                        // any message received from p, before it is handled, bad ones included
	Offer      func(p *Peer, signal json.RawMessage)                // p's offer was handed on to every other peer of the room, or to the one named
	Answer     func(p *Peer, peerID string, signal json.RawMessage) // an answer was handed on to p; peerID is the answering peer
	Announce   func(p *Peer)                                        // the others of p's room were told p joined
	Peers      func(p *Peer, peers []string)                        // the peers list was sent to p
	Remove     func(peerID string)                                  // the peer left its room (closed, dropped, or server closing); the room was told
	// Error: the server dropped p for a fault (a write failed or timed out,
	// its queue overflowed, nothing heard within two ping intervals); Remove
	// follows. Not called for a normal close or for Close.
	Error func(err error, p *Peer)
}

// Peer is one connected client.
type Peer struct {
	ID   string // assigned by the server: 128 random bits as text, never reused
	Room string // the URL path the peer connected to

	srv      *Server
	conn     *websocket.Conn
	lastSeen atomic.Int64 // UnixNano of the last bytes read from the peer, pongs included

	mu      sync.Mutex // guards the fields below
	queue   [][]byte   // messages waiting for the writer, oldest first; nil means a ping
	queued  int        // bytes queued or being written
	writing bool       // a writer goroutine owns the queue
	dropped bool       // nothing more is queued; the read loop is ending
	reason  error      // why the peer was dropped; nil for a normal leave
}

// Server is a Peero signaling server. Create it with New, set Events, then
// serve it with Run or mount it as an http.Handler. The caller should call
// Close when finished.
type Server struct {
	Events Events // set before serving

	opts      Options
	wg        sync.WaitGroup // counts read loops, writers and the pinger, for Close
	stop      chan struct{}  // closed by Close to end the pinger and Run
	done      chan struct{}  // closed when Close has finished
	closeOnce sync.Once

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
	s := &Server{opts: opts, stop: make(chan struct{}), done: make(chan struct{}),
		rooms: make(map[string]map[string]*Peer)}
	s.wg.Add(1)
	go s.pingLoop()
	return s
}

// ServeHTTP upgrades r to a WebSocket and serves the peer until it leaves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "peero: server closed", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1) // under the lock, so that Close cannot start waiting before it
	s.mu.Unlock()
	defer s.wg.Done()

	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "peero: this is a WebRTC signaling server; connect with a WebSocket to ws://HOST/ROOM", http.StatusUpgradeRequired)
		return
	}
	p := &Peer{ID: rand.Text(), Room: r.URL.Path, srv: s}
	p.lastSeen.Store(time.Now().UnixNano())
	// websocket.Handler would refuse clients with no Origin and file:// pages.
	ws := websocket.Server{Handshake: s.checkOrigin, Handler: func(c *websocket.Conn) {
		c.MaxPayloadBytes = s.opts.MaxMessageBytes
		p.conn = c
		s.serve(p)
	}}
	ws.ServeHTTP(timestampingWriter{w, &p.lastSeen}, r)
}

func (s *Server) checkOrigin(_ *websocket.Config, r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.opts.Origins) == 0 || slices.Contains(s.opts.Origins, origin) {
		return nil
	}
	return fmt.Errorf("origin %q not allowed", origin)
}

// serve is p's read loop; it runs on the request's goroutine. It joins p to
// its room, handles its messages in order, and on the way out removes p
// from the room and closes the connection.
func (s *Server) serve(p *Peer) {
	others, err := s.join(p)
	if err != nil {
		p.closeConn(errorMessage(err.Error()))
		return
	}
	ids := peerIDs(others)
	if s.Events.Connection != nil {
		s.Events.Connection(p)
	}
	s.wg.Add(1)
	go p.write() // join queued p's peers list and held the writer back until now
	if s.Events.Peers != nil {
		s.Events.Peers(p, ids)
	}
	announce := []byte(`{"type":"announce","peerId":"` + p.ID + `"}`) // ids need no escaping
	for _, o := range others {
		o.send(announce)
	}
	if s.Events.Announce != nil {
		s.Events.Announce(p)
	}

	var last []byte // a final message for p, sent just before closing
	for {
		var f frame
		err := frameCodec.Receive(p.conn, &f)
		if err == websocket.ErrFrameTooLarge {
			last = errorMessage(fmt.Sprintf("frame larger than %d bytes; closing", s.opts.MaxMessageBytes))
			break
		}
		if err != nil {
			break // EOF, a close frame, a broken connection, or a drop
		}
		if s.Events.Message != nil {
			s.Events.Message(p, f.data)
		}
		m, err := parse(f)
		if err == nil {
			switch m.Type {
			case "ping":
				p.send(pong)
			case "peers":
				ids := peerIDs(s.others(p))
				p.send(peersMessage(p.ID, ids))
				if s.Events.Peers != nil {
					s.Events.Peers(p, ids)
				}
			default: // offer, answer, candidate
				err = s.relay(p, m)
			}
		}
		if err != nil {
			p.send(errorMessage(err.Error()))
		}
	}

	if reason := p.drop(nil); reason != nil && reason != errServerClosing && s.Events.Error != nil {
		s.Events.Error(reason, p)
	}
	remove := []byte(`{"type":"remove","peerId":"` + p.ID + `"}`)
	for _, o := range s.leave(p) {
		o.send(remove)
	}
	if s.Events.Remove != nil {
		s.Events.Remove(p.ID)
	}
	p.closeConn(last)
}

// relay hands m on from p, with p as its sender, to the peer it names or,
// for an offer that names none, to every other peer of the room.
func (s *Server) relay(p *Peer, m message) error {
	msg := relayed(m.Type, p.ID, m.Signal)
	if m.PeerID == "" {
		for _, o := range s.others(p) {
			o.send(msg)
		}
	} else if to := s.find(p, m.PeerID); to != nil {
		to.send(msg)
		if m.Type == "answer" && s.Events.Answer != nil {
			s.Events.Answer(to, p.ID, m.Signal)
		}
	} else {
		return fmt.Errorf("no peer %q in this room", m.PeerID)
	}
	if m.Type == "offer" && s.Events.Offer != nil {
		s.Events.Offer(p, m.Signal)
	}
	return nil
}

// message is a client message that parse has checked.
type message struct {
	Type   string          // "peers", "ping", "offer", "answer" or "candidate"
	PeerID string          // the recipient; "" if absent (an offer to the whole room)
	Signal json.RawMessage // present and not null for offer, answer and candidate
}

// parse checks a frame against the protocol, all but whether PeerID is in
// the sender's room, which only the server can tell.
func parse(f frame) (message, error) {
	var m message
	if f.binary {
		return m, errors.New("binary frames are not accepted; send JSON as text")
	}
	if !utf8.Valid(f.data) {
		return m, errors.New("message is not valid UTF-8")
	}
	// A map, not a struct: encoding/json matches struct fields case-insensitively.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(f.data, &fields); err != nil || fields == nil {
		return m, errors.New("message is not a JSON object")
	}
	typ, ok := jsonString(fields["type"])
	switch {
	case !ok:
		return m, errors.New(`message needs a string field "type"`)
	case typ == "ping" || typ == "peers":
		return message{Type: typ}, nil
	case typ != "offer" && typ != "answer" && typ != "candidate":
		return m, fmt.Errorf("unknown message type %q", typ)
	}
	m = message{Type: typ, Signal: fields["signal"]}
	if m.Signal == nil || string(m.Signal) == "null" {
		return m, fmt.Errorf("%s needs a signal", typ)
	}
	raw, named := fields["peerId"]
	if m.PeerID, ok = jsonString(raw); named && (!ok || m.PeerID == "") {
		return m, errors.New("peerId must be a peer id string")
	}
	if !named && typ != "offer" {
		return m, fmt.Errorf("%s needs a peerId", typ)
	}
	return m, nil
}

// jsonString returns the string raw holds, if it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	return s, len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil
}

// join adds p to its room and queues p's peers list as its first message.
// It returns the others of the room: those p's peers list names, and so
// exactly those to be told of p.
func (s *Server) join(p *Peer) ([]*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errServerClosing
	}
	if s.count >= s.opts.MaxPeers {
		return nil, errServerFull
	}
	room := s.rooms[p.Room]
	if room == nil {
		room = make(map[string]*Peer)
		s.rooms[p.Room] = room
	}
	others := peersIn(room, nil)
	room[p.ID] = p
	s.count++
	// No one else can see p until s.mu is released, so its queue needs no lock yet.
	p.queue = [][]byte{peersMessage(p.ID, peerIDs(others))}
	p.writing = true
	return others, nil
}

// leave removes p from its room and returns the peers left in it.
func (s *Server) leave(p *Peer) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	room := s.rooms[p.Room]
	delete(room, p.ID)
	s.count--
	if len(room) == 0 {
		delete(s.rooms, p.Room)
	}
	return peersIn(room, nil)
}

// others returns the peers of p's room other than p.
func (s *Server) others(p *Peer) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return peersIn(s.rooms[p.Room], p)
}

// find returns the peer of p's room with id, or nil; never p itself.
func (s *Server) find(p *Peer, id string) *Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.rooms[p.Room][id]; o != p {
		return o
	}
	return nil
}

func peersIn(room map[string]*Peer, except *Peer) []*Peer {
	peers := make([]*Peer, 0, len(room))
	for _, o := range room {
		if o != except {
			peers = append(peers, o)
		}
	}
	return peers
}

// send queues msg for p; a nil msg is a WebSocket ping. It never blocks: it
// starts p's writer if none is running, and drops p if more than
// maxQueuedBytes would be waiting for it.
func (p *Peer) send(msg []byte) {
	p.mu.Lock()
	if p.dropped {
		p.mu.Unlock()
		return
	}
	if p.queued+len(msg) > maxQueuedBytes {
		p.mu.Unlock()
		p.drop(errQueueFull)
		return
	}
	p.queue = append(p.queue, msg)
	p.queued += len(msg)
	start := !p.writing
	p.writing = true
	p.mu.Unlock()
	if start {
		p.srv.wg.Add(1) // the caller is counted too, so Close is not done waiting yet
		go p.write()
	}
}

// write is p's writer goroutine. send starts it when p's queue was empty;
// it returns once the queue is empty again or p is dropped. At most one runs
// per peer, so messages arrive in the order they were queued.
func (p *Peer) write() {
	defer p.srv.wg.Done()
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		if len(batch) == 0 || p.dropped {
			p.writing = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()

		n := 0
		for _, msg := range batch {
			p.conn.SetWriteDeadline(time.Now().Add(p.srv.opts.WriteTimeout))
			var err error
			if msg == nil {
				err = pingCodec.Send(p.conn, nil)
			} else {
				_, err = p.conn.Write(msg)
			}
			if err != nil {
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

// drop stops p's traffic: nothing more is queued, and the connection's
// deadlines move to now so that its read loop and writer return at once;
// the read loop then leaves the room and closes the connection. The first
// reason given is kept and returned; nil means a normal leave.
func (p *Peer) drop(reason error) error {
	p.mu.Lock()
	first := !p.dropped
	if first {
		p.dropped, p.reason, p.queue = true, reason, nil
	}
	reason = p.reason
	p.mu.Unlock()
	if first {
		p.conn.SetDeadline(time.Now())
	}
	return reason
}

// closeConn sends last (if not nil) and a close frame, best effort, and closes p's connection.
func (p *Peer) closeConn(last []byte) {
	// x/net's Close waits behind a write in progress. A second is enough for
	// a healthy peer and bounds how long a stalled one can hold up Close.
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if last != nil {
		p.conn.Write(last)
	}
	p.conn.Close()
}

// pingLoop is the server's one pinger, started by New and ended by Close.
// Each PingInterval it pings every peer and drops those from which nothing
// has been read for two intervals. Browsers answer pings by themselves.
func (s *Server) pingLoop() {
	defer s.wg.Done()
	ticker := time.NewTicker(s.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-ticker.C:
			for _, p := range s.all() {
				if now.UnixNano()-p.lastSeen.Load() > int64(2*s.opts.PingInterval) {
					p.drop(errNoSignOfLife)
				} else {
					p.send(nil)
				}
			}
		}
	}
}

func (s *Server) all() []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	peers := make([]*Peer, 0, s.count)
	for _, room := range s.rooms {
		peers = append(peers, peersIn(room, nil)...)
	}
	return peers
}

// Run listens on Options.Port, calls ready (if not nil) with the port it
// got, and serves until Close, which it waits for. It returns nil after
// Close, or the error that stopped it from serving.
func (s *Server) Run(ready func(port string)) error {
	ln, err := net.Listen("tcp", ":"+s.opts.Port)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { // ended by Close, which also ends Serve this way
		<-s.stop
		hs.Close() // leaves hijacked connections alone: Close ends those itself
	}()
	if ready != nil {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ready(port)
	}
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	<-s.done
	return nil
}

// Close stops accepting connections, sends every peer a close frame, waits
// for every goroutine of the server to end, then calls done (if not nil).
// Calling it again waits likewise. It always returns nil.
func (s *Server) Close(done func()) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		for _, p := range s.all() {
			p.drop(errServerClosing)
		}
		s.wg.Wait()
		close(s.done)
	})
	<-s.done
	if done != nil {
		done()
	}
	return nil
}

// frame is one received WebSocket frame.
type frame struct {
	data   []byte
	binary bool
}

// frameCodec receives a frame and whether it was binary, which x/net's
// stock Message codec does not tell.
var frameCodec = websocket.Codec{Unmarshal: func(data []byte, payloadType byte, v any) error {
	*v.(*frame) = frame{data, payloadType != websocket.TextFrame}
	return nil
}}

// pingCodec sends a ping frame. x/net has no ping call, and setting
// Conn.PayloadType while another goroutine writes would be a data race.
var pingCodec = websocket.Codec{Marshal: func(any) ([]byte, byte, error) {
	return nil, websocket.PingFrame, nil
}}

// timestampingWriter hands x/net a connection whose every read records the
// time in seen. x/net handles pongs inside Receive and never shows them, so
// this is how the pinger sees that a quiet peer is still alive.
type timestampingWriter struct {
	http.ResponseWriter
	seen *atomic.Int64
}

func (w timestampingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Keep what the HTTP server had already read, then read from conn itself.
	buffered, _ := rw.Reader.Peek(rw.Reader.Buffered())
	src := io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), conn)
	rw.Reader = bufio.NewReader(timestampingReader{src, w.seen})
	return conn, rw, nil
}

type timestampingReader struct {
	r    io.Reader
	seen *atomic.Int64
}

func (r timestampingReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.seen.Store(time.Now().UnixNano())
	}
	return n, err
}

// relayed builds {"type":T,"peerId":FROM,"signal":S} by hand so that S
// passes through byte for byte: json.Marshal would escape <, > and & in it.
// typ and from need no escaping: they are known types and server ids.
func relayed(typ, from string, signal []byte) []byte {
	b := append(make([]byte, 0, len(signal)+64), `{"type":"`+typ+`","peerId":"`+from+`","signal":`...)
	return append(append(b, signal...), '}')
}

var pong = []byte(`{"type":"pong"}`)

func peersMessage(id string, peers []string) []byte {
	return encode(struct {
		Type  string   `json:"type"`
		ID    string   `json:"id"`
		Peers []string `json:"peers"`
	}{"peers", id, peers})
}

func errorMessage(text string) []byte {
	return encode(struct {
		Type  string `json:"type"`
		Error string `json:"error"`
	}{"error", text})
}

func encode(v any) []byte {
	b, _ := json.Marshal(v) // cannot fail for the server's own messages
	return b
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

	opts := Options{Port: *port, PingInterval: *ping, MaxPeers: *maxPeers}
	if *origins != "" {
		opts.Origins = strings.Split(*origins, ",")
	}
	srv := New(opts)
	srv.Events = Events{
		Connection: func(p *Peer) { slog.Info("join", "peer", p.ID, "room", p.Room) },
		Remove:     func(id string) { slog.Info("leave", "peer", id) },
		Error:      func(err error, p *Peer) { slog.Warn("drop", "peer", p.ID, "room", p.Room, "err", err) },
	}
	if *verbose {
		srv.Events.Offer = func(p *Peer, _ json.RawMessage) { slog.Info("offer", "from", p.ID) }
		srv.Events.Answer = func(p *Peer, from string, _ json.RawMessage) { slog.Info("answer", "from", from, "to", p.ID) }
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() { <-stop; srv.Close(nil) }() // Run returns once Close is done
	if err := srv.Run(func(port string) { slog.Info("peero listening", "port", port) }); err != nil {
		slog.Error("peero", "err", err)
		os.Exit(1)
	}
}
