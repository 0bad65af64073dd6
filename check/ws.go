package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// WebSocket opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// conn is one WebSocket connection to the server under check. It is written
// by hand, not taken from a library, so that a check controls every byte it
// sends: pings, fragments, reserved opcodes, oversize frames, resets. Like a
// browser it answers the server's pings, unless told not to.
type conn struct {
	t    *T
	name string // A, B, …: for failure messages
	nc   net.Conn
	id   string // the id in the first peers message
	peer msg    // the first peers message

	wmu sync.Mutex // serializes writes: the reader writes pongs

	autoPong atomic.Bool    // answer the server's pings (true unless a check clears it)
	msgs     chan received  // text and binary frames, in order; closed when reading ends
	pongs    chan []byte    // payloads of the server's pongs
	pings    chan time.Time // when the server's pings arrived
	done     chan struct{}  // closed when reading ends

	sentClose atomic.Bool // this side sent a close frame

	// Set by the reader before done is closed: read them after done.
	gotClose   bool   // the server sent a close frame
	closeMsg   []byte // its payload: a status code, and maybe a reason
	afterClose []byte // the opcodes of frames the server sent after its close frame
	readErr    error  // why reading ended, if not a close frame
}

// dialOptions shape a handshake request.
type dialOptions struct {
	proto   string   // "HTTP/1.1" unless set
	header  []string // extra header lines, "Name: value"
	noWS    bool     // a plain GET: no Upgrade, Connection or Sec-WebSocket-* headers
	onOpen  []byte   // a text frame sent right after the handshake, before anything is read
	noPongs bool     // do not answer the server's pings
	noRead  bool     // read nothing after the handshake, with a small receive buffer: a slow peer
	resume  string   // a resume token, sent as ?resume= (connect adds it to the path)
}

// dial opens a connection to path (which may carry a query string) and does
// the handshake. It returns the response; conn is nil unless the status is
// 101, and then its reader runs. It reads nothing else.
func (t *T) dial(path string, o dialOptions) (*conn, *http.Response, error) {
	cfg := t.cfg
	nc, err := net.DialTimeout("tcp", cfg.addr, cfg.timeout)
	if err != nil {
		return nil, nil, err
	}
	if cfg.tls != nil {
		nc = tls.Client(nc, cfg.tls)
	}
	t.track(nc)
	var keyBytes [16]byte
	rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	proto := o.proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s %s\r\nHost: %s\r\n", path, proto, cfg.host)
	if !o.noWS {
		fmt.Fprintf(&req, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n", key)
	}
	for _, h := range o.header {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	nc.SetDeadline(time.Now().Add(cfg.timeout))
	if _, err := nc.Write(req.Bytes()); err != nil {
		nc.Close()
		return nil, nil, err
	}
	r := bufio.NewReader(nc)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("reading the handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		nc.Close()
		return nil, resp, nil
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		nc.Close()
		return nil, resp, fmt.Errorf("Sec-WebSocket-Accept %q; want %q", got, want)
	}
	nc.SetDeadline(t.deadline) // no read or write outlives the check
	c := &conn{
		t: t, name: t.nextName(), nc: nc,
		msgs: make(chan received, 4096), pongs: make(chan []byte, 256), pings: make(chan time.Time, 64),
		done: make(chan struct{}),
	}
	c.autoPong.Store(!o.noPongs)
	if o.onOpen != nil {
		if err := c.writeFrame(true, opText, o.onOpen); err != nil {
			nc.Close()
			return nil, resp, err
		}
	}
	if o.noRead {
		if tc := tcpConn(nc); tc != nil {
			tc.SetReadBuffer(4096)
		}
		return c, resp, nil
	}
	go c.read(r) // ends when the connection ends: at the latest when the check ends and closes it
	return c, resp, nil
}

// read reads the server's frames until the connection ends.
func (c *conn) read(r *bufio.Reader) {
	defer close(c.done)
	defer close(c.msgs)
	for {
		fin, op, data, err := readFrame(r)
		if err != nil {
			c.readErr = err
			return
		}
		switch op {
		case opPing:
			select {
			case c.pings <- time.Now():
			default:
			}
			if c.autoPong.Load() {
				c.writeFrame(true, opPong, data)
			}
		case opPong:
			select {
			case c.pongs <- data:
			default:
			}
		case opClose:
			c.gotClose, c.closeMsg = true, data
			if !c.sentClose.Load() { // the reply RFC 6455 asks for: the same status
				c.writeFrame(true, opClose, data[:min(2, len(data))])
			}
			for { // until the server closes the connection: nothing may come
				_, op, _, err := readFrame(r)
				if err != nil {
					return
				}
				c.afterClose = append(c.afterClose, op)
			}
		default: // parsed by next, so that pings are answered at once however many messages wait
			c.msgs <- received{fin, op, data}
		}
	}
}

// received is a text or binary frame from the server.
type received struct {
	fin  bool
	op   byte
	data []byte
}

// readFrame reads one frame from the server.
func readFrame(r *bufio.Reader) (fin bool, op byte, data []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return false, 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(r, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, err = io.ReadFull(r, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	if err != nil {
		return false, 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return false, 0, nil, errors.New("the server sent a masked frame")
	}
	if n > 64<<20 {
		return false, 0, nil, fmt.Errorf("the server sent a frame of %d bytes", n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return false, 0, nil, err
	}
	return h[0]&0x80 != 0, h[0] & 0x0f, data, nil
}

// writeFrame sends one masked frame, as a client must.
func (c *conn) writeFrame(fin bool, op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if op == opClose {
		c.sentClose.Store(true)
	}
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i%4])
	}
	_, err := c.nc.Write(b)
	return err
}

// send sends s as one text frame.
func (c *conn) send(s string) {
	if err := c.writeFrame(true, opText, []byte(s)); err != nil {
		c.t.Fatalf("%s sent %s: %v", c.name, show(s), err)
	}
}

// next returns the next text or binary message, or an error if none comes
// within the timeout or the connection ended.
func (c *conn) next() (msg, error) {
	timer := time.NewTimer(c.t.cfg.timeout)
	defer timer.Stop()
	select {
	case f, ok := <-c.msgs:
		if !ok {
			return msg{}, c.ended()
		}
		m := parseMsg(f.op, f.data)
		c.t.run.envelope(c.t.name, f.fin, m)
		return m, nil
	case <-timer.C:
		return msg{}, fmt.Errorf("%w within %v", errNothing, c.t.cfg.timeout)
	}
}

// errNothing is the error of a read that timed out.
var errNothing = errors.New("nothing")

// ended says how the connection ended; call it once msgs is closed.
func (c *conn) ended() error {
	<-c.done
	if c.gotClose {
		return errors.New("a close frame")
	}
	if errors.Is(c.readErr, io.EOF) {
		return errors.New("the connection ended (EOF)")
	}
	return fmt.Errorf("the connection ended (%v)", c.readErr)
}

// waitEnd waits up to d for the connection to end, and says whether it did.
func (c *conn) waitEnd(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.done:
		return true
	case <-timer.C:
		return false
	}
}

// isEnded says whether the connection has ended, without waiting.
func (c *conn) isEnded() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// close sends a close frame, waits briefly for the server's, and closes.
func (c *conn) close() {
	c.writeFrame(true, opClose, []byte{0x03, 0xe8}) // status 1000
	c.waitEnd(c.t.cfg.timeout)
	c.nc.Close()
}

// reset ends the connection abruptly: a TCP RST, no close frame (and over
// TLS, no close_notify either).
func (c *conn) reset() {
	if tc := tcpConn(c.nc); tc != nil {
		tc.SetLinger(0)
		tc.Close()
		return
	}
	c.nc.Close()
}

// tcpConn returns the TCP connection under nc, which may be a TLS
// connection, or nil if there is none.
func tcpConn(nc net.Conn) *net.TCPConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tc, _ := nc.(*net.TCPConn)
	return tc
}

// msg is a message from the server, parsed strictly: field names are matched
// exactly, duplicates are kept in keys, and values are kept byte for byte.
type msg struct {
	op     byte
	raw    []byte
	keys   []string                   // member names in order; nil if raw is not an object
	fields map[string]json.RawMessage // member values, as sent
	err    error                      // why raw is not a JSON object, if it is not
}

func parseMsg(op byte, raw []byte) msg {
	m := msg{op: op, raw: raw}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		m.err = errors.New("not a JSON object")
		return m
	}
	m.fields = map[string]json.RawMessage{}
	for dec.More() {
		key, err := dec.Token()
		var value json.RawMessage
		if err == nil {
			err = dec.Decode(&value)
		}
		if err != nil {
			m.err = fmt.Errorf("not a JSON object: %v", err)
			return m
		}
		m.keys = append(m.keys, key.(string))
		m.fields[key.(string)] = value
	}
	if _, err := dec.Token(); err != nil {
		m.err = fmt.Errorf("not a JSON object: %v", err)
	} else if _, err := dec.Token(); err != io.EOF {
		m.err = errors.New("not a JSON object: more after the object")
	}
	return m
}

// str returns the string member key, or "" if it is absent or not a string.
func (m msg) str(key string) string {
	var s string
	if v := m.fields[key]; len(v) > 0 && v[0] == '"' {
		json.Unmarshal(v, &s)
	}
	return s
}

func (m msg) typ() string { return m.str("type") }

// is says whether m is a text message of type typ (from peerID, unless "").
func (m msg) is(typ, peerID string) bool {
	return m.op == opText && m.err == nil && m.typ() == typ && (peerID == "" || m.str("peerId") == peerID)
}

func (m msg) String() string {
	if m.op == opBinary {
		return "binary " + show(m.raw)
	}
	return show(m.raw)
}

// envelopeFault says how m, a frame from the server, breaks the envelope
// rule, or "" if it does not.
func envelopeFault(fin bool, m msg) string {
	switch {
	case m.op != opText:
		return fmt.Sprintf("a frame of opcode %d, not text: %s", m.op, show(m.raw))
	case !fin:
		return "a fragment: " + show(m.raw)
	case !utf8.Valid(m.raw):
		return "invalid UTF-8: " + show(m.raw)
	case m.err != nil:
		return fmt.Sprintf("%v: %s", m.err, show(m.raw))
	case m.typ() == "":
		return `no "type", a string that is not empty: ` + show(m.raw)
	}
	return ""
}

// show quotes b for a failure message, shortened if long.
func show[B []byte | string](b B) string {
	s := string(b)
	if len(s) > 160 {
		return strconv.Quote(s[:120]) + fmt.Sprintf("…(%d bytes)", len(s))
	}
	if utf8.ValidString(s) && !strings.ContainsAny(s, "`\x00\r\n\t") {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}
