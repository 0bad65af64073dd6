// Peero is a WebRTC signaling server: it keeps the list of online peers of
// each room and passes signals (SDP offers and answers, ICE candidates)
// between them. All real traffic then flows peer to peer. Run it with
// go run main.go [-port 8080] [-ping 20s] [-max-peers 10000] [-origin https://a.example,…] [-v].
//
// Peers connect with a WebSocket to ws://HOST:8080/ROOM (the path names the
// room) and exchange JSON objects with a string field "type", one a text frame:
//
//	A joins /chat: A <- {"type":"peers","id":"A…","peers":[]}; B joins: B <- {"type":"peers","id":"B…","peers":["A…"]}, A <- {"type":"announce","peerId":"B…"}
//	B -> {"type":"offer","peerId":"A…","signal":{…}}: A <- {"type":"offer","peerId":"B…","signal":{…}}; answers and candidates likewise; B leaves: A <- {"type":"remove","peerId":"B…"}
//
// protocol.md is the full specification. Server is an http.Handler: mount it directly (a mux that cleans paths merges rooms), or call Run.
package main

import (
	"bufio"
	"bytes"
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

// Options configures a Server. A zero field means its default.
type Options struct {
	Port            string        // TCP port Run listens on; default "8080"; "0" picks a free one
	MaxMessageBytes int           // largest frame accepted; default 64 KiB
	MaxPeers        int           // over all rooms; default 10000
	PingInterval    time.Duration // how often peers are pinged; default 20s
	WriteTimeout    time.Duration // how long sending what waits for a peer may take; default 10s
	Origins         []string      // browser Origin values allowed; empty allows any. A request with no Origin header (not a browser) is always allowed.
}

// Events lets a program watch the server, like the Node.js Peero's events. Any hook may be nil; hooks run without the lock,
// maybe on several goroutines at once, and must not call Close. Per peer: Connection, Peers, Announce first; Remove once, last.
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
	ID       string          // assigned by the server: 128 random bits as text, never reused
	Room     string          // the URL path the peer connected to
	conn     *websocket.Conn // for reading, and closing
	raw      net.Conn        // for writing frames: see write
	lastSeen atomic.Int64    // UnixNano of the last bytes read from the peer, pongs included
	wake     chan struct{}   // buffered (1): the writer has something to look at

	mu      sync.Mutex // guards the fields below
	queue   [][]byte   // frames waiting for the writer, oldest first: a header, then its message
	queued  int        // bytes of the messages in queue, headers not counted
	dropped error      // why the peer is leaving, once it is: nothing more is queued then
}

// Server is a Peero server: New, set Events, then call Run or mount it as an http.Handler. Call Close when finished.
type Server struct {
	Events Events // set before serving
	opts   Options
	wg     sync.WaitGroup     // counts read loops and writers, for Close
	stop   context.Context    // done once Close has begun
	cancel context.CancelFunc // called by Close, under mu

	mu    sync.Mutex         // guards the fields below
	rooms map[string][]*Peer // room -> its peers; join and leave replace a room's slice, never change it, so readers may keep one
	count int                // peers in all rooms
}

// New returns a Server with opts, defaults filled in.
func New(opts Options) *Server {
	opts.Port = cmp.Or(opts.Port, "8080")
	opts.MaxMessageBytes = cmp.Or(opts.MaxMessageBytes, 64<<10)
	opts.MaxPeers = cmp.Or(opts.MaxPeers, 10000)
	opts.PingInterval = cmp.Or(opts.PingInterval, 20*time.Second)
	opts.WriteTimeout = cmp.Or(opts.WriteTimeout, 10*time.Second)
	s := &Server{opts: opts, rooms: make(map[string][]*Peer)}
	s.stop, s.cancel = context.WithCancel(context.Background())
	return s
}

// ServeHTTP upgrades r to a WebSocket and serves the peer until it leaves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.stop.Err() != nil {
		http.Error(w, "peero: server closed", http.StatusServiceUnavailable)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "peero: this is a WebRTC signaling server; connect with a WebSocket to ws://HOST/ROOM", http.StatusUpgradeRequired)
		return
	}
	p := &Peer{ID: rand.Text(), Room: r.URL.Path, wake: make(chan struct{}, 1)}
	p.lastSeen.Store(time.Now().UnixNano())
	if o := r.Header.Get("Origin"); o != "" && len(s.opts.Origins) > 0 && !slices.Contains(s.opts.Origins, o) {
		http.Error(w, "peero: origin not allowed", http.StatusForbidden)
		return
	}
	websocket.Server{Handler: func(c *websocket.Conn) { // not websocket.Handler: it refuses no Origin, and file:// pages
		p.conn, c.MaxPayloadBytes = c, s.opts.MaxMessageBytes
		s.serve(p)
	}}.ServeHTTP(&liveConn{ResponseWriter: w, p: p}, r)
}

// serve is p's read loop: it joins p, handles its messages in order, then removes p.
func (s *Server) serve(p *Peer) {
	others, err := s.join(p)
	if err != nil {
		p.conn.Write(errorMessage(err.Error()))
		p.conn.Close()
		return
	}
	defer s.wg.Done()
	if s.Events.Connection != nil {
		s.Events.Connection(p)
	}
	go p.write(s) // join queued p's peers list; it goes out now, after Connection
	if s.Events.Peers != nil {
		s.Events.Peers(p, peerIDs(others))
	}
	sendAll(others, nil, []byte(`{"type":"announce","peerId":"`+p.ID+`"}`)) // ids need no escaping
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
		typ, peerID, signal, err := parse(f)
		switch {
		case err != nil:
			p.send(errorMessage(err.Error()))
		case typ == "ping":
			p.send([]byte(`{"type":"pong"}`))
		case typ == "peers":
			s.mu.Lock()
			ids := slices.DeleteFunc(peerIDs(s.rooms[p.Room]), func(id string) bool { return id == p.ID })
			s.mu.Unlock()
			p.send(peersMessage(p.ID, ids))
			if s.Events.Peers != nil {
				s.Events.Peers(p, ids)
			}
		default: // offer, answer or candidate: relayed with p as the sender
			s.mu.Lock()
			to := s.rooms[p.Room] // join and leave replace it, never change it: it may be used unlocked
			s.mu.Unlock()
			if peerID != "" {
				i := slices.IndexFunc(to, func(o *Peer) bool { return o.ID == peerID && o != p })
				if i < 0 {
					p.send(errorMessage(fmt.Sprintf("no peer %q in this room", peerID)))
					break
				}
				to = to[i : i+1]
			}
			sendAll(to, p, relayed(typ, p.ID, signal))
			if typ == "offer" && s.Events.Offer != nil {
				s.Events.Offer(p, signal)
			}
			if typ == "answer" && s.Events.Answer != nil {
				s.Events.Answer(to[0], p.ID, signal)
			}
		}
	}
	if reason := p.drop(io.EOF); reason != io.EOF && reason != context.Canceled && s.Events.Error != nil {
		s.Events.Error(reason, p)
	}
	sendAll(s.leave(p), nil, []byte(`{"type":"remove","peerId":"`+p.ID+`"}`))
	if s.Events.Remove != nil {
		s.Events.Remove(p.ID)
	}
	p.raw.SetWriteDeadline(time.Now().Add(time.Second)) // x/net's Close waits behind a write in progress
	if last != nil {
		p.conn.Write(last)
	}
	p.conn.Close() // a close frame, best effort
}

// parse checks a frame against the protocol, all but whether peerID is in the room: typ is a client type;
// offer, answer and candidate have a signal, and all but offer a peerID (the recipient).
func parse(f frame) (typ, peerID string, signal json.RawMessage, err error) {
	switch {
	case f.binary:
		return "", "", nil, errors.New("binary frames are not accepted; send JSON as text")
	case !utf8.Valid(f.data):
		return "", "", nil, errors.New("message is not valid UTF-8")
	case !json.Valid(f.data) || bytes.TrimSpace(f.data)[0] != '{':
		return "", "", nil, errors.New("message is not a JSON object")
	}
	fields := map[string][]byte{}
	members(f.data, func(key string, value []byte) { fields[key] = value })
	if typ, err = jsonString(fields, "type", true); err != nil || typ == "ping" || typ == "peers" {
		return typ, "", nil, err
	}
	if typ != "offer" && typ != "answer" && typ != "candidate" {
		return typ, "", nil, fmt.Errorf("unknown message type %q", typ)
	}
	if signal = fields["signal"]; signal == nil || string(signal) == "null" {
		return typ, "", nil, fmt.Errorf("%s needs a signal", typ)
	}
	peerID, err = jsonString(fields, "peerId", typ != "offer")
	return typ, peerID, signal, err
}

// jsonString returns fields[key], a JSON string that is not empty, or "" if it is absent and not required.
func jsonString(fields map[string][]byte, key string, required bool) (s string, err error) {
	raw, ok := fields[key]
	if ok && (raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s == "") || !ok && required {
		err = fmt.Errorf("message needs %q, a string that is not empty", key)
	}
	return s, err
}

// members calls f with the key and raw value of each member of obj, a valid JSON object. It is here for speed:
// json.Unmarshal would scan obj twice (json.Valid is one scan), and it matches struct fields case-insensitively.
func members(obj []byte, f func(key string, value []byte)) {
	depth, start, key := 0, 0, []byte(nil)
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; {
		case c == '"':
			j := i
			for i++; obj[i] != '"'; i++ {
				if obj[i] == '\\' {
					i++ // skip the escaped character
				}
			}
			if depth == 1 && key == nil {
				key = obj[j : i+1]
			}
		case c == ':' && depth == 1:
			start = i + 1
		case c == '{' || c == '[':
			depth++
		case c == ',' || c == '}' || c == ']':
			if depth == 1 && key != nil { // the end of a member
				var k string
				json.Unmarshal(key, &k)
				f(k, bytes.TrimSpace(obj[start:i]))
				key = nil
			}
			if c != ',' {
				depth--
			}
		}
	}
}

// join adds p to its room, queues its peers list, and returns the peers it names.
func (s *Server) join(p *Peer) ([]*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop.Err() != nil {
		return nil, errors.New("server closing")
	}
	if s.count >= s.opts.MaxPeers {
		return nil, errors.New("server full")
	}
	others := s.rooms[p.Room]
	s.rooms[p.Room] = append(slices.Clip(others), p) // Clip: append must copy, not change others
	s.count++
	s.wg.Add(2) // for p's read loop and writer, under s.mu so that Close cannot begin waiting first
	msg := peersMessage(p.ID, peerIDs(others))
	p.queue = [][]byte{header(msg), msg} // no lock: no one else sees p before s.mu is released
	p.nudge()
	return others, nil
}

func (s *Server) leave(p *Peer) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	others := slices.DeleteFunc(slices.Clone(s.rooms[p.Room]), func(o *Peer) bool { return o == p })
	if s.rooms[p.Room], s.count = others, s.count-1; len(others) == 0 {
		delete(s.rooms, p.Room)
	}
	return others
}

func sendAll(peers []*Peer, except *Peer, msg []byte) {
	for _, p := range peers {
		if p != except {
			p.send(msg)
		}
	}
}

// send queues msg for p's writer, or drops p if more than 4 MiB would wait. It never blocks.
func (p *Peer) send(msg []byte) {
	p.mu.Lock()
	full := p.queued+len(msg) > 4<<20 // hundreds of signals waiting are normal; megabytes mean p stopped reading
	if p.dropped == nil && !full {
		p.queue, p.queued = append(p.queue, header(msg), msg), p.queued+len(msg)
	}
	p.mu.Unlock()
	if full {
		p.drop(errors.New("more than 4 MiB waiting to be sent"))
	}
	p.nudge()
}

func (p *Peer) nudge() {
	select {
	case p.wake <- struct{}{}:
	default: // a nudge is pending already
	}
}

// write is p's writer goroutine, from serve to drop: it sends the queue in order, and pings p each interval (drops it if silent for two).
func (p *Peer) write(s *Server) {
	defer s.wg.Done()
	ticker := time.NewTicker(s.opts.PingInterval)
	defer ticker.Stop()
	for {
		var frames net.Buffers
		select {
		case <-p.wake:
		case <-s.stop.Done():
			p.drop(context.Canceled)
		case now := <-ticker.C:
			if now.UnixNano()-p.lastSeen.Load() > int64(2*s.opts.PingInterval) {
				p.drop(errors.New("nothing received for two ping intervals"))
			}
			frames = net.Buffers{{0x89, 0}} // a ping frame: x/net has no ping call
		}
		p.mu.Lock()
		batch, dropped := p.queue, p.dropped != nil
		p.queue, p.queued = nil, 0
		p.mu.Unlock()
		if dropped {
			return
		}
		frames = append(frames, batch...)                           // one writev a batch, no copies, past x/net (its pongs cannot interleave: a net.Conn locks each write)
		p.raw.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)) // per batch, so a drop's deadline sticks
		if _, err := frames.WriteTo(p.raw); err != nil {
			p.drop(fmt.Errorf("send to %s: %w", p.ID, err))
			return
		}
	}
}

// drop ends p's traffic and wakes its read loop and writer. It returns the first reason given.
func (p *Peer) drop(reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped == nil {
		p.dropped, p.queue = reason, nil
		p.conn.SetDeadline(time.Now()) // not I/O: it wakes the blocked read and write
		p.nudge()
	}
	return p.dropped
}

// Run listens on Options.Port, calls ready (if not nil) with the real port, and serves until Close.
func (s *Server) Run(ready func(port string)) error {
	ln, err := net.Listen("tcp", ":"+s.opts.Port)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	context.AfterFunc(s.stop, func() { hs.Close() }) // it leaves hijacked connections to Close
	if ready != nil {
		ready(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	}
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return s.Close(nil) // waits for the Close in progress
}

// Close stops accepting, closes every peer, waits for their goroutines to end, then calls done (if not nil).
func (s *Server) Close(done func()) error {
	s.mu.Lock()
	s.cancel() // every writer then drops its peer
	s.mu.Unlock()
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

// codec receives a frame with its kind, which x/net's Message codec hides.
var codec = websocket.Codec{Unmarshal: func(data []byte, payloadType byte, v any) error {
	*v.(*frame) = frame{data, payloadType != websocket.TextFrame}
	return nil
}}

// header is the header of a server text frame holding msg.
func header(msg []byte) []byte {
	if n := len(msg); n < 126 {
		return []byte{0x81, byte(n)}
	} else if n < 1<<16 {
		return []byte{0x81, 126, byte(n >> 8), byte(n)}
	} else {
		return []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} // n < 4 MiB
	}
}

// liveConn hijacks p's connection and reads it for x/net, storing in p.lastSeen the time of each read: x/net hides
// pongs, yet they show life.
type liveConn struct {
	http.ResponseWriter
	p *Peer
	r io.Reader
}

func (c *liveConn) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil { // Small buffers: the server's 4 KiB reader is under ours, and x/net writes only handshakes, pongs and closes.
		c.p.raw, c.r, rw.Reader, rw.Writer = conn, rw.Reader, bufio.NewReaderSize(c, 64), bufio.NewWriterSize(conn, 256)
	}
	return conn, rw, err
}

func (c *liveConn) Read(b []byte) (int, error) {
	defer func() { c.p.lastSeen.Store(time.Now().UnixNano()) }() // as the read returns: the peer sent something, or is gone
	return c.r.Read(b)
}

// relayed builds {"type":T,"peerId":FROM,"signal":S} by hand: json.Marshal would re-escape S.
func relayed(typ, from string, signal []byte) []byte {
	return append(append(append(make([]byte, 0, len(signal)+64), `{"type":"`+typ+`","peerId":"`+from+`","signal":`...), signal...), '}')
}

func peersMessage(id string, peers []string) []byte {
	list, _ := json.Marshal(peers) // cannot fail for strings
	return []byte(`{"type":"peers","id":"` + id + `","peers":` + string(list) + `}`)
}

func errorMessage(text string) []byte {
	quoted, _ := json.Marshal(text)
	return []byte(`{"type":"error","error":` + string(quoted) + `}`)
}

func peerIDs(peers []*Peer) []string {
	ids := make([]string, len(peers)) // [], not null, for no peers
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
	srv := New(Options{Port: *port, PingInterval: *ping, MaxPeers: *maxPeers, Origins: strings.FieldsFunc(*origins, func(r rune) bool { return r == ',' })})
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
