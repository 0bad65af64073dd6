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
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// Limits that Options does not set.
const (
	maxHeader    = 12 << 10    // request head bytes for Run; net/http adds 4 KiB; browsers: 1-2
	maxURI       = 1024        // the room is kept while the peer is, and logged
	readBuffer   = 2 << 10     // per peer: one read takes in a typical signal, header and all
	sendBuffer   = 64 << 10    // per peer, in the kernel: see Hijack
	closeTimeout = time.Second // to write what is left and the close frame, then read the reply
)

// What may wait to be sent to a peer, in frames of the largest size (MaxMessageBytes).
const (
	behind  = 4  // a peer with more queued behind its write is behind: its sole sender waits
	tooMuch = 64 // a peer with more waiting has stopped reading: it is dropped
)

// WebSocket framing (RFC 6455, section 5.2): the bits and opcodes Peero reads and writes.
const (
	finBit  = 0x80 // byte 0: the last frame of a message
	rsvBits = 0x70 // byte 0: for extensions, and Peero negotiates none
	maskBit = 0x80 // byte 1: set in every frame a client sends

	opContinuation, opText, opBinary = 0x0, 0x1, 0x2 // data frames
	opClose, opPing, opPong          = 0x8, 0x9, 0xA // control frames

	maxControl         = 125      // the most payload a control frame has, and byte 1 can hold
	length16, length64 = 126, 127 // byte 1: a length of 16 bits follows, or of 64 bits
)

// Close status codes (RFC 6455, section 7.4.1; 1013 is in IANA's registry).
const (
	closeNormal        = 1000 // the reply to the client's close
	closeGoingAway     = 1001 // the server is shutting down
	closeProtocolError = 1002 // a frame RFC 6455 forbids
	closeTooBig        = 1009 // a frame larger than MaxMessageBytes
	closeTryAgainLater = 1013 // the server or the room is full
)

// Options configures a Server. A zero field means its default.
type Options struct {
	// Addr is the address Run listens on, such as "127.0.0.1:8080"; default ":" + Port,
	// every interface. Port defaults to "8080"; "0" picks a free port.
	Addr, Port string
	// MaxMessageBytes is the largest frame accepted; default 64 KiB. A peer with more than
	// 64 frames of that size waiting to be sent to it is dropped: it stopped reading.
	MaxMessageBytes int
	// MaxPeers and MaxRoomPeers are the most peers held at once, over all rooms (default
	// 10000) and in one room (default 1000).
	MaxPeers, MaxRoomPeers int
	// MaxQueuedBytes bounds the bytes waiting to be sent to all peers together; default
	// 256 MiB. A message that would pass it first drops the peer with the most waiting.
	MaxQueuedBytes int
	// PingInterval is how often each peer is pinged (default 20s); a peer silent for two
	// intervals is dropped. WriteTimeout bounds each write to a peer (default 10s, at most
	// PingInterval); once a close frame is queued, what is left must be written in a second.
	PingInterval, WriteTimeout time.Duration
	// Origins lists the browser Origin values allowed (default any); a request without one
	// (not a browser) is always allowed.
	Origins []string
	// TURN lists TURN (and STUN) URLs for every peers message, with a credential from
	// TURNSecret, coturn's static-auth-secret, that works for TURNTTL (default 24h).
	TURN       []string
	TURNSecret string
	TURNTTL    time.Duration
	// Secret signs the resume token in every peers message: a peer that comes back to its
	// room with it before ResumeTTL (default 24h) has passed gets its id back. Default: a
	// random one, which works until the process ends; give every instance the same.
	Secret    string
	ResumeTTL time.Duration
}

// Events lets a program watch the server, like the Node.js Peero's events. Any hook may be
// nil. Hooks run without the server's lock, on the goroutine that serves the peer whose doing
// they report (the sender, for Offer and Answer), so that the hooks of what one peer does come
// in order: Connection, Peers and Announce of p before those for what p sends. While a hook
// runs nothing more is read from that peer, and one that blocks for two ping intervals gets
// it dropped as silent: hand slow work to a goroutine of your own. Hooks must not call Close.
type Events struct {
	// Connection is called when p has joined its room and its peers list is queued. If p
	// resumed the id of a peer the server still held, p took that peer's place: the room is
	// not told, Announce is not called, and the old peer gets Remove when it has gone.
	Connection func(p *Peer)
	// Message is called with every message from p, bad ones included, before it is handled.
	Message func(p *Peer, message []byte)
	// Offer is called after p's offer was handed on to its room, or to the peer it named.
	Offer func(p *Peer, signal json.RawMessage)
	// Answer is called after an answer from peerID was handed on to p.
	Answer func(p *Peer, peerID string, signal json.RawMessage)
	// Announce is called after the others of p's room were told p joined.
	Announce func(p *Peer)
	// Peers is called after a peers list, of the ids in peers, was queued for p.
	Peers func(p *Peer, peers []string)
	// Error is called when p leaves for a fault: a frame the server does not accept, or the
	// server dropping p for a failed read or write, a write slower than WriteTimeout, too
	// much waiting, or silence for two ping intervals. Remove follows.
	Error func(err error, p *Peer)
	// Remove is called once, after p left its room and the others were told (unless p was
	// replaced: see Connection).
	Remove func(p *Peer)
}

// Peer is one connected client.
type Peer struct {
	ID   string // assigned by the server: 128 random bits as text, or resumed with a token
	Room string // the URL path the peer connected to

	conn     net.Conn      // written only by p's writer; closed by finish
	in       *bufio.Reader // what the client sends; read only by p's read loop
	lastSeen atomic.Int64  // time since epoch of the last frame from p, pongs included

	mu      sync.Mutex     // guards the fields below
	queue   net.Buffers    // frames waiting to be written: a header, then its payload
	queued  atomic.Int64   // bytes in queue or being written; changed under mu, read without
	writing bool           // p's writer runs: queue starts it, and it ends when queue is empty
	from    *Peer          // whose relayed messages are in queue: one peer's, several, or none
	writer  sync.WaitGroup // for p's writer to end, before finish closes conn
	drained sync.Cond      // broadcast when queue is taken or mixed, or p closes: for throttle
	closed  bool           // a close frame is queued, or p was dropped: nothing is queued now
	dropped bool           // p was cut off: what waited was discarded, and nothing is written
	fault   error          // why p was dropped, or what was wrong with its frames
}

// Server is a Peero server: New, set Events, then call Run or mount it as an http.Handler
// (not under a mux that cleans paths: that merges rooms). Call Close when finished.
type Server struct {
	Events Events // set before serving
	opts   Options
	wg     sync.WaitGroup     // counts the pinger, and each peer from join to its socket's close
	stop   context.Context    // done when Close begins
	cancel context.CancelFunc // called by Close
	queued atomic.Int64       // bytes waiting for all peers: the sum of their queued

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
	opts.WriteTimeout = min(cmp.Or(opts.WriteTimeout, 10*time.Second), opts.PingInterval)
	opts.TURNTTL = cmp.Or(opts.TURNTTL, 24*time.Hour)
	opts.Secret = cmp.Or(opts.Secret, rand.Text())
	opts.ResumeTTL = cmp.Or(opts.ResumeTTL, 24*time.Hour)
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
	case len(r.RequestURI) > maxURI:
		http.Error(w, "peero: URI too long", http.StatusRequestURITooLong)
	case origin != "" && len(s.opts.Origins) > 0 && !slices.Contains(s.opts.Origins, origin):
		http.Error(w, "peero: origin not allowed", http.StatusForbidden)
	default:
		p := &Peer{ID: s.resume(r.URL.Path, r.URL.Query().Get("resume")), Room: r.URL.Path}
		p.lastSeen.Store(int64(time.Since(epoch)))
		p.drained.L = &p.mu
		// x/net does the handshake; then Peero reads and writes frames itself (readFrame).
		// Not websocket.Handler, which refuses file:// pages. No subprotocol: Peero has none.
		none := func(c *websocket.Config, _ *http.Request) error { c.Protocol = nil; return nil }
		handled := false
		handler := func(*websocket.Conn) { handled = true; s.start(p) }
		websocket.Server{Handshake: none, Handler: handler}.ServeHTTP(hijacker{w, p}, r)
		if p.conn != nil && !handled { // x/net refused the handshake, and keepOpen kept it
			p.conn.Close()
		}
	}
}

// hijacker takes the connection from net/http for x/net's handshake, and keeps it for p.
type hijacker struct {
	http.ResponseWriter
	p *Peer
}

// Hijack gives p the connection, with what net/http read past the request, and gives x/net
// one it cannot close: x/net closes it when its handler returns, while p lives on.
func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	early, _ := rw.Reader.Peek(rw.Reader.Buffered()) // frames sent right behind the request
	h.p.conn = conn
	h.p.in = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), conn), readBuffer)
	if tcp, ok := conn.(*net.TCPConn); ok {
		// Else the kernel lets each peer that stops reading hold up to 4 MiB (tcp_wmem):
		// for 290 of them 1 GiB, which the server spent seconds filling, everyone waiting.
		tcp.SetWriteBuffer(sendBuffer)
	}
	return keepOpen{conn}, rw, nil
}

// keepOpen is a connection whose Close does nothing: finish closes it.
type keepOpen struct{ net.Conn }

func (keepOpen) Close() error { return nil }

// start runs on net/http's goroutine once the handshake is done: it joins p, tells the room
// and hands p's read loop to a goroutine of its own. net/http's goroutine then ends, with the
// stack that the request, the handshake and the hooks grew; an idle peer costs only the new
// goroutine's, which stays small.
func (s *Server) start(p *Peer) {
	others, replaced, refused := s.join(p)
	if refused != nil {
		s.close(p, refused.code, errorMessage(refused.text), nil)
		s.read(p) // to the client's close frame
		s.finish(p)
		return
	}
	if replaced != nil {
		s.close(replaced, closeNormal, errorMessage("replaced: this id connected again"), nil)
	}
	if s.Events.Connection != nil {
		s.Events.Connection(p)
	}
	if s.Events.Peers != nil {
		s.Events.Peers(p, peerIDs(others, nil))
	}
	if replaced == nil && s.Events.Announce != nil { // else p's id never left the room
		s.Events.Announce(p)
	}
	go s.serve(p)
}

// serve is p's read loop, on a goroutine of its own from start: it handles p's messages in
// order until the connection ends, then removes p and closes its connection.
func (s *Server) serve(p *Peer) {
	defer s.wg.Done()
	err := s.read(p)
	var bad *closeError
	switch {
	case errors.As(err, &bad):
		s.close(p, bad.code, errorMessage(bad.text+"; closing"), err)
	case err == io.EOF: // the client closed: the reply, unless the server closed first
		s.close(p, closeNormal, nil, nil)
	default: // the connection failed or was cut off, or the client did not answer a close
		s.drop(p, err)
	}
	p.mu.Lock()
	fault := p.fault
	p.mu.Unlock()
	s.leave(p)
	if fault != nil && s.Events.Error != nil {
		s.Events.Error(fault, p)
	}
	if s.Events.Remove != nil {
		s.Events.Remove(p)
	}
	if bad != nil && bad.code != closeTooBig { // else the rest of that frame was not read
		s.read(p) // to the client's close frame
	}
	s.finish(p)
}

// read reads p's frames, answers its pings and handles its messages until the client closes
// (io.EOF) or the connection fails (the error). Once the server has closed p, it handles
// nothing more, and reads on only to the client's close frame.
func (s *Server) read(p *Peer) error {
	var fragmented byte // the kind of message a continuation frame would continue, if any
	for {
		fin, op, payload, err := readFrame(p.in, s.opts.MaxMessageBytes)
		if err != nil {
			return err
		}
		p.lastSeen.Store(int64(time.Since(epoch)))
		if op == opClose {
			return io.EOF
		}
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		switch {
		case closed: // waiting for the client's close frame
		case op == opPing:
			s.send(p, frame(opPong, payload), nil)
		case op == opPong: // a sign of life, stored above
		case op == opContinuation && fragmented == 0:
			return &closeError{closeProtocolError, "reserved WebSocket opcode"}
		case op == opContinuation: // each fragment is taken as a message of its own
			s.handle(p, fragmented == opBinary, payload)
		case fragmented != 0:
			return &closeError{closeProtocolError, "a new message inside a fragmented one"}
		default: // text or binary: readFrame refuses the rest
			s.handle(p, op == opBinary, payload)
		}
		switch {
		case op >= opClose: // a control frame may come between fragments
		case fin:
			fragmented = 0
		case op != opContinuation:
			fragmented = op
		}
	}
}

// A closeError ends a connection with an error message, then a close frame of code: for a
// frame Peero does not accept, or a peer that cannot join.
type closeError struct {
	code int
	text string
}

func (e *closeError) Error() string { return e.text }

// readFrame reads one frame from a client (RFC 6455, section 5.2) and returns it, its payload
// unmasked. It refuses frames larger than limit, without reading them, and after reading it
// whole, any other frame the RFC says fails the connection; fragments are the caller's.
func readFrame(r *bufio.Reader, limit int) (fin bool, op byte, payload []byte, err error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return false, 0, nil, err
	}
	fin, op = head[0]&finBit != 0, head[0]&0x0f
	n := uint64(head[1] &^ maskBit)
	if n == length16 || n == length64 { // the length is in the next 2 bytes, or 8
		var length [8]byte
		size := 8
		if n == length16 {
			size = 2
		}
		if _, err := io.ReadFull(r, length[8-size:]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(length[:])
	}
	if n > uint64(limit) { // refused unread: reading it is what the limit saves
		text := fmt.Sprintf("frame larger than %d bytes", limit)
		return false, 0, nil, &closeError{closeTooBig, text}
	}
	var key [4]byte
	masked := head[1]&maskBit != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return false, 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return false, 0, nil, err
	}
	if err := fault(head, n); err != nil { // once read whole: the next read starts at a frame
		return false, 0, nil, err
	}
	for i := range payload {
		payload[i] ^= key[i%4]
	}
	return fin, op, payload, nil
}

// fault returns what is wrong with a frame, of header head and payload length n, that RFC
// 6455 says fails the connection, or nil.
func fault(head [2]byte, n uint64) error {
	fin, op := head[0]&finBit != 0, head[0]&0x0f
	switch {
	case head[1]&maskBit == 0:
		return &closeError{closeProtocolError, "unmasked frame"}
	case head[0]&rsvBits != 0:
		return &closeError{closeProtocolError, "reserved bits set, with no extension"}
	case op > opBinary && op < opClose || op > opPong:
		return &closeError{closeProtocolError, "reserved WebSocket opcode"}
	case op >= opClose && (!fin || n > maxControl):
		return &closeError{closeProtocolError, "control frame fragmented or too long"}
	}
	return nil
}

// handle acts on one message from p: it replies to ping, peers and mistakes, and relays
// offers, answers and candidates.
func (s *Server) handle(p *Peer, binary bool, message []byte) {
	if s.Events.Message != nil {
		s.Events.Message(p, message)
	}
	typ, peerID, signal, err := parse(binary, message)
	switch {
	case err != nil:
		s.send(p, text(errorMessage(err.Error())), nil)
	case typ == "ping":
		s.send(p, text(`{"type":"pong"}`), nil)
	case typ == "peers":
		ids := peerIDs(s.room(p.Room), p)
		s.send(p, text(s.peersMessage(p, ids)), nil)
		if s.Events.Peers != nil {
			s.Events.Peers(p, ids)
		}
	default:
		s.relay(p, typ, peerID, signal)
	}
}

// relay hands an offer, answer or candidate from p on to the peer it names, or an offer
// without one to all of p's room, with p as the sender.
func (s *Server) relay(p *Peer, typ, peerID string, signal json.RawMessage) {
	to := s.room(p.Room)
	if !slices.Contains(to, p) { // replaced by a peer that resumed its id, while p's read went on
		return
	}
	if peerID != "" {
		i := slices.IndexFunc(to, func(o *Peer) bool { return o.ID == peerID && o != p })
		if i < 0 {
			s.send(p, text(errorMessage(fmt.Sprintf("no peer %q in this room", peerID))), nil)
			return
		}
		to = to[i : i+1]
	}
	f := text(relayed(typ, p.ID, signal))
	for _, o := range to {
		if o != p {
			s.send(o, f, p)
		}
	}
	s.throttle(p, to)
	if typ == "offer" && s.Events.Offer != nil {
		s.Events.Offer(p, signal)
	}
	if typ == "answer" && s.Events.Answer != nil {
		s.Events.Answer(to[0], p.ID, signal)
	}
}

// parse checks a message against all of the protocol but the room: typ is a client type;
// offer, answer and candidate have a signal, and all but offer a peerID (the recipient).
func parse(binary bool, message []byte) (typ, peerID string, signal json.RawMessage, err error) {
	switch {
	case binary:
		return "", "", nil, errors.New("binary frames are not accepted; send JSON as text")
	case !utf8.Valid(message):
		return "", "", nil, errors.New("message is not valid UTF-8")
	case !json.Valid(message) || bytes.TrimSpace(message)[0] != '{':
		return "", "", nil, errors.New("message is not a JSON object")
	}
	rawType, rawPeerID, signal := members(message)
	if typ, err = jsonString(rawType, "type", true); err != nil || typ == "ping" || typ == "peers" {
		return typ, "", nil, err
	}
	if typ != "offer" && typ != "answer" && typ != "candidate" {
		return typ, "", nil, fmt.Errorf("unknown message type %q", typ)
	}
	if signal == nil || string(signal) == "null" {
		return typ, "", nil, fmt.Errorf("%s needs a signal", typ)
	}
	peerID, err = jsonString(rawPeerID, "peerId", typ != "offer")
	return typ, peerID, signal, err
}

// jsonString returns raw, the value of the member key, as a JSON string that is not empty,
// or "" if raw is nil (no such member) and not required.
func jsonString(raw []byte, key string, required bool) (string, error) {
	var s string
	switch {
	case raw == nil && !required:
		return "", nil
	case raw == nil || raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s == "":
		return "", fmt.Errorf("message needs %q, a string that is not empty", key)
	}
	return s, nil
}

// members returns the values of the members type, peerId and signal of obj, a valid JSON
// object (of each name the last, as encoding/json takes it), or nil for those it lacks. It
// scans obj once, where json.Unmarshal scans twice, and matches names exactly, where a struct
// would not.
func members(obj []byte) (typ, peerID, signal []byte) {
	depth, start := 0, 0
	var key []byte // the name of the member being read, quoted
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; {
		case c == '"':
			j := i
			for i++; obj[i] != '"'; i++ {
				if obj[i] == '\\' {
					i++ // the escaped character
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
				var name string
				json.Unmarshal(key, &name) // a valid string: obj is valid
				value := bytes.TrimSpace(obj[start:i])
				switch name {
				case "type":
					typ = value
				case "peerId":
					peerID = value
				case "signal":
					signal = value
				}
				key = nil
			}
			if c != ',' {
				depth--
			}
		}
	}
	return typ, peerID, signal
}

// join adds p to its room, queues its peers list, which names the others it returns, and
// tells them p joined. If p resumed the id of a peer still in the room, p takes its place
// unannounced: join returns that peer.
func (s *Server) join(p *Peer) (others []*Peer, replaced *Peer, refused *closeError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	others = s.rooms[p.Room]
	i := slices.IndexFunc(others, func(o *Peer) bool { return o.ID == p.ID })
	switch {
	case s.stop.Err() != nil:
		return nil, nil, &closeError{closeGoingAway, "server closing"}
	case i >= 0: // most likely, its connection has died and the server has not noticed yet
		replaced = others[i]
		others = slices.Delete(slices.Clone(others), i, i+1)
		s.count--
	case s.count >= s.opts.MaxPeers:
		return nil, nil, &closeError{closeTryAgainLater, "server full"}
	case len(others) >= s.opts.MaxRoomPeers:
		return nil, nil, &closeError{closeTryAgainLater, "room full"}
	}
	s.rooms[p.Room] = append(slices.Clip(others), p) // Clip: append must copy, not change others
	s.count++
	s.wg.Add(1) // under mu, so that Close cannot begin waiting first
	// p's peers list is queued first, before s.mu is released: nothing can come before it.
	s.tell([]*Peer{p}, text(s.peersMessage(p, peerIDs(others, nil))))
	if replaced == nil {
		s.tell(others, text(`{"type":"announce","peerId":"`+p.ID+`"}`)) // no escaping
	}
	return others, replaced, nil
}

// leave removes p from its room and tells the others, unless a peer that resumed its id took
// its place.
func (s *Server) leave(p *Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.rooms[p.Room], p)
	if i < 0 { // replaced: for the room, p's id never left
		return
	}
	others := slices.Delete(slices.Clone(s.rooms[p.Room]), i, i+1)
	s.rooms[p.Room] = others
	if len(others) == 0 {
		delete(s.rooms, p.Room)
	}
	s.count--
	s.tell(others, text(`{"type":"remove","peerId":"`+p.ID+`"}`))
}

// tell queues f for each of peers, under s.mu: what a room is told of who joins and leaves is
// then in the order they did, even for an id that leaves and resumes at once. Unlike send it
// drops no one (these frames are small): a peer with too much waiting is dropped by the next
// relayed message, or ping, sent to it.
func (s *Server) tell(peers []*Peer, f net.Buffers) {
	for _, o := range peers {
		o.mu.Lock()
		s.queue(o, f, nil)
		o.mu.Unlock()
	}
}

// room returns the peers of a room, in a slice that is never changed.
func (s *Server) room(path string) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[path]
}

// peers returns the peers of every room.
func (s *Server) peers() []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Concat(slices.Collect(maps.Values(s.rooms))...)
}

// send queues frame f for p. It never waits on I/O: a peer with too much waiting is dropped,
// and so is the one with the most waiting when what waits for all would pass MaxQueuedBytes.
// (Senders at once to a peer near its bound may each pass it by a frame: it is read unlocked.)
func (s *Server) send(p *Peer, f net.Buffers, from *Peer) {
	n := size(f)
	if s.queued.Load()+n > int64(s.opts.MaxQueuedBytes) {
		s.evict(n)
	}
	if p.queued.Load()+n > tooMuch*int64(s.opts.MaxMessageBytes) {
		s.drop(p, fmt.Errorf("more than %d frames of the largest size waiting", tooMuch))
		return
	}
	p.mu.Lock()
	s.queue(p, f, from)
	p.mu.Unlock()
}

// queue puts f after p's other frames, unless p is closed, and starts p's writer if none
// runs. p.mu is held.
func (s *Server) queue(p *Peer, f net.Buffers, from *Peer) {
	if p.closed {
		return
	}
	switch {
	case from == nil || from == p.from: // the server's own frames, or more of the same
	case p.from == nil:
		p.from = from
	default:
		p.from = several
		p.drained.Broadcast() // a sender that throttle holds for p is no longer the only one
	}
	p.queue = append(p.queue, f...)
	s.account(p, size(f))
	if !p.writing {
		p.writing = true
		p.writer.Add(1)
		go s.write(p)
	}
}

// write is p's writer, started by queue, and the only goroutine that writes to p.conn: it
// writes what waits, in order, a batch at a time, and ends when nothing does. A batch is one
// writev system call for up to 1024 buffers (a header or a payload each).
func (s *Server) write(p *Peer) {
	defer p.writer.Done()
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		if len(batch) == 0 {
			p.writing = false
			p.mu.Unlock()
			return
		}
		p.from = nil
		p.drained.Broadcast() // nothing waits behind the write now: throttle lets senders go
		if !p.closed {        // once it is, close or drop has set the deadline for the rest
			p.conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		}
		p.mu.Unlock()
		n := size(batch)
		// Over TLS each buffer is a write, and a record, of its own; but no other goroutine
		// writes in between, so frames stay whole.
		_, err := batch.WriteTo(p.conn)
		p.mu.Lock()
		if !p.dropped { // else drop counted it out
			s.account(p, -n)
		}
		p.mu.Unlock()
		if err != nil {
			s.drop(p, fmt.Errorf("send to %s: %w", p.ID, err))
		}
	}
}

// throttle stops the read loop of p, the sender of a message to peers, while one of them is
// behind with p's messages, and only p's, waiting for the write in progress: the cost of a
// flood falls on the peer that floods, not on those that read it. A peer behind with several
// senders' messages waiting is not waited for: it may have stopped reading, and is dropped
// once it has too much waiting. One that holds p up is dropped if a write takes too long.
func (s *Server) throttle(p *Peer, peers []*Peer) {
	limit := behind * int64(s.opts.MaxMessageBytes)
	for _, o := range peers {
		o.mu.Lock()
		for o != p && o.from == p && size(o.queue) > limit && !o.closed {
			p.lastSeen.Store(int64(time.Since(epoch))) // not silent: it is p that is not read
			o.drained.Wait()
		}
		o.mu.Unlock()
	}
}

// close queues for p, after what waits, final if not nil and a close frame of code, then
// nothing more: the rest must be written within closeTimeout, and the client's close frame
// come within another. It records fault, if not nil, as what was wrong. Once p is closed,
// close does nothing. The read loop is not cut: it reads on, to the client's close frame.
func (s *Server) close(p *Peer, code int, final []byte, fault error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if final != nil {
		s.queue(p, text(final), nil)
	}
	s.queue(p, frame(opClose, binary.BigEndian.AppendUint16(nil, uint16(code))), nil)
	p.closed = true // after the close frame is queued: nothing is after it
	p.fault = fault
	p.drained.Broadcast()
	p.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	p.conn.SetReadDeadline(time.Now().Add(2 * closeTimeout))
}

// drop cuts p off: what waits for it is discarded, a write in progress fails at once, and
// its read loop wakes to remove it. reason is p's fault, unless p was closing already. No
// close frame: p may not be reading. drop reports whether p was not dropped already.
func (s *Server) drop(p *Peer, reason error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped {
		return false
	}
	if !p.closed {
		p.fault = reason
	}
	p.closed = true
	p.dropped = true
	p.drained.Broadcast()
	s.account(p, -p.queued.Load()) // what is being written too: evict passes p over at once
	p.queue = nil
	p.conn.SetDeadline(time.Now()) // not I/O: it fails a write in progress, and wakes the read
	return true
}

// evict drops the peers with the most waiting, one at a time, until what waits for all peers
// leaves room for need more. Evictions take turns under s.mu, so that senders over the bound
// at once drop as many peers as they need, not one each.
func (s *Server) evict(need int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queued.Load()+need > int64(s.opts.MaxQueuedBytes) {
		var most *Peer
		for _, room := range s.rooms {
			for _, p := range room {
				if most == nil || p.queued.Load() > most.queued.Load() {
					most = p
				}
			}
		}
		if most == nil || most.queued.Load() == 0 { // what waits is for peers that have left
			return
		}
		s.drop(most, errors.New("the most waiting, past the bound for all"))
	}
}

// account adds n to the bytes waiting for p, and for all peers.
func (s *Server) account(p *Peer, n int64) {
	p.queued.Add(n)
	s.queued.Add(n)
}

// finish waits for p's writer to write what is left, then closes p's connection.
func (s *Server) finish(p *Peer) {
	p.writer.Wait() // p is closed: no writer starts after this
	p.conn.Close()
}

// ping is the pinger, from New to Close: every PingInterval it pings each peer, and drops
// those it has heard nothing from for two intervals.
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
					continue
				}
				s.send(p, frame(opPing, nil), nil)
				runtime.Gosched() // let its writer end: 10,000 at once would each hold a stack
			}
		}
	}
}

// Run listens on Options.Addr, calls ready (if not nil) with the port, and serves until
// Close. If it cannot listen, it closes s and returns the error.
func (s *Server) Run(ready func(port string)) error {
	ln, err := net.Listen("tcp", cmp.Or(s.opts.Addr, ":"+s.opts.Port))
	if err != nil {
		s.Close() // the pinger
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeader}
	// net/http applies MaxHeaderBytes in full only to a connection's first request (it reads
	// ahead up to 4 KiB while waiting for the next one), and a proxy reuses connections that
	// Peero answered with an error: 17.5 KB heads got through. Peero has nothing to keep alive.
	hs.SetKeepAlivesEnabled(false)
	context.AfterFunc(s.stop, func() { hs.Close() }) // it leaves hijacked connections to Close
	if ready != nil {
		ready(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	}
	if err := hs.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return s.Close() // waits for the Close in progress
}

// Close sends every peer a close frame (1001, going away) and returns when the connection of
// every peer that joined is closed, and the pinger has ended. (A connection still in its
// handshake gets "server closing" and is closed on its own, without Close waiting for it.)
func (s *Server) Close() error {
	s.cancel() // no join after it; those before are in peers
	for _, p := range s.peers() {
		s.close(p, closeGoingAway, nil, nil)
	}
	s.wg.Wait()
	return nil
}

var epoch = time.Now() // for lastSeen: time.Since(epoch) is monotonic, unlike the wall clock

var several = new(Peer) // Peer.from when the messages of more than one peer wait

// frame is a server frame (final, unmasked) of opcode op holding payload, as two buffers, the
// header and the payload, so that one payload serves every peer it is sent to.
func frame(op byte, payload []byte) net.Buffers {
	n := len(payload)
	head := []byte{finBit | op, byte(n)}
	switch {
	case n >= 1<<16:
		head = binary.BigEndian.AppendUint64(append(head[:1], 127), uint64(n))
	case n >= 126:
		head = binary.BigEndian.AppendUint16(append(head[:1], 126), uint16(n))
	}
	return net.Buffers{head, payload}
}

// text is a text frame holding message.
func text[M string | []byte](message M) net.Buffers { return frame(opText, []byte(message)) }

// size is the number of bytes in buffers.
func size(buffers net.Buffers) (n int64) {
	for _, b := range buffers {
		n += int64(len(b))
	}
	return n
}

// relayed builds {"type":T,"peerId":FROM,"signal":S}; json.Marshal would re-escape S.
func relayed(typ, from string, signal []byte) []byte {
	msg := append(make([]byte, 0, len(signal)+64), `{"type":"`+typ+`","peerId":"`+from...)
	return append(append(append(msg, `","signal":`...), signal...), '}')
}

// peersMessage lists ids for p, with a fresh resume token, and a fresh TURN credential if
// configured.
func (s *Server) peersMessage(p *Peer, ids []string) []byte {
	list, _ := json.Marshal(ids) // cannot fail for strings, nor below
	expiry := strconv.FormatInt(time.Now().Add(s.opts.ResumeTTL).Unix(), 10)
	token := p.ID + "." + expiry + "." + s.sign(p.ID, expiry, p.Room)
	msg := `{"type":"peers","id":"` + p.ID + `","peers":` + string(list)
	msg += `,"resume":"` + token + `"` // ids, digits and base64url: nothing to escape
	if len(s.opts.TURN) > 0 {          // an RTCIceServer, for new RTCPeerConnection({iceServers})
		user := fmt.Sprint(time.Now().Add(s.opts.TURNTTL).Unix(), ":", p.ID)
		urls, _ := json.Marshal(s.opts.TURN)
		msg += `,"iceServers":[{"urls":` + string(urls) + `,"username":"` + user +
			`","credential":"` + turnCredential(s.opts.TURNSecret, user) + `"}]`
	}
	return []byte(msg + "}")
}

// resume returns the id that token, from a peers message in room, gives back: the token is
// "ID.EXPIRY.MAC", MAC signing the three. A token that is not valid, has expired or is from
// another room gives a new id, as no token does.
func (s *Server) resume(room, token string) string {
	id, rest, _ := strings.Cut(token, ".")
	expiry, mac, _ := strings.Cut(rest, ".")
	unix, err := strconv.ParseInt(expiry, 10, 64)
	valid := hmac.Equal([]byte(mac), []byte(s.sign(id, expiry, room)))
	isID := len(id) == 26 && strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == ""
	if err != nil || !valid || !isID || time.Now().Unix() >= unix {
		return rand.Text()
	}
	return id
}

// sign is the MAC of a resume token: base64url(HMAC-SHA256(secret, ID "\n" EXPIRY "\n" ROOM)).
func (s *Server) sign(id, expiry, room string) string {
	mac := hmac.New(sha256.New, []byte(s.opts.Secret))
	mac.Write([]byte(id + "\n" + expiry + "\n" + room))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// turnCredential is username's password in coturn's use-auth-secret: base64(HMAC-SHA1).
func turnCredential(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// errorMessage is {"type":"error","error":TEXT}, TEXT quoted as JSON.
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
	flag.Usage = func() { // not "Usage of" the path where go run built the program
		fmt.Fprintln(flag.CommandLine.Output(), "Usage of peero:")
		flag.PrintDefaults()
	}
	addr := flag.String("addr", "", "`host:port` to listen on (default every interface, at -port)")
	port := flag.String("port", cmp.Or(os.Getenv("PORT"), "8080"), "TCP port; $PORT if set")
	ping := flag.Duration("ping", 20*time.Second, "ping interval; a peer silent for two is dropped")
	origins := flag.String("origin", "", "comma-separated browser origins allowed (default any)")
	maxPeers := flag.Int("max-peers", 10000, "most peers at once, over all rooms")
	maxRoom := flag.Int("max-room-peers", 1000, "most peers in one room")
	maxQueued := flag.Int("max-queued-mib", 256, "MiB waiting to be sent, over all peers")
	turn := flag.String("turn", "", "comma-separated TURN URLs for peers, with $PEERO_TURN_SECRET")
	turnTTL := flag.Duration("turn-ttl", 24*time.Hour, "how long a TURN credential works")
	resumeTTL := flag.Duration("resume-ttl", 24*time.Hour, "how long a resume token works")
	flag.Parse()
	secret := os.Getenv("PEERO_TURN_SECRET")
	if (*turn == "") != (secret == "") {
		fmt.Fprintln(os.Stderr, "peero: -turn needs $PEERO_TURN_SECRET, and the other way round")
		os.Exit(2)
	}
	list := func(s string) []string { return strings.Fields(strings.ReplaceAll(s, ",", " ")) }
	srv := New(Options{Addr: *addr, Port: *port, PingInterval: *ping, Origins: list(*origins),
		MaxPeers: *maxPeers, MaxRoomPeers: *maxRoom, MaxQueuedBytes: *maxQueued << 20,
		TURN: list(*turn), TURNSecret: secret, TURNTTL: *turnTTL,
		Secret: os.Getenv("PEERO_SECRET"), ResumeTTL: *resumeTTL}) // not flags: they show in ps
	srv.Events = Events{
		Connection: func(p *Peer) { slog.Info("join", "peer", p.ID, "room", p.Room) },
		Remove:     func(p *Peer) { slog.Info("leave", "peer", p.ID, "room", p.Room) },
		Error:      func(err error, p *Peer) { slog.Warn("drop", "peer", p.ID, "err", err) },
	}
	signals, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(signals, func() {
		stop() // a second Ctrl-C ends the process at once
		slog.Info("closing", "peers", len(srv.peers()))
		srv.Close()
	})
	err := srv.Run(func(port string) {
		host, _, _ := net.SplitHostPort(*addr)
		url := "ws://" + cmp.Or(host, "localhost") + ":" + port + "/ROOM"
		slog.Info("peero listening", "port", port, "url", url)
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		err = fmt.Errorf("%w; pick another port with -port, or an address with -addr", err)
	}
	if err != nil {
		slog.Error("peero", "err", err)
		os.Exit(1)
	}
}
