package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// kind is a server under test: each speaks its own protocol.
type kind string

const (
	peero  kind = "Peero"
	peerjs kind = "PeerJS"
	echo   kind = "x/net echo"
	floor  kind = "x/net floor" // speaks only the peers greeting
)

// client is one WebSocket connection of the load generator.
type client struct {
	kind kind
	ws   *websocket.Conn
	id   string       // its peer id: given by Peero, chosen by the client for PeerJS
	seen []string     // Peero: the ids in its first peers list
	in   bytes.Buffer // the last message read, reused: the generator must not be the bottleneck
	out  []byte       // the last message built, reused
}

// dial connects a client of kind to the server at addr: to room for Peero
// (ignored by the others). It returns once the server has greeted it. A
// Peero that refuses the join with an error message gives a *refusedError.
func dial(ctx context.Context, k kind, addr, room string) (*client, error) {
	c := &client{kind: k}
	url := "ws://" + addr + room
	if k == peerjs {
		c.id = rand.Text()
		url = "ws://" + addr + "/peerjs?key=peerjs&id=" + c.id + "&token=" + rand.Text()[:10]
	}
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c.ws = ws
	if k == echo {
		return c, nil
	}
	_, first, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	var m struct {
		Type  string   `json:"type"`
		ID    string   `json:"id"`
		Peers []string `json:"peers"`
		Error string   `json:"error"`
	}
	if err := json.Unmarshal(first, &m); err != nil {
		ws.CloseNow()
		return nil, err
	}
	switch {
	case (k == peero || k == floor) && m.Type == "peers":
		c.id, c.seen = m.ID, m.Peers
	case k == peerjs && m.Type == "OPEN":
	case k == peero && m.Type == "error":
		ws.CloseNow()
		return nil, &refusedError{m.Error}
	default:
		ws.CloseNow()
		return nil, fmt.Errorf("%s greeted with %s", k, first)
	}
	return c, nil
}

// refusedError is Peero's refusal of a join: the text of its error message.
type refusedError struct{ reason string }

func (e *refusedError) Error() string { return "refused: " + e.reason }

// offer builds a targeted offer to peer id, in the client's protocol, with
// a signal of about size bytes that carries the send time, so that the
// receiver can tell the latency. It is valid until the next call.
func (c *client) offer(to string, size int, now time.Time) []byte {
	switch c.kind {
	case peero:
		c.out = append(append(append(c.out[:0], `{"type":"offer","peerId":"`...), to...), `","signal":`...)
	case peerjs:
		c.out = append(append(append(c.out[:0], `{"type":"OFFER","dst":"`...), to...), `","payload":`...)
	default: // the echo server sends the signal itself back to us
		c.out = c.out[:0]
	}
	c.out = appendSignal(c.out, size, now)
	if c.kind != echo {
		c.out = append(c.out, '}')
	}
	return c.out
}

// broadcast builds an offer to the whole room (Peero only).
func broadcast(payload []byte) []byte {
	return fmt.Appendf(nil, `{"type":"offer","signal":%s}`, payload)
}

func (c *client) write(ctx context.Context, msg []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, msg)
}

// read returns the next message, valid until the next read.
func (c *client) read(ctx context.Context) ([]byte, error) {
	_, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	c.in.Reset()
	_, err = c.in.ReadFrom(r)
	return c.in.Bytes(), err
}

func (c *client) close() { c.ws.CloseNow() }

var padding = bytes.Repeat([]byte("x"), 1<<16)

// appendSignal appends a signal of about size bytes that carries the send time.
func appendSignal(b []byte, size int, now time.Time) []byte {
	start := len(b)
	b = strconv.AppendInt(append(b, `{"ts":`...), now.UnixNano(), 10)
	b = append(b, `,"sdp":"`...)
	b = append(b, padding[:max(0, size-(len(b)-start)-2)]...)
	return append(b, `"}`...)
}

// signal makes a signal of about size bytes that carries the send time.
func signal(size int, now time.Time) []byte { return appendSignal(nil, size, now) }

var tsKey = []byte(`"ts":`)

// sentAt returns the send time carried by a relayed message, if it has one.
func sentAt(msg []byte) (int64, bool) {
	i := bytes.Index(msg, tsKey)
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len(tsKey):]
	j := bytes.IndexByte(rest, ',')
	if j < 0 {
		return 0, false
	}
	ts, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return ts, err == nil
}
