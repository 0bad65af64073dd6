package main

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// checks are the rules of protocol.md, in its order. Their names are the
// names protocol.md gives its rules.
var checks = []check{
	// Connecting
	{name: "room-path-exact", run: roomPathExact},
	{name: "room-path-decoded", run: roomPathDecoded},
	{name: "room-query-ignored", run: roomQueryIgnored},
	{name: "room-gone-when-empty", run: roomGoneWhenEmpty},
	{name: "room-isolation", run: roomIsolation},
	{name: "origin-allow-list", run: originAllowList},
	{name: "origin-any-without-list", run: originAnyWithoutList},
	{name: "origin-absent-allowed", run: originAbsentAllowed},
	{name: "http-426-without-upgrade", run: http426},
	{name: "http-11-required", run: http11Required},
	{name: "http-431-large-headers", run: http431},
	{name: "room-path-max-1024", run: roomPathMax},
	{name: "subprotocol-none-selected", run: subprotocolNoneSelected},
	{name: "room-full", run: roomFull},
	{name: "server-full", phase: alone, run: serverFull},
	// The envelope
	{name: "envelope-case-sensitive", run: envelopeCaseSensitive},
	{name: "envelope-unknown-fields-ignored", run: envelopeUnknownFields},
	{name: "frame-limit-accepted", run: frameLimitAccepted},
	{name: "frame-too-large-closes", run: frameTooLarge},
	{name: "reserved-opcode-closes", run: reservedOpcode},
	{name: "frame-invalid-closes", run: frameInvalid},
	// Server to client
	{name: "peers-first-message", run: peersFirstMessage},
	{name: "peers-lists-others", run: peersListsOthers},
	{name: "peers-request", run: peersRequest},
	{name: "resume-token", run: resumeToken},
	{name: "id-format", run: idFormat},
	{name: "turn-credential", run: turnCredential},
	{name: "turn-unconfigured", run: turnUnconfigured},
	{name: "announce-on-join", run: announceOnJoin},
	{name: "join-atomic", run: joinAtomic},
	{name: "relay-exact", run: relayExact},
	{name: "relay-sender-set-by-server", run: relaySender},
	{name: "remove-on-close", run: removeOnClose},
	{name: "remove-on-reset", run: removeOnReset},
	// Client to server
	{name: "offer-broadcast", run: offerBroadcast},
	{name: "offer-directed", run: offerDirected},
	{name: "offer-empty-room", run: offerEmptyRoom},
	{name: "answer-relayed", run: relayedTo("answer")},
	{name: "candidate-relayed", run: relayedTo("candidate")},
	{name: "ping-pong", run: pingPong},
	{name: "ws-ping-answered", run: wsPingAnswered},
	{name: "ws-ping-answered-after-quiet", run: wsPingAfterQuiet},
	// Errors
	{name: "error-connection-usable", run: errorConnectionUsable},
	{name: "error-binary-frame", run: errorBinaryFrame},
	{name: "error-invalid-utf8", run: errorInvalidUTF8},
	{name: "error-not-json-object", run: errorNotJSONObject},
	{name: "error-type-missing", run: errorTypeMissing},
	{name: "error-unknown-type", run: errorUnknownType},
	{name: "error-signal-missing", run: errorSignalMissing},
	{name: "answer-needs-peerid", run: needsPeerID("answer")},
	{name: "candidate-needs-peerid", run: needsPeerID("candidate")},
	{name: "error-peerid-not-string", run: errorPeerIDNotString},
	{name: "error-peer-not-in-room", run: errorPeerNotInRoom},
	{name: "error-fragment", run: errorFragment},
	// Ordering
	{name: "order-per-sender", run: orderPerSender},
	{name: "order-announce-before-messages", run: orderAnnounceFirst},
	{name: "order-nothing-after-remove", run: orderNothingAfterRemove},
	// Liveness, slow peers, limits
	{name: "liveness-server-pings", run: livenessServerPings},
	{name: "liveness-silent-dropped", run: livenessSilentDropped},
	{name: "liveness-traffic-keeps-alive", run: livenessTrafficKeepsAlive},
	{name: "slow-peer-dropped", run: slowPeerDropped},
	// Resuming
	{name: "resume-same-id", run: resumeSameID},
	{name: "resume-replaces", run: resumeReplaces},
	{name: "resume-invalid-fresh-id", run: resumeInvalid},
	{name: "resume-expires", run: resumeExpires},
	// Closing
	{name: "close-reply", run: closeReply},
	// What every other check saw
	{name: "envelope-text-json-object", phase: summary, run: envelopeTextJSONObject},
	{name: "id-unique", phase: summary, run: idUnique},
}

// Helpers

// expect reads c's next message and ends the check unless it is of type typ
// (and from peerID, unless ""). after says what led to it, for the failure.
func (c *conn) expect(typ, peerID, after string) msg {
	want := typ
	if peerID != "" {
		want += " from " + c.t.nameOf(peerID)
	}
	m, err := c.next()
	if err != nil {
		c.t.Fatalf("after %s, %s got %v; want %s", after, c.name, err, want)
	}
	if !m.is(typ, peerID) {
		c.t.Fatalf("after %s, %s got %s; want %s", after, c.name, m, want)
	}
	return m
}

// expectError reads c's next message and ends the check unless it is an
// error saying want.
func (c *conn) expectError(after, want string) {
	m, err := c.next()
	if err != nil {
		c.t.Fatalf("%s; got %v; want error %s", after, err, show(want))
	}
	if !m.is("error", "") || m.str("error") != want {
		c.t.Fatalf("%s; got %s; want error %s", after, m, show(want))
	}
}

// sync sends a ping message and ends the check unless the pong is the next
// message: the connection is usable, and nothing else was waiting for c.
func (c *conn) sync(after string) {
	c.send(`{"type":"ping"}`)
	m, err := c.next()
	if err != nil {
		c.t.Fatalf("after %s, %s sent `{\"type\":\"ping\"}`: got %v; want pong", after, c.name, err)
	}
	if !m.is("pong", "") {
		c.t.Fatalf("after %s, %s sent `{\"type\":\"ping\"}`: got %s; want pong, and nothing before it", after, c.name, m)
	}
}

// marker sends an offer from c to o and ends the check unless it is o's next
// message: since messages from one sender arrive in order, nothing else from
// c reached o before it.
func (c *conn) marker(o *conn, after string) {
	signal := `"marker ` + rand.Text()[:8] + `"`
	c.send(`{"type":"offer","peerId":"` + o.id + `","signal":` + signal + `}`)
	m, err := o.next()
	if err != nil {
		c.t.Fatalf("after %s, %s sent an offer to %s: %s got %v; want that offer", after, c.name, o.name, o.name, err)
	}
	if !m.is("offer", c.id) || string(m.fields["signal"]) != signal {
		c.t.Fatalf("after %s, %s sent an offer with signal %s to %s: %s got %s; want that offer, and nothing before it", after, c.name, signal, o.name, o.name, m)
	}
}

// nameOf returns the name of the connection with id, or the id.
func (t *T) nameOf(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name, ok := t.ids[id]; ok {
		return name
	}
	return id
}

// sent describes c sending payload as a frame of opcode op.
func sent(c *conn, op byte, payload string) string {
	kinds := map[byte]string{opText: "", opBinary: "a binary frame ", opContinuation: "a continuation frame "}
	kind, ok := kinds[op]
	if !ok {
		kind = fmt.Sprintf("a frame of opcode %#x ", op)
	}
	return c.name + " sent " + kind + show(payload)
}

// peersOf returns the ids in a peers message, and whether "peers" is a JSON
// array of strings.
func peersOf(m msg) ([]string, bool) {
	raw := m.fields["peers"]
	var ids []string
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &ids) != nil {
		return nil, false
	}
	return ids, true
}

// got describes what a read returned: m, or the error.
func got(m msg, err error) string {
	if err != nil {
		return err.Error()
	}
	return m.String()
}

// listOf returns the ids in a peers message, or none.
func listOf(m msg) []string {
	ids, _ := peersOf(m)
	return ids
}

func jsonUnmarshal(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return fmt.Errorf("absent")
	}
	return json.Unmarshal(raw, v)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// nameList returns the names of the connections with ids, for failure messages.
func (t *T) nameList(ids []string) string {
	var s []string
	for _, id := range ids {
		s = append(s, t.nameOf(id))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// pair joins A, then B, to room; A has read B's announce.
func (t *T) pair(room string) (a, b *conn) {
	cs := t.joinAll(room, 2)
	return cs[0], cs[1]
}

// Connecting

func roomPathExact(t *T) {
	a := t.join("/x")
	for _, room := range []string{"/x/", "//x", "/X"} {
		if c := t.join(room); len(c.peerIDs()) != 0 {
			t.Errorf("%s joined %s after A joined %s: peers %s; want [] (a different room)", c.name, t.path(room), t.path("/x"), t.nameList(c.peerIDs()))
		}
	}
	if b := t.join("/x"); !slices.Equal(b.peerIDs(), []string{a.id}) {
		t.Errorf("%s joined %s after A: peers %s; want [A]", b.name, t.path("/x"), t.nameList(b.peerIDs()))
	}
}

// peerIDs returns the ids in c's first peers message.
func (c *conn) peerIDs() []string { return listOf(c.peer) }

func roomPathDecoded(t *T) {
	a := t.join("/a%2Fb")
	if b := t.join("/a/b"); !slices.Equal(b.peerIDs(), []string{a.id}) {
		t.Errorf("B joined %s after A joined %s: peers %s; want [A] (%%2F is decoded)", t.path("/a/b"), t.path("/a%2Fb"), t.nameList(b.peerIDs()))
	}
}

func roomQueryIgnored(t *T) {
	a := t.join("/q?x=1")
	b := t.join("/q?y=2&x=3")
	c := t.join("/q")
	if !slices.Equal(b.peerIDs(), []string{a.id}) || !sameSet(c.peerIDs(), []string{a.id, b.id}) {
		t.Errorf("A joined %s, B %s, C %s: B's peers %s, C's %s; want [A] and [A B]", t.path("/q?x=1"), t.path("/q?y=2&x=3"), t.path("/q"),
			t.nameList(b.peerIDs()), t.nameList(c.peerIDs()))
	}
}

func roomGoneWhenEmpty(t *T) {
	a, b := t.pair("/r")
	a.close()
	b.expect("remove", a.id, "A closed")
	b.close()
	deadline := time.Now().Add(t.cfg.timeout)
	for { // B's leaving may be handled just after its close frame is answered
		c := t.join("/r")
		if len(c.peerIDs()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("A and B joined %s and closed; %s joined it %v later: peers %s; want []", t.path("/r"), c.name, t.cfg.timeout, t.nameList(c.peerIDs()))
		}
		c.nc.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

func roomIsolation(t *T) {
	a := t.join("/r1")
	b, c := t.pair("/r2")
	if !slices.Equal(c.peerIDs(), []string{b.id}) {
		t.Errorf("C joined %s with B there, A in %s: peers %s; want [B]", t.path("/r2"), t.path("/r1"), t.nameList(c.peerIDs()))
	}
	offer := `{"type":"offer","signal":"to my room"}`
	a.send(offer)
	a.sync(sent(a, opText, offer))
	directed := `{"type":"offer","peerId":"` + b.id + `","signal":"across rooms"}`
	a.send(directed)
	a.expectError(sent(a, opText, directed)+" (B is in another room)", `no peer "`+b.id+`" in this room`)
	a.send(`{"type":"peers"}`)
	if m := a.expect("peers", "", `A sent {"type":"peers"}`); !slices.Equal(listOf(m), []string{}) {
		t.Errorf(`A, alone in %s, sent {"type":"peers"}: got %s; want no peers`, t.path("/r1"), m)
	}
	b.sync("A, in another room, sent an offer to its room and one to B")
	c.sync("A, in another room, sent an offer to its room and one to B")
}

// mustDial connects to room and ends the check unless the server accepts; it
// reads nothing.
func (t *T) mustDial(room string, o dialOptions) *conn {
	c, resp, err := t.dial(t.path(room), o)
	switch {
	case err != nil:
		t.Fatalf("connecting to %s: %v", t.path(room), err)
	case c == nil:
		t.Fatalf("connecting to %s: HTTP %s; want 101", t.path(room), resp.Status)
	}
	return c
}

// dialStatus does a handshake to path and returns its status; the
// connection, if any, is closed.
func (t *T) dialStatus(path string, o dialOptions) (int, *http.Response) {
	c, resp, err := t.dial(path, o)
	if err != nil {
		t.Fatalf("connecting to %s: %v", path, err)
	}
	if c != nil {
		c.nc.Close()
	}
	return resp.StatusCode, resp
}

func originAllowList(t *T) {
	if !t.cfg.given["origin"] || len(t.cfg.origins) == 0 {
		t.Skipf("needs -origin LIST, the server's allow-list")
	}
	for _, origin := range t.cfg.origins {
		if _, err := t.connect("/r", dialOptions{header: []string{"Origin: " + origin}}); err != nil {
			t.Errorf("with Origin %s (on the list): %v", origin, err)
		}
	}
	for _, origin := range []string{"https://peero-check.invalid", "null"} {
		if slices.Contains(t.cfg.origins, origin) {
			continue
		}
		if got, _ := t.dialStatus(t.path("/r"), dialOptions{header: []string{"Origin: " + origin}}); got != http.StatusForbidden {
			t.Errorf("a handshake with Origin %s (not on the list %s): HTTP %d; want 403", origin, strings.Join(t.cfg.origins, ","), got)
		}
	}
}

func originAnyWithoutList(t *T) {
	if !t.cfg.given["origin"] || len(t.cfg.origins) > 0 {
		t.Skipf("needs -origin= (empty), saying the server has no allow-list")
	}
	for _, origin := range []string{"https://peero-check.invalid", "null"} {
		if _, err := t.connect("/r", dialOptions{header: []string{"Origin: " + origin}}); err != nil {
			t.Errorf("with Origin %s: %v", origin, err)
		}
	}
}

func originAbsentAllowed(t *T) {
	t.join("/r") // the handshakes of every check have no Origin
}

func http426(t *T) {
	got, resp := t.dialStatus(t.path("/r"), dialOptions{noWS: true})
	if got != http.StatusUpgradeRequired {
		t.Errorf("a GET without Upgrade: HTTP %d; want 426", got)
	}
	if body, _ := readBody(resp); strings.TrimSpace(body) == "" || strings.Contains(strings.TrimSpace(body), "\n") {
		t.Errorf("a GET without Upgrade: HTTP %d with body %s; want a one-line hint", got, show(body))
	}
}

func readBody(resp *http.Response) (string, error) {
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func http11Required(t *T) {
	if got, _ := t.dialStatus(t.path("/r"), dialOptions{proto: "HTTP/1.0"}); got != http.StatusBadRequest {
		t.Errorf("a WebSocket handshake over HTTP/1.0: HTTP %d; want 400", got)
	}
}

// headerLines returns n header lines of size bytes each, and the line ends.
func headerLines(n, size int) []string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf("X-Peero-Check-%d: %s", i, strings.Repeat("h", size-18)))
	}
	return lines
}

func http431(t *T) {
	// In several lines: proxies limit the size of each line.
	if got, _ := t.dialStatus(t.path("/r"), dialOptions{header: headerLines(3, 5000)}); got != http.StatusSwitchingProtocols {
		t.Errorf("a handshake with a request head of 15 KB: HTTP %d; want 101", got)
	}
	if got, _ := t.dialStatus(t.path("/r"), dialOptions{header: headerLines(3, 5800)}); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a handshake with a request head of 17.5 KB: HTTP %d; want 431", got)
	}
}

func roomPathMax(t *T) {
	base := t.path("/")
	if len(base) > 900 {
		t.Skipf("the URL's path is too long to leave room for the check")
	}
	fill := func(n int) string { return strings.Repeat("a", n-len(base)) } // a URI of n bytes
	if _, err := t.connect("/"+fill(1024), dialOptions{}); err != nil {
		t.Errorf("a request URI of 1024 bytes: %v", err)
	}
	if _, err := t.connect("/"+fill(1024-10)+"?q=query12", dialOptions{}); err != nil {
		t.Errorf("a request URI of 1024 bytes with a query string: %v", err)
	}
	for _, uri := range []string{base + fill(1025), base + fill(1025-10) + "?q=query12"} {
		if got, _ := t.dialStatus(uri, dialOptions{}); got != http.StatusRequestURITooLong {
			t.Errorf("a request URI of 1025 bytes (%s): HTTP %d; want 414", show(uri), got)
		}
	}
}

func subprotocolNoneSelected(t *T) {
	for _, offered := range []string{"chat", "a, b"} {
		c, resp, err := t.dial(t.path("/r"), dialOptions{header: []string{"Sec-WebSocket-Protocol: " + offered}})
		switch {
		case err != nil:
			t.Errorf("a handshake offering subprotocols %q: %v", offered, err)
		case c == nil:
			t.Errorf("a handshake offering subprotocols %q: HTTP %s; want 101", offered, resp.Status)
		case resp.Header.Values("Sec-WebSocket-Protocol") != nil:
			t.Errorf("a handshake offering subprotocols %q: 101 with Sec-WebSocket-Protocol %q; want none", offered, resp.Header.Values("Sec-WebSocket-Protocol"))
		default:
			if m, err := c.next(); err != nil || !m.is("peers", "") {
				t.Errorf("a handshake offering subprotocols %q: first message %s; want peers", offered, got(m, err))
			}
		}
	}
}

// joinMany connects n peers to room, several at once, and returns them; it
// stops at the first that does not get in, and returns its error.
func (t *T) joinMany(room string, n int) ([]*conn, error) {
	var (
		mu    sync.Mutex
		cs    []*conn
		first error
	)
	for len(cs) < n && first == nil {
		var wg sync.WaitGroup
		for range min(32, n-len(cs)) {
			wg.Go(func() {
				c, err := t.connect(room, dialOptions{})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					first = cmp.Or(first, err)
					return
				}
				cs = append(cs, c)
			})
		}
		wg.Wait()
	}
	return cs, first
}

// refused connects to room and ends the check unless the server accepts the
// connection, sends the error want, then a close frame.
func (t *T) refused(room, want string) *conn {
	c := t.mustDial(room, dialOptions{})
	if m, err := c.next(); err != nil || !m.is("error", "") || m.str("error") != want {
		t.Fatalf("%s connected to %s: first message %s; want error %s", c.name, t.path(room), got(m, err), show(want))
	}
	c.closedWith(1013, fmt.Sprintf("%s got error %s", c.name, show(want)))
	return c
}

// closedWith checks that c's connection ended with a close frame of status, and that
// nothing came after it. after says what led to it, for the failure.
func (c *conn) closedWith(status int, after string) {
	if !c.waitEnd(c.t.cfg.timeout) || !c.gotClose {
		c.t.Errorf("after %s: %v; want a close frame with status %d", after, c.endedOrOpen(), status)
		return
	}
	if len(c.closeMsg) < 2 || int(binary.BigEndian.Uint16(c.closeMsg)) != status {
		c.t.Errorf("after %s: a close frame with %q; want status %d", after, c.closeMsg, status)
	}
	if len(c.afterClose) > 0 {
		c.t.Errorf("after %s: frames of opcodes %v after the close frame; want none", after, c.afterClose)
	}
}

func (c *conn) endedOrOpen() error {
	select {
	case <-c.done:
		return c.ended()
	default:
		return fmt.Errorf("the connection still open after %v", c.t.cfg.timeout)
	}
}

func roomFull(t *T) {
	t.needs("max-room-peers")
	n := t.cfg.maxRoomPeers
	if n > 2000 {
		t.Skipf("-max-room-peers %d: the check would open %d connections; use a smaller setting", n, n+1)
	}
	cs, err := t.joinMany("/r", n)
	if err != nil {
		t.Fatalf("joining %d peers to %s, the limit: %v", n, t.path("/r"), err)
	}
	refused := t.refused("/r", "room full")
	noOneTold(cs, refused.name+" was refused: room full")
	t.join("/other") // other rooms are not full
}

func serverFull(t *T) {
	t.needs("max-peers")
	n := t.cfg.maxPeers
	if n > 2000 {
		t.Skipf("-max-peers %d: the check would open %d connections; use a smaller setting", n, n+1)
	}
	// One room if it can hold them all, so that a proxy sharding by room
	// sends them all to one server. -max-room-peers is 1000 by default.
	perRoom := min(n+1, cmp.Or(t.cfg.maxRoomPeers, 1000)-1)
	joined, room := 0, ""
	var last []*conn    // the peers of the last room
	for r := 0; ; r++ { // until a join is refused
		room = fmt.Sprintf("/r%d", r)
		cs, err := t.joinMany(room, min(perRoom, n+1-joined))
		joined, last = joined+len(cs), cs
		if err != nil {
			if !strings.Contains(err.Error(), "server full") {
				t.Fatalf("after %d peers joined: %v; want error `server full`", joined, err)
			}
			break
		}
		if joined > n {
			break
		}
	}
	if held := t.held(); held > n {
		t.Fatalf("%d peers joined and are connected; want server full after at most %d (-max-peers)", held, n)
	}
	refused := t.refused(room, "server full")
	if len(last) > 0 {
		noOneTold(last, refused.name+" was refused: server full")
	}
}

// held returns how many of the check's peers are connected.
func (t *T) held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.joined {
		if !c.isEnded() {
			n++
		}
	}
	return n
}

// noOneTold reads the announces the first of cs gets of the others, then
// checks that it gets nothing more: no announce of a peer that was refused.
func noOneTold(cs []*conn, after string) {
	first := cs[0]
	for range len(cs) - 1 - len(first.peerIDs()) {
		first.expect("announce", "", fmt.Sprintf("%d peers joined", len(cs)))
	}
	first.sync(after)
}

// The envelope

func envelopeCaseSensitive(t *T) {
	a, b := t.pair("/r")
	errorRows(t, a, b, []bad{
		{payload: `{"Type":"ping"}`, want: `message needs "type", a string that is not empty`},
		{payload: `{"type":"PING"}`, want: `unknown message type "PING"`},
		{payload: `{"type":"Offer","signal":1}`, want: `unknown message type "Offer"`},
		{payload: `{"type":"answer","PeerId":"` + b.id + `","signal":1}`, want: `message needs "peerId", a string that is not empty`},
		{payload: `{"type":"offer","peerId":"` + b.id + `","Signal":1}`, want: `offer needs a signal`},
	})
}

func envelopeUnknownFields(t *T) {
	a, b := t.pair("/r")
	ping := `{"type":"ping","id":7,"x":{"y":[null,true]}}`
	a.send(ping)
	a.expect("pong", "", sent(a, opText, ping))
	peers := `{"x":1,"type":"peers","peers":["FORGED"]}`
	a.send(peers)
	if m := a.expect("peers", "", sent(a, opText, peers)); !slices.Equal(listOf(m), []string{b.id}) {
		t.Errorf("after %s: got %s; want peers [B]", sent(a, opText, peers), m)
	}
	offer := `{"type":"offer","peerId":"` + b.id + `","signal":"s","from":"FORGED","x":[1,{}]}`
	a.send(offer)
	b.expect("offer", a.id, sent(a, opText, offer))
}

// bad is a message the server must answer with an error.
type bad struct {
	op      byte // opText if 0
	payload string
	want    string // the error's text
}

// errorRows sends each bad message from a, and wants its error reply and the
// connection usable after it; at the end it checks that b, a room-mate of a,
// got nothing of them.
func errorRows(t *T, a, b *conn, rows []bad) {
	for _, r := range rows {
		op := cmp.Or(r.op, opText)
		if err := a.writeFrame(true, op, []byte(r.payload)); err != nil {
			t.Fatalf("%s: %v", sent(a, op, r.payload), err)
		}
		what := sent(a, op, r.payload)
		a.expectError(what, r.want)
		a.sync(what + " and got its error")
	}
	a.marker(b, "A's bad messages")
}

func frameLimitAccepted(t *T) {
	a := t.join("/r")
	ping := `{"type":"ping"}`
	payload := ping + strings.Repeat(" ", t.cfg.maxBytes-len(ping))
	a.send(payload)
	a.expect("pong", "", fmt.Sprintf("A sent a ping padded to %d bytes, the limit", len(payload)))
}

func frameTooLarge(t *T) {
	a, b := t.pair("/r")
	ping := `{"type":"ping"}`
	payload := ping + strings.Repeat(" ", t.cfg.maxBytes+1-len(ping))
	b.writeFrame(true, opText, []byte(payload)) // may fail: the server need not read it
	what := fmt.Sprintf("B sent a ping padded to %d bytes, one over the limit", len(payload))
	want := fmt.Sprintf("frame larger than %d bytes; closing", t.cfg.maxBytes)
	for { // at most the error, then the end
		m, err := b.next()
		if err != nil {
			if !b.isEnded() {
				t.Fatalf("after %s: %v; want error %s (optional), then the connection closed", what, err, show(want))
			}
			if b.gotClose { // else a reset: the server need not read the rest of the frame
				b.closedWith(1009, what)
			}
			break
		}
		if !m.is("error", "") || m.str("error") != want {
			t.Fatalf("after %s: got %s; want error %s (optional), then the connection closed", what, m, show(want))
		}
	}
	a.expect("remove", b.id, what)
}

func reservedOpcode(t *T) {
	a := t.join("/r")
	for _, op := range []byte{0x3, 0xB} { // reserved: a data frame, a control frame
		c := t.join("/r")
		a.expect("announce", c.id, c.name+" joined")
		ping := `{"type":"ping"}`
		c.writeFrame(true, op, []byte(ping))
		what := sent(c, op, ping)
		c.expectError(what, "reserved WebSocket opcode; closing")
		c.closedWith(1002, what+" and its error")
		a.expect("remove", c.id, what)
	}
}

func frameInvalid(t *T) {
	a := t.join("/r")
	ping := []byte(`{"type":"ping"}`)
	for _, tt := range []struct {
		what, want string
		write      func(c *conn) error
	}{
		{"an unmasked text frame", "unmasked frame; closing", func(c *conn) error {
			c.wmu.Lock()
			defer c.wmu.Unlock()
			_, err := c.nc.Write(append([]byte{0x80 | opText, byte(len(ping))}, ping...))
			return err
		}},
		{"a text frame with RSV1 set", "reserved bits set, with no extension; closing", func(c *conn) error {
			return c.writeFrame(true, 0x40|opText, ping)
		}},
		{"a ping frame with FIN clear", "control frame fragmented or too long; closing", func(c *conn) error {
			return c.writeFrame(false, opPing, []byte("x"))
		}},
		{"a ping frame of 126 bytes", "control frame fragmented or too long; closing", func(c *conn) error {
			return c.writeFrame(true, opPing, bytes.Repeat([]byte("x"), 126))
		}},
		{"a text frame while a fragmented message was not done", "a new message inside a fragmented one; closing", func(c *conn) error {
			c.writeFrame(false, opText, ping) // a fragment is taken as a message: a ping
			c.writeFrame(true, opPing, []byte("between fragments"))
			c.expect("pong", "", c.name+" sent a ping as the first fragment of a message, then a ping frame")
			return c.writeFrame(true, opText, ping)
		}},
	} {
		c := t.join("/r")
		a.expect("announce", c.id, c.name+" joined")
		if err := tt.write(c); err != nil {
			t.Fatalf("%s sent %s: %v", c.name, tt.what, err)
		}
		what := c.name + " sent " + tt.what
		c.expectError(what, tt.want)
		c.closedWith(1002, what+" and its error")
		a.expect("remove", c.id, what)
	}
}

// Server to client

func peersFirstMessage(t *T) {
	a := t.join("/r")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() { // A offers to the room without pause while others join
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Microsecond):
			}
			if a.writeFrame(true, opText, fmt.Appendf(nil, `{"type":"offer","signal":%d}`, i)) != nil {
				return
			}
		}
	})
	for range 5 {
		t.join("/r") // fails unless the first message is peers
	}
}

func peersListsOthers(t *T) {
	a := t.join("/r")
	if raw := string(a.peer.fields["peers"]); raw != "[]" {
		t.Errorf("A joined an empty room: got %s; want \"peers\":[]", a.peer)
	}
	b := t.join("/r")
	if !slices.Equal(b.peerIDs(), []string{a.id}) {
		t.Errorf("B joined after A: got %s; want peers [A]", b.peer)
	}
	c := t.join("/r")
	if !sameSet(c.peerIDs(), []string{a.id, b.id}) {
		t.Errorf("C joined after A and B: got %s; want peers [A B] in any order", c.peer)
	}
	for _, x := range []*conn{a, b, c} {
		if x.peer.str("id") != x.id || slices.Contains(x.peerIDs(), x.id) {
			t.Errorf("%s's peers message lists itself: %s", x.name, x.peer)
		}
	}
}

func peersRequest(t *T) {
	cs := t.joinAll("/r", 3)
	a, b, c := cs[0], cs[1], cs[2]
	request := `{"type":"peers"}`
	ask := func(x *conn, want []string, after string) {
		x.send(request)
		m := x.expect("peers", "", after+", then "+x.name+" sent "+request)
		if ids, ok := peersOf(m); !ok || m.str("id") != x.id || !sameSet(ids, want) {
			t.Errorf("after %s, %s sent %s: got %s; want id %s, peers %s", after, x.name, request, m, x.name, t.nameList(want))
		}
	}
	ask(b, []string{a.id, c.id}, "A, B and C joined")
	a.close()
	b.expect("remove", a.id, "A closed")
	c.expect("remove", a.id, "A closed")
	ask(b, []string{c.id}, "A left")
	c.close()
	b.expect("remove", c.id, "C closed")
	ask(b, []string{}, "A and C left")
}

var idRE = regexp.MustCompile(`^[A-Z2-7]{26}$`)

func idFormat(t *T) {
	a, b := t.pair("/r")
	for _, c := range []*conn{a, b} {
		if !idRE.MatchString(c.id) {
			t.Errorf("%s got id %q in %s; want 26 characters A-Z, 2-7", c.name, c.id, c.peer)
		}
	}
	if a.id == b.id {
		t.Errorf("A and B both got id %s", a.id)
	}
}

func turnCredential(t *T) {
	t.needs("turn-secret")
	a := t.join("/r")
	t.checkICE(a, a.peer, "A's first peers message")
	a.send(`{"type":"peers"}`)
	t.checkICE(a, a.expect("peers", "", `A sent {"type":"peers"}`), `the reply to A's {"type":"peers"}`)
	b := t.join("/r")
	t.checkICE(b, b.peer, "B's first peers message")
}

// checkICE checks the iceServers of m, a peers message to c.
func (t *T) checkICE(c *conn, m msg, what string) {
	var servers []map[string]json.RawMessage
	if err := jsonUnmarshal(m.fields["iceServers"], &servers); err != nil || len(servers) != 1 {
		t.Fatalf("%s: %s; want \"iceServers\":[{\"urls\":[…],\"username\":…,\"credential\":…}]", what, m)
	}
	s := servers[0]
	var urls []string
	var username, credential string
	if jsonUnmarshal(s["urls"], &urls) != nil || len(urls) == 0 || jsonUnmarshal(s["username"], &username) != nil || jsonUnmarshal(s["credential"], &credential) != nil {
		t.Fatalf("%s: %s; want urls a list of strings, username and credential strings", what, m)
	}
	if t.cfg.given["turn"] && !slices.Equal(urls, t.cfg.turnURLs) {
		t.Errorf("%s: urls %q; want %q (-turn)", what, urls, t.cfg.turnURLs)
	}
	expiry, id, _ := strings.Cut(username, ":")
	secs, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || id != c.id || time.Unix(secs, 0).Before(time.Now()) {
		t.Errorf("%s: username %q; want \"EXPIRY:%s\" (%s's own id), EXPIRY in Unix seconds, in the future", what, username, c.id, c.name)
	}
	if want := time.Now().Add(t.cfg.turnTTL); t.cfg.given["turn-ttl"] && (time.Unix(secs, 0).Before(want.Add(-time.Minute)) || time.Unix(secs, 0).After(want.Add(time.Minute))) {
		t.Errorf("%s: username %q expires at %v; want now + %v (-turn-ttl), %v, give or take a minute of clock skew", what, username,
			time.Unix(secs, 0).UTC(), t.cfg.turnTTL, want.UTC().Truncate(time.Second))
	}
	mac := hmac.New(sha1.New, []byte(t.cfg.turnSecret))
	mac.Write([]byte(username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); credential != want {
		t.Errorf("%s: credential %q; want %q, base64 of HMAC-SHA1 of the username keyed by the secret", what, credential, want)
	}
}

func turnUnconfigured(t *T) {
	if !t.cfg.given["turn"] || len(t.cfg.turnURLs) > 0 {
		t.Skipf("needs -turn= (empty), saying the server has no TURN")
	}
	a := t.join("/r")
	a.send(`{"type":"peers"}`)
	for _, m := range []msg{a.peer, a.expect("peers", "", `A sent {"type":"peers"}`)} {
		if keys := slices.Sorted(slices.Values(m.keys)); !slices.Equal(keys, []string{"id", "peers", "resume", "type"}) {
			t.Errorf("a server without TURN sent %s; want exactly the fields type, id, peers and resume", m)
		}
	}
}

func resumeToken(t *T) {
	a := t.join("/r")
	a.send(`{"type":"peers"}`)
	reply := a.expect("peers", "", `A sent {"type":"peers"}`)
	for _, m := range []msg{a.peer, reply} {
		var token string
		if json.Unmarshal(m.fields["resume"], &token) != nil || token == "" || url.QueryEscape(token) != token {
			t.Errorf("A got %s; want a field resume, a string that is not empty and needs no URL escaping", m)
		}
	}
}

// resume connects to room with token, as ?resume=, and reads its peers message.
func (t *T) resume(room, token string) *conn {
	c, err := t.connect(room, dialOptions{resume: token})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// Resuming

func resumeSameID(t *T) {
	a, b := t.pair("/r")
	token := b.peer.str("resume")
	b.close()
	a.expect("remove", b.id, "B closed")
	c := t.resume("/r", token)
	what := c.name + " connected to " + t.path("/r") + " with B's resume token"
	if c.id != b.id || !slices.Equal(c.peerIDs(), []string{a.id}) {
		t.Fatalf("%s: got %s; want B's id, and peers [A]", what, c.peer)
	}
	a.expect("announce", b.id, what)
	a.marker(c, what) // the id works: messages to it reach the new connection
}

func resumeReplaces(t *T) {
	a, b := t.pair("/r")
	c := t.resume("/r", b.peer.str("resume"))
	what := c.name + " connected with B's resume token while B was connected"
	if c.id != b.id || !slices.Equal(c.peerIDs(), []string{a.id}) {
		t.Fatalf("%s: got %s; want B's id, and peers [A]", what, c.peer)
	}
	b.expectError(what, "replaced: this id connected again")
	b.closedWith(1000, what)
	a.sync(what + " (no remove, no announce)")
	a.marker(c, what)
}

func resumeInvalid(t *T) {
	a := t.join("/r")
	token := a.peer.str("resume")
	if token == "" {
		t.Fatalf("A got %s; want a resume token to change", a.peer)
	}
	changed := []byte(token)
	changed[len(changed)-1] ^= 1 // a letter or digit of the signature, in another case or value
	for _, tt := range []struct{ room, token, what string }{
		{"/r", string(changed), "A's resume token with its last character changed"},
		{"/other", token, "A's resume token, in another room"},
		{"/r", "nonsense", "a token that is not one"},
	} {
		c := t.resume(tt.room, tt.token)
		if c.id == a.id {
			t.Errorf("%s connected to %s with %s: got A's id; want a new one", c.name, t.path(tt.room), tt.what)
		}
	}
}

func resumeExpires(t *T) {
	t.needs("resume-ttl")
	a := t.join("/r")
	token := a.peer.str("resume")
	if c := t.resume("/r", token); c.id != a.id { // else expiring proves nothing
		t.Fatalf("%s connected with A's resume token at once: got %s; want A's id", c.name, c.peer)
	}
	if t.cfg.resumeTTL > budget/2 && !t.cfg.slow {
		t.Skipf("-resume-ttl %v: waiting for a token to expire takes longer than %v; use -slow", t.cfg.resumeTTL, budget)
	}
	time.Sleep(t.cfg.resumeTTL + time.Second) // the expiry is in whole seconds
	if c := t.resume("/r", token); c.id == a.id {
		t.Errorf("%s connected with A's resume token %v after it was given: got A's id; want a new one", c.name, t.cfg.resumeTTL+time.Second)
	}
}

func announceOnJoin(t *T) {
	a, b := t.pair("/r")
	c := t.join("/r")
	for _, x := range []*conn{a, b} {
		x.expect("announce", c.id, "C joined")
	}
	c.sync("C joined")
}

func joinAtomic(t *T) {
	const n = 8
	for round := range 3 {
		room := fmt.Sprintf("/r%d", round)
		cs := make([]*conn, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range cs {
			wg.Go(func() {
				<-start
				cs[i], errs[i] = t.connect(room, dialOptions{})
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("%d peers joining %s at once: %v", n, t.path(room), err)
			}
		}
		// Each sends an offer to each other; by the ordering rules each
		// receiver has the sender's announce, if it is to get one, before it.
		for _, x := range cs {
			for _, y := range cs {
				if x != y {
					x.send(`{"type":"offer","peerId":"` + y.id + `","signal":"hi"}`)
				}
			}
		}
		listed := map[[2]string]bool{} // {x, y}: x found y in its peers list
		for _, x := range cs {
			for _, id := range x.peerIDs() {
				listed[[2]string{x.id, id}] = true
			}
		}
		for _, x := range cs {
			announced := map[string]bool{}
			for offers := 0; offers < n-1; {
				m, err := x.next()
				switch {
				case err != nil:
					t.Fatalf("%d peers joined %s at once, then each sent an offer to each: %s got %v after %d offers", n, t.path(room), x.name, err, offers)
				case m.is("announce", ""):
					y := m.str("peerId")
					if listed[[2]string{x.id, y}] || announced[y] {
						t.Errorf("%d peers joined %s at once: %s got announce of %s, whom it had already (in its peers list %s, or announced)", n, t.path(room), x.name, t.nameOf(y), t.nameList(x.peerIDs()))
					}
					announced[y] = true
				case m.is("offer", ""):
					y := m.str("peerId")
					if !listed[[2]string{x.id, y}] && !announced[y] {
						t.Errorf("%d peers joined %s at once: %s got an offer from %s, neither in its peers list %s nor announced before", n, t.path(room), x.name, t.nameOf(y), t.nameList(x.peerIDs()))
					}
					offers++
				default:
					t.Fatalf("%d peers joined %s at once, then each sent an offer to each: %s got %s", n, t.path(room), x.name, m)
				}
			}
		}
		for i, x := range cs {
			for _, y := range cs[i+1:] {
				if listed[[2]string{x.id, y.id}] == listed[[2]string{y.id, x.id}] {
					t.Errorf("%d peers joined %s at once: %s lists %s: %v, %s lists %s: %v; want exactly one", n, t.path(room),
						x.name, y.name, listed[[2]string{x.id, y.id}], y.name, x.name, listed[[2]string{y.id, x.id}])
				}
			}
		}
	}
}

// oddSignals are valid JSON values a relay must pass on byte for byte.
var oddSignals = []string{
	`{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`,
	`{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.1 3478 typ srflx raddr 0.0.0.0 rport 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}`,
	`"\u00e9\u4E2D\ud83d\ude00\u0000 \"\\\/\b\f\n\r\t"`,
	`"é中😀 as UTF-8, and U+2028: ` + "\u2028" + `"`,
	`[1e300,-0.0E-5,1.5e+10,123456789012345678901234567890,-0,0.1,1E-7]`,
	`1E+2`, `-0`, `true`, `false`, `""`, `[]`, `{}`,
	strings.Repeat("[", 100) + strings.Repeat("]", 100),
	strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
	"{ \"a\" :\t[ 1 ,\n2 ] ,\r\n\"b\":{ } }",
	`{"type":"answer","peerId":"FORGED","signal":{"signal":"}"}}`,
	`"}{\"type\":\"x\"}"`,
}

func relayExact(t *T) {
	a, b := t.pair("/r")
	types := []string{"offer", "answer", "candidate"}
	for i, signal := range oddSignals {
		typ := types[i%3]
		var payload string
		switch i % 3 { // the fields in any order, with space between them, and more fields
		case 0:
			payload = `{"type":"` + typ + `","peerId":"` + b.id + `","signal":` + signal + `}`
		case 1:
			payload = `{"signal":` + signal + `,"peerId":"` + b.id + `","type":"` + typ + `"}`
		case 2:
			payload = "{ \"type\" : \"" + typ + "\" ,\n\t\"peerId\" : \"" + b.id + "\" , \"signal\" :  " + signal + " \r\n, \"from\":\"FORGED\" , \"x\":{\"signal\":0} }"
		}
		t.relayedExactly(a, b, typ, payload, signal)
	}
	// One frame of exactly the limit; relayed, it is as long, so its length
	// takes the 8-byte form.
	head := `{"type":"offer","peerId":"` + b.id + `","signal":"`
	signal := `"` + strings.Repeat("s", t.cfg.maxBytes-len(head)-2) + `"`
	t.relayedExactly(a, b, "offer", head[:len(head)-1]+signal+"}", signal)
	a.sync("A's offers, answers and candidates to B")
}

// relayedExactly sends payload from a and checks that b gets exactly
// {"type":typ,"peerId":a,"signal":signal}, fields in any order.
func (t *T) relayedExactly(a, b *conn, typ, payload, signal string) {
	a.send(payload)
	what := sent(a, opText, payload)
	m := b.expect(typ, a.id, what)
	keys := slices.Sorted(slices.Values(m.keys))
	if !slices.Equal(keys, []string{"peerId", "signal", "type"}) {
		t.Errorf("after %s: B got fields %q in %s; want exactly type, peerId, signal", what, m.keys, m)
	}
	if got := string(m.fields["signal"]); got != signal {
		t.Errorf("after %s: B got signal %s; want %s, byte for byte", what, show(got), show(signal))
	}
}

func relaySender(t *T) {
	cs := t.joinAll("/r", 3)
	a, b, c := cs[0], cs[1], cs[2]
	for _, typ := range []string{"offer", "answer", "candidate"} {
		payload := `{"type":"` + typ + `","peerId":"` + b.id + `","signal":1,"from":"` + c.id + `","sender":"` + c.id + `"}`
		a.send(payload)
		b.expect(typ, a.id, sent(a, opText, payload))
	}
	broadcast := `{"type":"offer","signal":2,"from":"` + c.id + `"}`
	a.send(broadcast)
	b.expect("offer", a.id, sent(a, opText, broadcast))
	c.expect("offer", a.id, sent(a, opText, broadcast))
}

func removeOnClose(t *T) {
	a, b := t.pair("/r")
	b.close()
	a.expect("remove", b.id, "B sent a close frame")
	a.sync("B left")
}

func closeReply(t *T) {
	a, b := t.pair("/r")
	b.writeFrame(true, opClose, []byte{0x03, 0xe8})
	b.closedWith(1000, "B sent a close frame with status 1000")
	a.expect("remove", b.id, "B sent a close frame")
}

func removeOnReset(t *T) {
	a, b := t.pair("/r")
	b.reset()
	a.expect("remove", b.id, "B's connection was reset (TCP RST, no close frame)")
	a.sync("B left")
}

// Client to server

func offerBroadcast(t *T) {
	cs := t.joinAll("/r", 3)
	a := cs[0]
	signal := `{"type":"offer","sdp":"v=0\r\n"}`
	offer := `{"type":"offer","signal":` + signal + `}`
	a.send(offer)
	for _, x := range cs[1:] {
		if m := x.expect("offer", a.id, sent(a, opText, offer)); string(m.fields["signal"]) != signal {
			t.Errorf("after %s: %s got %s; want the signal unchanged", sent(a, opText, offer), x.name, m)
		}
	}
	a.sync(sent(a, opText, offer) + " (the sender gets nothing back)")
}

func offerDirected(t *T) {
	cs := t.joinAll("/r", 3)
	a, b, c := cs[0], cs[1], cs[2]
	offer := `{"type":"offer","peerId":"` + b.id + `","signal":"for B"}`
	a.send(offer)
	b.expect("offer", a.id, sent(a, opText, offer))
	a.marker(c, sent(a, opText, offer)+" (for B only)")
	a.sync(sent(a, opText, offer))
}

func offerEmptyRoom(t *T) {
	a := t.join("/r")
	offer := `{"type":"offer","signal":"anyone?"}`
	a.send(offer)
	a.sync(sent(a, opText, offer) + " alone in its room")
}

// relayedTo checks that typ, with a peerId, reaches that peer only.
func relayedTo(typ string) func(t *T) {
	return func(t *T) {
		cs := t.joinAll("/r", 3)
		a, b, c := cs[0], cs[1], cs[2]
		signal := `{"type":"` + typ + `","sdp":"v=0\r\n"}`
		payload := `{"type":"` + typ + `","peerId":"` + b.id + `","signal":` + signal + `}`
		a.send(payload)
		if m := b.expect(typ, a.id, sent(a, opText, payload)); string(m.fields["signal"]) != signal {
			t.Errorf("after %s: B got %s; want the signal unchanged", sent(a, opText, payload), m)
		}
		a.marker(c, sent(a, opText, payload)+" (for B only)")
		a.sync(sent(a, opText, payload))
	}
}

func pingPong(t *T) {
	a := t.join("/r")
	for _, ping := range []string{`{"type":"ping"}`, `{"type":"ping","n":1}`} {
		a.send(ping)
		a.expect("pong", "", sent(a, opText, ping))
	}
}

// expectPong ends the check unless c gets a pong with payload.
func (c *conn) expectPong(payload, after string) {
	timer := time.NewTimer(c.t.cfg.timeout)
	defer timer.Stop()
	select {
	case got := <-c.pongs:
		if string(got) != payload {
			c.t.Fatalf("after %s: a pong with %s; want %s", after, show(got), show(payload))
		}
	case <-c.done:
		c.t.Fatalf("after %s: %v; want a pong with %s", after, c.ended(), show(payload))
	case <-timer.C:
		c.t.Fatalf("after %s: no pong within %v", after, c.t.cfg.timeout)
	}
}

func wsPingAnswered(t *T) {
	a := t.mustDial("/r", dialOptions{})
	a.writeFrame(true, opPing, []byte("before reading"))
	if m, err := a.next(); err != nil || !m.is("peers", "") {
		t.Fatalf("A sent a WebSocket ping just after its handshake: first message %s; want peers", got(m, err))
	}
	a.expectPong("before reading", "A sent a WebSocket ping just after its handshake")
	for _, payload := range []string{"", "x", strings.Repeat("p", 125)} {
		a.writeFrame(true, opPing, []byte(payload))
	}
	for _, payload := range []string{"", "x", strings.Repeat("p", 125)} {
		a.expectPong(payload, "A sent three WebSocket pings at once, the last with "+show(payload))
	}
	a.sync("A's WebSocket pings")
}

func wsPingAfterQuiet(t *T) {
	quiet := t.cfg.quiet()
	t.takes(quiet)
	a := t.join("/r")
	time.Sleep(quiet) // the quiet is what is checked
	a.writeFrame(true, opPing, []byte("after quiet"))
	a.expectPong("after quiet", fmt.Sprintf("A, quiet for %v (longer than -write-timeout %v), sent a WebSocket ping", quiet, t.cfg.writeTimeout))
	a.sync("A's WebSocket ping after a quiet time")
}

// Errors

func errorConnectionUsable(t *T) {
	a, b := t.pair("/r")
	payloads := []string{`x`, `{}`, `{"type":"nope"}`, `{"type":"offer"}`, `{"type":"answer","signal":1}`, `{"type":"offer","peerId":"NOBODY","signal":1}`}
	for range 5 {
		for _, p := range payloads {
			a.send(p)
		}
	}
	for i := range 5 * len(payloads) {
		if m, err := a.next(); err != nil || !m.is("error", "") {
			t.Fatalf("A sent 30 bad messages at once; after %d replies, the reply to %s: %s; want an error", i, show(payloads[i%len(payloads)]), got(m, err))
		}
	}
	a.sync("30 bad messages from A")
	a.marker(b, "30 bad messages from A")
	b.marker(a, "30 bad messages from A")
}

func errorBinaryFrame(t *T) {
	a, b := t.pair("/r")
	const want = "binary frames are not accepted; send JSON as text"
	errorRows(t, a, b, []bad{
		{op: opBinary, payload: `{"type":"ping"}`, want: want},
		{op: opBinary, payload: `{"type":"offer","peerId":"` + b.id + `","signal":"binary"}`, want: want},
		{op: opBinary, payload: "\xff\x00", want: want},
	})
}

func errorInvalidUTF8(t *T) {
	a, b := t.pair("/r")
	const want = "message is not valid UTF-8"
	var rows []bad
	for _, invalid := range []string{"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"} { // a bad byte, overlong, a surrogate, past U+10FFFF, cut short
		rows = append(rows, bad{payload: `{"type":"ping","x":"` + invalid + `"}`, want: want})
	}
	rows = append(rows,
		bad{payload: `{"type":"ping","` + "\xff" + `":1}`, want: want},
		bad{payload: `{"type":"offer","peerId":"` + b.id + `","signal":"` + "\xfe" + `"}`, want: want},
	)
	errorRows(t, a, b, rows)
}

func errorNotJSONObject(t *T) {
	a, b := t.pair("/r")
	const want = "message is not a JSON object"
	var rows []bad
	for _, p := range []string{"hello", "null", "[]", `"x"`, "1", "true", "", " ", "{", `{"type":"ping"}{}`, `{"type":"ping",}`, `[{"type":"ping"}]`, `{'type':'ping'}`,
		`{"type":"offer","peerId":"` + b.id + `","signal":1`} {
		rows = append(rows, bad{payload: p, want: want})
	}
	errorRows(t, a, b, rows)
}

func errorTypeMissing(t *T) {
	a, b := t.pair("/r")
	const want = `message needs "type", a string that is not empty`
	var rows []bad
	for _, p := range []string{`{}`, `{"type":1}`, `{"type":null}`, `{"type":""}`, `{"type":["ping"]}`, `{"type":{"type":"ping"}}`, `{"type":true}`,
		`{"peerId":"` + b.id + `","signal":1}`} {
		rows = append(rows, bad{payload: p, want: want})
	}
	errorRows(t, a, b, rows)
}

func errorUnknownType(t *T) {
	a, b := t.pair("/r")
	var rows []bad
	for _, typ := range []string{"announce", "remove", "error", "pong", "PING", "Peers", "offer ", "hello"} {
		rows = append(rows, bad{payload: `{"type":"` + typ + `","peerId":"` + b.id + `","signal":1}`, want: `unknown message type "` + typ + `"`})
	}
	errorRows(t, a, b, rows)
}

func errorSignalMissing(t *T) {
	a, b := t.pair("/r")
	errorRows(t, a, b, []bad{
		{payload: `{"type":"offer"}`, want: "offer needs a signal"},
		{payload: `{"type":"offer","peerId":"` + b.id + `","signal":null}`, want: "offer needs a signal"},
		{payload: `{"type":"answer","peerId":"` + b.id + `"}`, want: "answer needs a signal"},
		{payload: `{"type":"answer","peerId":"` + b.id + `","signal":null}`, want: "answer needs a signal"},
		{payload: `{"type":"candidate","peerId":"` + b.id + `","signal":null}`, want: "candidate needs a signal"},
		{payload: `{"type":"candidate","peerId":"` + b.id + `"}`, want: "candidate needs a signal"},
	})
}

const needsPeerIDText = `message needs "peerId", a string that is not empty`

// needsPeerID checks that typ without peerId is an error.
func needsPeerID(typ string) func(t *T) {
	return func(t *T) {
		a, b := t.pair("/r")
		errorRows(t, a, b, []bad{
			{payload: `{"type":"` + typ + `","signal":{"type":"` + typ + `","sdp":"v=0\r\n"}}`, want: needsPeerIDText},
			{payload: `{"type":"` + typ + `","signal":"x","peerid":"` + b.id + `"}`, want: needsPeerIDText},
		})
	}
}

func errorPeerIDNotString(t *T) {
	a, b := t.pair("/r")
	var rows []bad
	for i, id := range []string{`null`, `""`, `1`, `["` + b.id + `"]`, `{"id":"` + b.id + `"}`, `true`} {
		typ := []string{"offer", "answer", "candidate"}[i%3]
		rows = append(rows, bad{payload: `{"type":"` + typ + `","peerId":` + id + `,"signal":1}`, want: needsPeerIDText})
	}
	errorRows(t, a, b, rows)
}

func errorPeerNotInRoom(t *T) {
	a, b := t.pair("/r")
	other := t.join("/other")
	d := t.join("/r")
	a.expect("announce", d.id, "D joined")
	b.expect("announce", d.id, "D joined")
	d.close()
	a.expect("remove", d.id, "D left")
	b.expect("remove", d.id, "D left")
	unknown := rand.Text()
	no := func(id string) string { return `no peer "` + id + `" in this room` }
	errorRows(t, a, b, []bad{
		{payload: `{"type":"offer","peerId":"` + unknown + `","signal":1}`, want: no(unknown)},
		{payload: `{"type":"answer","peerId":"` + a.id + `","signal":1}`, want: no(a.id)},            // the sender itself
		{payload: `{"type":"candidate","peerId":"` + other.id + `","signal":1}`, want: no(other.id)}, // in another room
		{payload: `{"type":"offer","peerId":"` + d.id + `","signal":1}`, want: no(d.id)},             // gone
	})
}

func errorFragment(t *T) {
	a, b := t.pair("/r")
	const want = "message is not a JSON object"
	for _, parts := range [][2]string{
		{`{"type":"pi`, `ng"}`},
		{`{"type":"offer","peerId":"` + b.id + `",`, `"signal":"fragmented"}`},
	} {
		a.writeFrame(false, opText, []byte(parts[0]))
		a.writeFrame(true, opContinuation, []byte(parts[1]))
		what := fmt.Sprintf("A sent a text frame %s (not final) and a continuation frame %s", show(parts[0]), show(parts[1]))
		a.expectError(what+": the first fragment", want)
		a.expectError(what+": the second fragment", want)
		a.sync(what)
	}
	a.marker(b, "A's fragments")
}

// Ordering

func orderPerSender(t *T) {
	cs := t.joinAll("/r", 3)
	a, b, c := cs[0], cs[1], cs[2]
	const n = 150
	var wg sync.WaitGroup
	for _, x := range []*conn{a, c} {
		wg.Go(func() {
			for i := range n {
				var payload string
				switch i % 4 {
				case 0:
					payload = fmt.Sprintf(`{"type":"offer","signal":%d}`, i) // to B and the other sender
				case 1:
					payload = fmt.Sprintf(`{"type":"offer","peerId":"%s","signal":%d}`, b.id, i)
				case 2:
					payload = fmt.Sprintf(`{"type":"answer","peerId":"%s","signal":%d}`, b.id, i)
				case 3:
					payload = fmt.Sprintf(`{"type":"candidate","peerId":"%s","signal":%d}`, b.id, i)
				}
				if x.writeFrame(true, opText, []byte(payload)) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	next := map[string]int{a.id: 0, c.id: 0}
	for range 2 * n {
		m, err := b.next()
		if err != nil {
			t.Fatalf("A and C each sent B %d messages at once, numbered: B got %v after A's %d and C's %d", n, err, next[a.id], next[c.id])
		}
		from := m.str("peerId")
		want, ok := next[from]
		if !ok || string(m.fields["signal"]) != strconv.Itoa(want) {
			t.Fatalf("A and C each sent B %d messages at once, with signals 0, 1, …: after %d from %s, B got %s; want signal %d", n, want, t.nameOf(from), m, want)
		}
		next[from]++
	}
}

func orderAnnounceFirst(t *T) {
	a := t.join("/r")
	const n = 6
	xs := make([]*conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range xs {
		wg.Go(func() { // each newcomer offers to the room right after its handshake
			xs[i], errs[i] = t.connect("/r", dialOptions{onOpen: []byte(`{"type":"offer","signal":"hello"}`)})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("%d peers joining at once: %v", n, err)
		}
	}
	for _, r := range append([]*conn{a}, xs...) {
		known := map[string]bool{}  // ids r found in its peers list, or got an announce of
		expect := map[string]bool{} // senders whose offer r must get: those who joined after it
		for _, id := range r.peerIDs() {
			known[id] = true
		}
		for _, x := range xs {
			if x != r && !known[x.id] {
				expect[x.id] = true
			}
		}
		for len(expect) > 0 {
			m, err := r.next()
			if err != nil {
				t.Fatalf("%d peers joined A's room at once, each sending an offer to the room at once: %s got %v, still waiting for offers from %s",
					n, r.name, err, t.nameList(slices.Collect(mapKeys(expect))))
			}
			from := m.str("peerId")
			switch {
			case m.is("announce", ""):
				known[from] = true
			case m.is("offer", ""):
				if !known[from] {
					t.Errorf("%d peers joined at once, each sending an offer to the room at once: %s got the offer from %s before its announce", n, r.name, t.nameOf(from))
				}
				delete(expect, from)
			default:
				t.Fatalf("%d peers joined at once, each sending an offer to the room at once: %s got %s", n, r.name, m)
			}
		}
	}
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func orderNothingAfterRemove(t *T) {
	for _, reset := range []bool{false, true} {
		room := map[bool]string{false: "/close", true: "/reset"}[reset]
		a, b := t.pair(room)
		const n = 50
		for i := range n {
			b.send(fmt.Sprintf(`{"type":"offer","peerId":"%s","signal":%d}`, a.id, i))
		}
		how := "sent a close frame"
		if reset {
			how = "reset its connection"
			b.reset() // offers not yet read by the server may be lost
		} else {
			b.close()
		}
		what := fmt.Sprintf("B sent A %d offers and %s", n, how)
		for i := 0; ; i++ {
			m, err := a.next()
			if err != nil {
				t.Fatalf("after %s: A got %v after %d offers; want the rest, then remove of B", what, err, i)
			}
			if m.is("remove", b.id) {
				if !reset && i < n {
					t.Errorf("after %s: A got remove of B after %d of the offers; want all %d first", what, i, n)
				}
				break
			}
			if !m.is("offer", b.id) || string(m.fields["signal"]) != strconv.Itoa(i) {
				t.Fatalf("after %s: A got %s; want offer %d from B, or remove of B", what, m, i)
			}
		}
		a.sync(what + ", and A got remove of B")
	}
}

// Liveness

func livenessServerPings(t *T) {
	t.needs("ping")
	within := 2*t.cfg.ping + t.cfg.ping/2 + t.cfg.timeout
	t.takes(within)
	a := t.join("/r")
	timer := time.NewTimer(within)
	defer timer.Stop()
	for i := range 2 {
		select {
		case <-a.pings:
		case <-a.done:
			t.Fatalf("A, waiting for the server's pings (-ping %v): %v after %d pings", t.cfg.ping, a.ended(), i)
		case <-timer.C:
			t.Fatalf("A got %d WebSocket pings in %v; want 2 (-ping %v)", i, within, t.cfg.ping)
		}
	}
}

func livenessSilentDropped(t *T) {
	t.needs("ping")
	within := 3*t.cfg.ping + t.cfg.timeout
	t.takes(within)
	a := t.join("/r")
	s, err := t.connect("/r", dialOptions{noPongs: true})
	if err != nil {
		t.Fatalf("%v", err)
	}
	start := time.Now()
	a.expect("announce", s.id, "B joined")
	if !s.waitEnd(within) {
		t.Fatalf("B answered no ping and sent nothing: still connected after %v; want dropped after two ping intervals (-ping %v)", within, t.cfg.ping)
	}
	if d := time.Since(start); d < t.cfg.ping*3/2 {
		t.Errorf("B answered no ping and sent nothing: dropped after %v; want two ping intervals (-ping %v)", d.Round(time.Millisecond), t.cfg.ping)
	}
	a.expect("remove", s.id, "B was dropped")
}

func livenessTrafficKeepsAlive(t *T) {
	t.needs("ping")
	stay := 3*t.cfg.ping + t.cfg.ping/2
	t.takes(stay)
	a := t.join("/r") // answers pings, says nothing
	var quiet []*conn // B sends messages, C WebSocket pings; neither answers pings
	for range 2 {
		c, err := t.connect("/r", dialOptions{noPongs: true})
		if err != nil {
			t.Fatalf("%v", err)
		}
		a.expect("announce", c.id, c.name+" joined")
		quiet = append(quiet, c)
	}
	b, c := quiet[0], quiet[1]
	b.expect("announce", c.id, "C joined")
	end := time.After(stay)
	tick := time.NewTicker(t.cfg.ping / 2)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
			b.send(`{"type":"ping"}`)
			b.expect("pong", "", `B sent {"type":"ping"}`)
			c.writeFrame(true, opPing, []byte("alive"))
			c.expectPong("alive", "C sent a WebSocket ping")
		case <-end:
			done = true
		}
	}
	a.sync(fmt.Sprintf("A answered pings, and only that, for %v (-ping %v)", stay, t.cfg.ping))
	b.sync(fmt.Sprintf("B sent a message every %v but answered no ping, for %v", t.cfg.ping/2, stay))
	c.sync(fmt.Sprintf("C sent a WebSocket ping every %v but answered no ping, for %v", t.cfg.ping/2, stay))
}

func slowPeerDropped(t *T) {
	a, b := t.pair("/r")
	t.mustDial("/r", dialOptions{noRead: true}) // S reads nothing, not even its peers list
	m := a.expect("announce", "", "S, which reads nothing, joined")
	sid := m.str("peerId")
	b.expect("announce", sid, "S, which reads nothing, joined")
	// A sends S offers until the server drops S, up to 64 MiB: more than 4 MiB
	// waiting, plus what the sockets on the way hold.
	const most = 64 << 20
	offer := []byte(`{"type":"offer","peerId":"` + sid + `","signal":"` + strings.Repeat("x", min(t.cfg.maxBytes, 64<<10)-80) + `"}`)
	removed := make(chan error, 1)
	var sending atomic.Bool // waiting for A's writes, A gets nothing: not a timeout
	sending.Store(true)
	go func() { // ends when A gets remove of S, or fails to
		m, err := a.next()
		for err == nil && m.is("pong", "") || errors.Is(err, errNothing) && sending.Load() {
			m, err = a.next()
		}
		if err == nil && !m.is("remove", sid) {
			err = fmt.Errorf("got %s", m)
		}
		removed <- err
	}()
	start, sent := time.Now(), 0
	for sent < most {
		select {
		case err := <-removed:
			if err != nil {
				t.Fatalf("A sent S, which reads nothing, %d MiB of offers: A %v; want remove of S", sent>>20, err)
			}
			b.expect("remove", sid, "S was dropped")
			a.marker(b, "S was dropped") // nor did S hold up anyone else
			return
		default:
		}
		if time.Since(start) > budget/2 {
			t.Skipf("sent S only %d MiB in %v: the link is too slow for this check", sent>>20, budget/2)
		}
		if err := a.writeFrame(true, opText, offer); err != nil {
			t.Fatalf("A sending offers to S: %v", err)
		}
		sent += len(offer)
	}
	sending.Store(false)
	select {
	case err := <-removed:
		if err == nil {
			b.expect("remove", sid, "S was dropped")
			return
		}
	case <-time.After(2 * t.cfg.timeout):
	}
	t.Errorf("A sent S, which reads nothing, %d MiB of offers: S still in the room; want it dropped once more than 4 MiB waits for it", sent>>20)
}

// Summaries

func envelopeTextJSONObject(t *T) {
	a, b := t.pair("/r") // a few messages of its own, in case it runs alone
	a.send(`{"type":"offer","peerId":"` + b.id + `","signal":1}`)
	b.expect("offer", a.id, "A sent an offer")
	a.sync("A sent an offer")
	t.run.mu.Lock()
	defer t.run.mu.Unlock()
	for _, fault := range t.run.faults {
		t.Errorf("the server sent %s", fault)
	}
}

func idUnique(t *T) {
	t.pair("/r")
	t.run.mu.Lock()
	defer t.run.mu.Unlock()
	for _, id := range t.run.dupes {
		t.Errorf("id given twice: %s", id)
	}
}
