// Peero is a WebRTC signaling server: it keeps the list of online peers of each room
// and passes signals (SDP offers and answers, ICE candidates) between them. All real
// traffic then flows peer to peer. Run it with go run main.go (-h lists the flags).
//
// Peers connect with a WebSocket to ws://HOST:8080/ROOM (the path names the room) and
// exchange JSON objects, one a text frame. The server sends each peer its id and the
// others' ("peers"), tells the room of arrivals ("announce") and departures ("remove"),
// and relays "offer", "answer" and "candidate" with "peerId" set to the sender.
// protocol.md is the full specification. Server is an http.Handler, or call Run.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

const (
	maxQueuedPerPeer = 4 << 20  // signals for a peer are KiB; MiB mean it stopped reading
	maxHeader        = 12 << 10 // request head bytes for Run; net/http adds 4 KiB; browsers: 1-2
)

// Options configures a Server. A zero field means its default.
type Options struct {
	// Addr is the address Run listens on, such as "127.0.0.1:8080"; default ":" + Port,
	// every interface. Port defaults to "8080"; "0" picks a free port.
	Addr, Port string
	// MaxMessageBytes is the largest frame accepted; default 64 KiB.
	MaxMessageBytes int
	// MaxPeers and MaxRoomPeers are the most peers held at once, over all rooms (default
	// 10000) and in one room (default 1000).
	MaxPeers, MaxRoomPeers int
	// MaxQueuedBytes bounds the bytes waiting to be sent to all peers together; default
	// 256 MiB. A message that would pass it first drops the peer with the most waiting.
	MaxQueuedBytes int
	// PingInterval is how often each peer is pinged (default 20s); a peer silent for two
	// intervals is dropped. WriteTimeout bounds each write to a peer (default 10s).
	PingInterval, WriteTimeout time.Duration
	// Origins lists the browser Origin values allowed (default any); a request without one
	// (not a browser) is always allowed.
	Origins []string
	// TURN lists TURN (and STUN) URLs for every peers message, with a credential from
	// TURNSecret, coturn's static-auth-secret, that works for TURNTTL (default 24h).
	TURN       []string
	TURNSecret string
	TURNTTL    time.Duration
}

// Events lets a program watch the server, like the Node.js Peero's events. Any hook may be
// nil. Hooks run without the server's lock, possibly on several goroutines at once, and must
// not call Close. Connection, Peers and Announce of p come before the hooks for what p sends.
type Events struct {
	// Connection is called when p has joined its room, before its peers list is sent.
	Connection func(p *Peer)
	// Message is called with every message from p, bad ones included, before it is handled.
	Message func(p *Peer, message []byte)
	// Offer is called after p's offer was handed on to its room, or to the peer it named.
	Offer func(p *Peer, signal json.RawMessage)
	// Answer is called after an answer from peerID was handed on to p.
	Answer func(p *Peer, peerID string, signal json.RawMessage)
	// Announce is called after the others of p's room were told p joined.
	Announce func(p *Peer)
	// Peers is called after a peers list was queued for p.
	Peers func(p *Peer, peers []string)
	// Error is called when the server drops p for a fault: a failed or slow read or write,
	// too much waiting, or silence for two ping intervals. Remove follows.
	Error func(err error, p *Peer)
	// Remove is called once, after p left its room and the others were told.
	Remove func(p *Peer)
}

// Peer is one connected client.
type Peer struct {
	ID   string // assigned by the server: 128 random bits as text, never reused
	Room string // the URL path the peer connected to

	conn     *websocket.Conn // x/net's side: reads, pongs, the close frame
	raw      net.Conn        // the writer's side: the queued frames
	lastSeen atomic.Int64    // time since epoch of the last read from the peer, pongs included

	mu      sync.Mutex   // guards the fields below
	queue   net.Buffers  // frames waiting to be written: a header, then its payload
	queued  atomic.Int64 // bytes of the payloads queued or being written; set under mu
	writing bool         // a writer runs, or serve will start one
	dropped error        // why the peer is leaving, once it is; nothing is queued then
}

// Server is a Peero server: New, set Events, then call Run or mount it as an http.Handler
// (not under a mux that cleans paths: that merges rooms). Call Close when finished.
type Server struct {
	Events Events // set before serving
	opts   Options
	wg     sync.WaitGroup     // counts read loops, writers and the pinger, for Close
	stop   context.Context    // done when Close begins
	cancel context.CancelFunc // called by Close
	queued atomic.Int64       // bytes waiting for all peers: queued, or being written

	mu    sync.Mutex         // guards rooms and count
	rooms map[string][]*Peer // room -> its peers: replaced, never changed, so usable unlocked
	count int                // peers in all rooms
}

// New returns a Server with opts, defaults filled in, and starts its pinger.
func New(opts Options) *Server {
	opts.Port = cmp.Or(opts.Port, "8080")
	opts.MaxMessageBytes = cmp.Or(opts.MaxMessageBytes, 64<<10)
	opts.MaxPeers = cmp.Or(opts.MaxPeers, 10000)
	opts.MaxRoomPeers = cmp.Or(opts.MaxRoomPeers, 1000)
	opts.MaxQueuedBytes = cmp.Or(opts.MaxQueuedBytes, 256<<20)
	opts.PingInterval = cmp.Or(opts.PingInterval, 20*time.Second)
	opts.WriteTimeout = cmp.Or(opts.WriteTimeout, 10*time.Second)
	opts.TURNTTL = cmp.Or(opts.TURNTTL, 24*time.Hour)
	s := &Server{opts: opts, rooms: make(map[string][]*Peer)}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.ping()
	return s
}

// ServeHTTP upgrades r to a WebSocket and serves the peer until it leaves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	switch {
	case s.stop.Err() != nil:
		http.Error(w, "peero: server closed", http.StatusServiceUnavailable)
	case !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "peero: this is a WebRTC signaling server; "+
			"connect with a WebSocket to ws://HOST/ROOM", http.StatusUpgradeRequired)
	case !r.ProtoAtLeast(1, 1):
		http.Error(w, "peero: a WebSocket needs HTTP/1.1", http.StatusBadRequest)
	case len(r.RequestURI) > 1024: // the room and query are kept while the peer is, and logged
		http.Error(w, "peero: URI too long", http.StatusRequestURITooLong)
	case origin != "" && len(s.opts.Origins) > 0 && !slices.Contains(s.opts.Origins, origin):
		http.Error(w, "peero: origin not allowed", http.StatusForbidden)
	default:
		p := &Peer{ID: rand.Text(), Room: r.URL.Path}
		p.lastSeen.Store(int64(time.Since(epoch)))
		// Not websocket.Handler, which refuses file:// pages. No subprotocol: Peero has none.
		none := func(c *websocket.Config, _ *http.Request) error { c.Protocol = nil; return nil }
		websocket.Server{Handshake: none, Handler: func(c *websocket.Conn) {
			r.Header = nil // up to 16 KiB, which c would keep as long as the peer stays
			p.conn, c.MaxPayloadBytes = c, s.opts.MaxMessageBytes
			s.serve(p)
		}}.ServeHTTP(&liveConn{ResponseWriter: w, p: p, timeout: s.opts.WriteTimeout}, r)
	}
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
	s.wg.Add(1)
	go s.write(p) // join queued the peers list, and left starting the writer to us
	if s.Events.Peers != nil {
		s.Events.Peers(p, peerIDs(others, nil))
	}
	s.sendAll(others, nil, []byte(`{"type":"announce","peerId":"`+p.ID+`"}`)) // ids: no escaping
	if s.Events.Announce != nil {
		s.Events.Announce(p)
	}
	var last []byte // a final frame for p, sent just before closing
	for {
		var f frame
		if err := codec.Receive(p.conn, &f); err != nil {
			switch err {
			case websocket.ErrFrameTooLarge:
				err = fmt.Errorf("frame larger than %d bytes", s.opts.MaxMessageBytes)
				fallthrough
			case errReservedOpcode:
				msg := errorMessage(err.Error() + "; closing")
				last = append(header(msg), msg...)
			}
			s.drop(p, err) // EOF is a close; the rest faults, or a drop (whose reason stays)
			break
		}
		if s.Events.Message != nil {
			s.Events.Message(p, f.data)
		}
		s.mu.Lock()
		room := s.rooms[p.Room] // replaced, never changed: safe to use unlocked
		s.mu.Unlock()
		typ, peerID, signal, err := parse(f)
		switch {
		case err != nil:
			s.send(p, errorMessage(err.Error()))
		case typ == "ping":
			s.send(p, []byte(`{"type":"pong"}`))
		case typ == "peers":
			ids := peerIDs(room, p)
			s.send(p, s.peersMessage(p, ids))
			if s.Events.Peers != nil {
				s.Events.Peers(p, ids)
			}
		default: // an offer, answer or candidate: relayed with p as the sender
			to := room
			if peerID != "" {
				i := slices.IndexFunc(to, func(o *Peer) bool { return o.ID == peerID && o != p })
				if i < 0 {
					s.send(p, errorMessage(fmt.Sprintf("no peer %q in this room", peerID)))
					break
				}
				to = to[i : i+1]
			}
			s.sendAll(to, p, relayed(typ, p.ID, signal))
			if typ == "offer" && s.Events.Offer != nil {
				s.Events.Offer(p, signal)
			}
			if typ == "answer" && s.Events.Answer != nil {
				s.Events.Answer(to[0], p.ID, signal)
			}
		}
	}
	why := s.drop(p, io.EOF)
	if why != io.EOF && why != context.Canceled && s.Events.Error != nil {
		s.Events.Error(why, p)
	}
	s.sendAll(s.leave(p), nil, []byte(`{"type":"remove","peerId":"`+p.ID+`"}`))
	if s.Events.Remove != nil {
		s.Events.Remove(p)
	}
	p.raw.SetDeadline(time.Now().Add(time.Second))
	p.raw.Write(append(last, 0x88, 2, 0x03, 0xe8)) // the last frame, then a close frame: 1000
	for why != io.EOF && codec.Receive(p.conn, new(frame)) == nil {
	} // if the server closed first, read to the client's close frame: unread bytes would reset
}

// parse checks a frame against all of the protocol but the room: typ is a client type;
// offer, answer and candidate have a signal, and all but offer a peerID (the recipient).
func parse(f frame) (typ, peerID string, signal json.RawMessage, err error) {
	switch {
	case f.binary:
		return "", "", nil, errors.New("binary frames are not accepted; send JSON as text")
	case !utf8.Valid(f.data):
		return "", "", nil, errors.New("message is not valid UTF-8")
	}
	var fields map[string]json.RawMessage // not a struct: its keys would match in any case
	if json.Unmarshal(f.data, &fields) != nil || fields == nil {
		return "", "", nil, errors.New("message is not a JSON object")
	}
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

// jsonString returns fields[key], a JSON string not empty, or "" if absent and not required.
func jsonString(m map[string]json.RawMessage, key string, required bool) (s string, err error) {
	raw, ok := m[key]
	if ok && (raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s == "") || !ok && required {
		err = fmt.Errorf("message needs %q, a string that is not empty", key)
	}
	return s, err
}

// join adds p to its room and queues its peers list, which names the peers it returns.
func (s *Server) join(p *Peer) ([]*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	others := s.rooms[p.Room]
	switch {
	case s.stop.Err() != nil:
		return nil, errors.New("server closing")
	case s.count >= s.opts.MaxPeers:
		return nil, errors.New("server full")
	case len(others) >= s.opts.MaxRoomPeers:
		return nil, errors.New("room full")
	}
	s.rooms[p.Room] = append(slices.Clip(others), p) // Clip: append must copy, not change others
	s.count++
	s.wg.Add(1) // for p's read loop, under mu so that Close cannot begin waiting first
	msg := s.peersMessage(p, peerIDs(others, nil))
	p.queue, p.writing = net.Buffers{header(msg), msg}, true // no lock: unseen yet; not counted
	return others, nil
}

// leave removes p from its room and returns the peers left there.
func (s *Server) leave(p *Peer) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	others := slices.DeleteFunc(slices.Clone(s.rooms[p.Room]), func(o *Peer) bool { return o == p })
	if s.rooms[p.Room], s.count = others, s.count-1; len(others) == 0 {
		delete(s.rooms, p.Room)
	}
	return others
}

// peers returns the peers of every room.
func (s *Server) peers() []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Concat(slices.Collect(maps.Values(s.rooms))...)
}

func (s *Server) sendAll(peers []*Peer, except *Peer, msg []byte) {
	for _, p := range peers {
		if p != except {
			s.send(p, msg)
		}
	}
}

// send queues msg for p (nil: a ping) and starts p's writer if none runs. It never blocks:
// it drops a peer with too much waiting. Its caller is in s.wg, so Close waits for both.
func (s *Server) send(p *Peer, msg []byte) {
	if s.queued.Load()+int64(len(msg)) > int64(s.opts.MaxQueuedBytes) {
		s.dropLargest()
	}
	p.mu.Lock()
	full := p.queued.Load()+int64(len(msg)) > maxQueuedPerPeer
	start := p.dropped == nil && !full && !p.writing
	if p.dropped == nil && !full {
		p.queue, p.writing = append(p.queue, header(msg), msg), true
		p.queued.Add(int64(len(msg)))
		s.queued.Add(int64(len(msg)))
	}
	p.mu.Unlock()
	if full {
		s.drop(p, fmt.Errorf("more than %d MiB waiting to be sent", maxQueuedPerPeer>>20))
	}
	if start {
		s.wg.Add(1)
		go s.write(p)
	}
}

// write is p's writer, from send or serve until p's queue is empty or p is dropped. It
// writes each batch with one system call, past x/net, which takes two for each message.
func (s *Server) write(p *Peer) {
	defer s.wg.Done()
	var written int64 // by the last batch, counted out at the next
	for {
		p.mu.Lock()
		if p.dropped == nil { // else drop counted it all out
			p.queued.Add(-written)
			s.queued.Add(-written)
		}
		batch, n := p.queue, p.queued.Load()
		p.queue, p.writing = nil, len(batch) > 0 && p.dropped == nil
		if !p.writing {
			p.mu.Unlock()
			return
		}
		p.raw.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)) // under mu: a drop's wins
		p.mu.Unlock()
		_, err := p.raw.Write(slices.Concat(batch...)) // one write: frames whole, over TLS too
		if written = n; err != nil {
			s.drop(p, fmt.Errorf("send to %s: %w", p.ID, err))
		}
	}
}

// ping is the pinger, from New to Close: it pings each peer, and drops the silent ones.
func (s *Server) ping() {
	defer s.wg.Done()
	ticker := time.NewTicker(s.opts.PingInterval) // collected when unused: no Stop needed
	for {
		select {
		case <-s.stop.Done():
			return
		case now := <-ticker.C:
			for _, p := range s.peers() {
				if int64(now.Sub(epoch))-p.lastSeen.Load() > int64(2*s.opts.PingInterval) {
					s.drop(p, errors.New("nothing received for two ping intervals"))
				} else {
					s.send(p, nil)
					runtime.Gosched() // let its writer end: 10,000 at once would each hold a stack
				}
			}
		}
	}
}

// drop ends p's traffic: its read loop removes it, its writer empties its queue. It returns
// the first reason.
func (s *Server) drop(p *Peer, reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped == nil {
		p.dropped = reason
		s.queued.Add(-p.queued.Swap(0)) // the writer frees it soon; dropLargest passes p over
		p.conn.SetDeadline(time.Now())  // not I/O: it wakes the blocked read, and the writer
	}
	return p.dropped
}

// dropLargest drops the peer with the most waiting, to keep what waits for all under the bound.
func (s *Server) dropLargest() {
	waiting := func(a, b *Peer) int { return cmp.Compare(a.queued.Load(), b.queued.Load()) }
	if ps := s.peers(); len(ps) > 0 {
		s.drop(slices.MaxFunc(ps, waiting), errors.New("the most waiting, past the bound for all"))
	}
}

// Run listens on Options.Addr, calls ready (if not nil) with the port, and serves until Close.
func (s *Server) Run(ready func(port string)) error {
	ln, err := net.Listen("tcp", cmp.Or(s.opts.Addr, ":"+s.opts.Port))
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeader}
	context.AfterFunc(s.stop, func() { hs.Close() }) // it leaves hijacked connections to Close
	if ready != nil {
		ready(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	}
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return s.Close() // waits for the Close in progress
}

// Close closes every peer with a close frame, and returns when the goroutines of every peer
// that joined, and the pinger's, have ended.
func (s *Server) Close() error {
	s.cancel() // no join after it; those before are in peers
	for _, p := range s.peers() {
		s.drop(p, context.Canceled)
	}
	s.wg.Wait()
	return nil
}

type frame struct {
	data   []byte
	binary bool
}

var errReservedOpcode = errors.New("reserved WebSocket opcode")
var epoch = time.Now() // for lastSeen: time.Since(epoch) is monotonic, unlike the wall clock

// codec receives a frame, a message with its kind, which x/net's Message codec hides.
var codec = websocket.Codec{Unmarshal: func(data []byte, opcode byte, v any) error {
	if opcode != websocket.TextFrame && opcode != websocket.BinaryFrame {
		return errReservedOpcode // x/net would pass it on as binary
	}
	*v.(*frame) = frame{data, opcode == websocket.BinaryFrame}
	return nil
}}

// header is the header of a text frame holding msg, or of a ping (x/net has no call) if nil.
func header(msg []byte) []byte {
	switch n := len(msg); {
	case msg == nil:
		return []byte{0x89, 0}
	case n < 126:
		return []byte{0x81, byte(n)}
	case n < 1<<16:
		return []byte{0x81, 126, byte(n >> 8), byte(n)}
	default: // n < 4 GiB
		return []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
}

// liveConn hijacks p's connection for x/net. A read stores the time in p.lastSeen: x/net
// hides pongs, yet they show life. A write (x/net's: the handshake, pongs) sets a deadline
// for itself, so that no deadline set for an earlier write can fail it.
type liveConn struct {
	http.ResponseWriter
	p       *Peer
	r       io.Reader
	timeout time.Duration
}

func (c *liveConn) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil { // small buffers: net/http's 4 KiB reader is below ours
		c.p.raw, c.r = conn, rw.Reader
		rw.Reader, rw.Writer = bufio.NewReaderSize(c, 64), bufio.NewWriterSize(c, 256)
	}
	return conn, rw, err
}

func (c *liveConn) Read(b []byte) (int, error) {
	defer func() { c.p.lastSeen.Store(int64(time.Since(epoch))) }() // as the read returns
	return c.r.Read(b)
}

func (c *liveConn) Write(b []byte) (int, error) {
	c.p.raw.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.p.raw.Write(b)
}

// relayed builds {"type":T,"peerId":FROM,"signal":S}; json.Marshal would re-escape S.
func relayed(typ, from string, signal []byte) []byte {
	msg := append(make([]byte, 0, len(signal)+64), `{"type":"`+typ+`","peerId":"`+from...)
	return append(append(append(msg, `","signal":`...), signal...), '}')
}

// peersMessage lists ids for p, with a fresh TURN credential if configured.
func (s *Server) peersMessage(p *Peer, ids []string) []byte {
	list, _ := json.Marshal(ids) // cannot fail for strings, nor below
	msg := `{"type":"peers","id":"` + p.ID + `","peers":` + string(list)
	if len(s.opts.TURN) > 0 { // an RTCIceServer, for new RTCPeerConnection({iceServers})
		user := fmt.Sprint(time.Now().Add(s.opts.TURNTTL).Unix(), ":", p.ID)
		urls, _ := json.Marshal(s.opts.TURN)
		msg += `,"iceServers":[{"urls":` + string(urls) + `,"username":"` + user +
			`","credential":"` + turnCredential(s.opts.TURNSecret, user) + `"}]`
	}
	return []byte(msg + "}")
}

// turnCredential is username's password in coturn's use-auth-secret: base64(HMAC-SHA1).
func turnCredential(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func errorMessage(text string) []byte {
	quoted, _ := json.Marshal(text)
	return []byte(`{"type":"error","error":` + string(quoted) + `}`)
}

// peerIDs returns the ids of peers but one; [], not null, for none.
func peerIDs(peers []*Peer, except *Peer) []string {
	ids := make([]string, 0, len(peers))
	for _, p := range peers {
		if p != except {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

func main() {
	addr := flag.String("addr", "", "`host:port` to listen on (default every interface, at -port)")
	port := flag.String("port", cmp.Or(os.Getenv("PORT"), "8080"), "TCP port (default $PORT, 8080)")
	ping := flag.Duration("ping", 20*time.Second, "ping interval; a peer silent for two is dropped")
	origins := flag.String("origin", "", "comma-separated browser origins allowed (default any)")
	maxPeers := flag.Int("max-peers", 10000, "most peers at once, over all rooms")
	maxRoom := flag.Int("max-room-peers", 1000, "most peers in one room")
	maxQueued := flag.Int("max-queued-mib", 256, "MiB waiting to be sent, over all peers")
	turn := flag.String("turn", "", "comma-separated TURN URLs for peers, with $PEERO_TURN_SECRET")
	turnTTL := flag.Duration("turn-ttl", 24*time.Hour, "how long a TURN credential works")
	flag.Parse()
	secret := os.Getenv("PEERO_TURN_SECRET") // not a flag: flags show in ps
	if (*turn == "") != (secret == "") {
		fmt.Fprintln(os.Stderr, "peero: -turn needs $PEERO_TURN_SECRET, and the other way round")
		os.Exit(2)
	}
	list := func(s string) []string { return strings.Fields(strings.ReplaceAll(s, ",", " ")) }
	srv := New(Options{Addr: *addr, Port: *port, PingInterval: *ping, Origins: list(*origins),
		MaxPeers: *maxPeers, MaxRoomPeers: *maxRoom, MaxQueuedBytes: *maxQueued << 20,
		TURN: list(*turn), TURNSecret: secret, TURNTTL: *turnTTL})
	srv.Events = Events{
		Connection: func(p *Peer) { slog.Info("join", "peer", p.ID, "room", p.Room) },
		Remove:     func(p *Peer) { slog.Info("leave", "peer", p.ID, "room", p.Room) },
		Error:      func(err error, p *Peer) { slog.Warn("drop", "peer", p.ID, "err", err) },
	}
	stop, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(stop, func() { slog.Info("closing", "peers", len(srv.peers())); srv.Close() })
	err := srv.Run(func(port string) { slog.Info("peero listening", "port", port, "addr", *addr) })
	if errors.Is(err, syscall.EADDRINUSE) {
		err = fmt.Errorf("%w; pick another port with -port, or an address with -addr", err)
	}
	if err != nil {
		slog.Error("peero", "err", err)
		os.Exit(1)
	}
}
