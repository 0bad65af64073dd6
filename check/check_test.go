package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var peeroBin string // the real server, built from ../main.go by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peero-check-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	peeroBin = filepath.Join(dir, "peero")
	build := exec.Command("go", "build", "-o", peeroBin, ".")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "check: building peero:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// settings are the real server's settings in these tests, given as flags to
// it and to the checker; the TURN secret is in its environment.
var settings = []string{"-max-peers", "200", "-max-room-peers", "20", "-origin", "https://ok.example", "-turn", "turn:127.0.0.1:3478"}

const turnSecret = "check-test-secret"

// checkerFlags returns the checker's flags for a server started with settings
// and more.
func checkerFlags(more ...string) []string {
	return slices.Concat(settings, []string{"-turn-secret", turnSecret}, more)
}

// startServer runs the real server with settings and more flags, and returns
// its address. It is killed when the test ends; its log is printed if the
// test failed.
func startServer(t *testing.T, more ...string) string {
	return startServerWith(t, slices.Concat(settings, more), "PEERO_TURN_SECRET="+turnSecret)
}

func startServerWith(t *testing.T, flags []string, env ...string) string {
	t.Helper()
	cmd := exec.Command(peeroBin, append([]string{"-port", "0"}, flags...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log bytes.Buffer
	ports := make(chan string, 1)
	go func() { // ends when the server exits and its stderr closes
		portRE := regexp.MustCompile(`peero listening port=(\d+)`)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := portRE.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("server log:\n%s", log.String())
		}
	})
	select {
	case port := <-ports:
		return "127.0.0.1:" + port
	case <-time.After(10 * time.Second):
		t.Fatal("peero did not say its port")
		return ""
	}
}

// runChecker runs the checker against addr with args, and returns its exit
// status and output.
func runChecker(t *testing.T, addr string, args ...string) (int, string) {
	t.Helper()
	args = slices.Concat([]string{"-timeout", "2s", "-write-timeout", "300ms"}, args)
	var out, errs bytes.Buffer
	code := run(append(args, "ws://"+addr), &out, &errs, func(string) string { return "" })
	if errs.Len() > 0 {
		t.Errorf("checker stderr: %s", errs.String())
	}
	return code, out.String()
}

var summaryRE = regexp.MustCompile(`\n(\d+) passed, (\d+) failed, (\d+) skipped\n$`)

// TestRealServer: the real server passes every check, directly and through
// a proxy that changes nothing. The liveness checks run on their own, with a
// short ping interval: with every check at once, peers of a busy machine (go
// test -race ./... on two cores) can miss two such intervals. So do the two
// checks for a server without an origin list and without TURN.
func TestRealServer(t *testing.T) {
	t.Parallel()
	full := checkerFlags() // without -ping: the liveness checks are skipped
	cases := []struct {
		name    string
		addr    string
		args    []string // for the checker
		skipped int
	}{
		{"direct", startServer(t, "-ping", "2s"), full, 5},
		{"proxy", startProxy(t, startServer(t, "-ping", "2s"), nil), full, 5},
		{"liveness", startServer(t, "-ping", "1s"), checkerFlags("-ping", "1s", "-run", "^liveness-"), 0},
		{"unconfigured", startServerWith(t, []string{"-ping", "2s"}), []string{"-origin=", "-turn=", "-run", "^(origin|turn)-"}, 2},
	} // each its own server: server-full fills it
	outs := make([]string, len(cases))
	codes := make([]int, len(cases))
	var wg sync.WaitGroup
	for i, tt := range cases { // all at once: subtests would run only GOMAXPROCS at once
		wg.Go(func() { codes[i], outs[i] = runChecker(t, tt.addr, tt.args...) })
	}
	wg.Wait()
	for i, tt := range cases {
		m := summaryRE.FindStringSubmatch(outs[i])
		if codes[i] != 0 || m == nil || m[2] != "0" || m[3] != fmt.Sprint(tt.skipped) || strings.Contains(outs[i], "\nFAIL ") {
			t.Errorf("%s: checker exit %d, output:\n%s\nwant exit 0, nothing failed, %d skipped", tt.name, codes[i], outs[i], tt.skipped)
		}
	}
}

// TestBrokenServers: each broken server, the real one behind a proxy that
// changes one thing, is caught by the check named for the rule it breaks.
func TestBrokenServers(t *testing.T) {
	t.Parallel()
	addr := startServer(t, "-ping", "500ms")
	cases := []struct {
		check  string // the check that must fail
		change change
	}{
		{"relay-exact", onType(toClient, "offer", "answer", "candidate", func(s *session, m msg) []frame {
			return textFrame(rebuild(m, nil, `"via":"proxy"`)) // a field more
		})},
		{"error-invalid-utf8", func(s *session, dir direction, f frame) []frame {
			if dir == toServer && f.op == opText {
				f.data = bytes.ToValidUTF8(f.data, []byte("?")) // so the server never sees invalid UTF-8
			}
			return []frame{f}
		}},
		{"error-connection-usable", onType(toClient, "error", func(s *session, m msg) []frame {
			return append(textFrame(m.raw), frame{end: true}) // an error, then the connection is gone
		})},
		{"remove-on-close", onType(toClient, "remove", drop)},
		{"announce-on-join", onType(toClient, "announce", drop)},
		{"relay-sender-set-by-server", func(s *session, dir direction, f frame) []frame {
			m := parseMsg(f.op, f.data)
			switch {
			case dir == toServer && m.err == nil: // note the peerId the sender wrote
				s.p.claim(s.clientID(), m.str("peerId"))
			case dir == toClient && slices.Contains([]string{"offer", "answer", "candidate"}, m.typ()):
				if claimed := s.p.claimed(m.str("peerId")); claimed != "" { // the server trusts it
					return textFrame(rebuild(m, map[string]string{"peerId": `"` + claimed + `"`}, ""))
				}
			}
			return []frame{f}
		}},
		{"ws-ping-answered", func(s *session, dir direction, f frame) []frame {
			if dir == toClient && f.op == opPong {
				return nil
			}
			return []frame{f}
		}},
		{"error-binary-frame", func(s *session, dir direction, f frame) []frame {
			if dir == toServer && f.op == opBinary {
				f.op = opText
			}
			return []frame{f}
		}},
		{"peers-lists-others", onType(toClient, "peers", func(s *session, m msg) []frame {
			if string(m.fields["peers"]) == "[]" {
				return textFrame(rebuild(m, map[string]string{"peers": "null"}, ""))
			}
			return textFrame(m.raw)
		})},
		{"envelope-case-sensitive", func(s *session, dir direction, f frame) []frame {
			if dir == toServer {
				f.data = bytes.ReplaceAll(f.data, []byte(`"Type"`), []byte(`"type"`))
			}
			return []frame{f}
		}},
		{"liveness-silent-dropped", func(s *session, dir direction, f frame) []frame {
			if dir == toClient && f.op == opPing { // the proxy answers for the client
				s.write(toServer, frame{fin: true, op: opPong, data: f.data})
			}
			return []frame{f}
		}},
		{"ws-ping-answered-after-quiet", pongsOnlyWhileBusy()},
		{"reserved-opcode-closes", func(s *session, dir direction, f frame) []frame {
			if dir == toServer && (f.op >= 0x3 && f.op <= 0x7 || f.op >= 0xB) {
				f.op = opBinary // which gets an error, and the connection stays
			}
			return []frame{f}
		}},
		{"turn-credential", onType(toClient, "peers", func(s *session, m msg) []frame {
			return textFrame(bytes.Replace(m.raw, []byte(`"credential":"`), []byte(`"credential":"x`), 1))
		})},
	}
	outs := make([]string, len(cases))
	codes := make([]int, len(cases))
	var wg sync.WaitGroup
	for i, tt := range cases { // all at once: subtests would run only GOMAXPROCS at once
		proxy := startProxy(t, addr, tt.change)
		args := checkerFlags("-ping", "500ms", "-run", "^"+tt.check+"$", "-timeout", "1s")
		wg.Go(func() { codes[i], outs[i] = runChecker(t, proxy, args...) })
	}
	wg.Wait()
	for i, tt := range cases {
		if codes[i] != 1 || !strings.HasPrefix(outs[i], "FAIL "+tt.check+": ") {
			t.Errorf("checker exit %d, output:\n%s\nwant exit 1 and a line FAIL %s: …", codes[i], outs[i], tt.check)
		}
		t.Logf("%s", outs[i])
	}
}

// pongsOnlyWhileBusy drops the server's pongs once no message was sent to the
// client for a while (the checker's -write-timeout here), like a server
// whose pongs fail once the write deadline of its last message has passed.
func pongsOnlyWhileBusy() change {
	var mu sync.Mutex
	last := map[*session]time.Time{} // when a message last went to the client
	return func(s *session, dir direction, f frame) []frame {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case dir == toClient && f.op == opPong && time.Since(last[s]) > 300*time.Millisecond:
			return nil
		case dir == toClient && f.op == opText:
			last[s] = time.Now()
		}
		return []frame{f}
	}
}

// A proxy in front of the real server that understands WebSocket frames, so
// that a test can change what passes.

type direction int

const (
	toServer direction = iota
	toClient
)

// frame is a WebSocket frame, unmasked; end, instead, ends the connection.
type frame struct {
	fin  bool
	op   byte
	data []byte
	end  bool
}

// change returns the frames to pass on instead of f; nil drops f.
type change func(s *session, dir direction, f frame) []frame

func drop(*session, msg) []frame { return nil }

func textFrame(data []byte) []frame { return []frame{{fin: true, op: opText, data: data}} }

// onType applies do to the text messages of the types listed going in dir;
// other frames pass unchanged. The list ends with do.
func onType(dir direction, typesAndDo ...any) change {
	do := typesAndDo[len(typesAndDo)-1].(func(*session, msg) []frame)
	var types []string
	for _, typ := range typesAndDo[:len(typesAndDo)-1] {
		types = append(types, typ.(string))
	}
	return func(s *session, d direction, f frame) []frame {
		if m := parseMsg(f.op, f.data); d == dir && f.op == opText && m.err == nil && slices.Contains(types, m.typ()) {
			return do(s, m)
		}
		return []frame{f}
	}
}

// rebuild returns m with the fields in set replaced by raw JSON values, and
// extra members (raw JSON) appended.
func rebuild(m msg, set map[string]string, extra string) []byte {
	var members []string
	for _, k := range m.keys {
		v := string(m.fields[k])
		if r, ok := set[k]; ok {
			v = r
		}
		members = append(members, fmt.Sprintf("%q:%s", k, v))
	}
	if extra != "" {
		members = append(members, extra)
	}
	return []byte("{" + strings.Join(members, ",") + "}")
}

type proxy struct {
	target string
	change change

	mu     sync.Mutex
	claims map[string]string // a client's id -> the peerId in its last message, or ""
}

// claim notes peerID, the peerId in the last message from the client with id.
func (p *proxy) claim(id, peerID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claims[id] = peerID
}

// claimed returns the peerId in the last message from the client with id.
func (p *proxy) claimed(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.claims[id]
}

// session is one client's connection through the proxy.
type session struct {
	p              *proxy
	client, server net.Conn
	wmu            [2]sync.Mutex // per direction

	mu sync.Mutex // guards id
	id string     // the client's id, from its first peers message
}

// startProxy listens on a free port and proxies each connection to target,
// passing frames through change (all unchanged if nil). It stops when the
// test ends.
func startProxy(t *testing.T, target string, ch change) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if ch == nil {
		ch = func(_ *session, _ direction, f frame) []frame { return []frame{f} }
	}
	p := &proxy{target: target, change: ch, claims: map[string]string{}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() { // accepts until the listener is closed
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, server)
			mu.Unlock()
			s := &session{p: p, client: client, server: server}
			wg.Go(s.serve) // ends when either side ends
		}
	})
	return ln.Addr().String()
}

// serve passes the handshake through, then frames, each through change, or
// bytes as they are if the server did not switch to WebSocket.
func (s *session) serve() {
	defer s.client.Close()
	defer s.server.Close()
	cr, sr := bufio.NewReader(s.client), bufio.NewReader(s.server)
	if err := copyHead(s.server, cr); err != nil {
		return
	}
	status, err := sr.Peek(12)
	if err != nil {
		return
	}
	if !bytes.HasSuffix(status, []byte(" 101")) {
		go io.Copy(s.server, cr)
		io.Copy(s.client, sr)
		return
	}
	if err := copyHead(s.client, sr); err != nil {
		return
	}
	done := make(chan struct{})
	go func() { // ends when the client's side ends, or the server's (which closes both)
		defer close(done)
		s.pass(cr, toServer)
		s.client.Close()
		s.server.Close()
	}()
	s.pass(sr, toClient)
	s.client.Close()
	s.server.Close()
	<-done
}

// copyHead copies an HTTP head, up to its blank line.
func copyHead(w io.Writer, r *bufio.Reader) error {
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return err
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
	}
}

// pass reads frames going in dir and writes what change makes of them.
func (s *session) pass(r *bufio.Reader, dir direction) {
	for {
		f, err := readAnyFrame(r)
		if err != nil {
			return
		}
		if dir == toClient && f.op == opText && s.clientID() == "" { // the first message: peers
			s.mu.Lock()
			s.id = parseMsg(f.op, f.data).str("id")
			s.mu.Unlock()
		}
		for _, out := range s.p.change(s, dir, f) {
			if out.end || s.write(dir, out) != nil {
				s.client.Close()
				s.server.Close()
				return
			}
		}
	}
}

func (s *session) clientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// write sends f in dir, masked if to the server.
func (s *session) write(dir direction, f frame) error {
	s.wmu[dir].Lock()
	defer s.wmu[dir].Unlock()
	b := []byte{f.op}
	if f.fin {
		b[0] |= 0x80
	}
	mask := byte(0)
	if dir == toServer {
		mask = 0x80
	}
	switch n := len(f.data); {
	case n <= 125:
		b = append(b, mask|byte(n))
	case n < 1<<16:
		b = append(b, mask|126, byte(n>>8), byte(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	data := f.data
	if dir == toServer {
		var key [4]byte
		rand.Read(key[:])
		b = append(b, key[:]...)
		data = make([]byte, len(f.data))
		for i, x := range f.data {
			data[i] = x ^ key[i%4]
		}
	}
	w := s.client
	if dir == toServer {
		w = s.server
	}
	_, err := w.Write(append(b, data...))
	return err
}

// readAnyFrame reads a frame, masked or not, and unmasks it.
func readAnyFrame(r *bufio.Reader) (frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return frame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return frame{}, err
		}
	}
	if n > 1<<20 {
		return frame{}, fmt.Errorf("frame of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return frame{}, err
	}
	if masked {
		for i := range data {
			data[i] ^= key[i%4]
		}
	}
	return frame{fin: h[0]&0x80 != 0, op: h[0] & 0x0f, data: data}, nil
}
