package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
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
	"sync/atomic"
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
var settings = []string{"-max-peers", "200", "-max-room-peers", "20", "-origin", "https://ok.example",
	"-turn", "turn:127.0.0.1:3478", "-resume-ttl", "2s"}

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
// status and output. Each reply may take up to 5 s (-timeout): with the
// checks of several runs at once under -race, a busy machine has taken
// more than 2 s for a handshake. A check that passes never waits that long.
func runChecker(t *testing.T, addr string, args ...string) (int, string) {
	t.Helper()
	args = slices.Concat([]string{"-timeout", "5s", "-write-timeout", "300ms"}, args)
	var out, errs bytes.Buffer
	code := run(append(args, "ws://"+addr), &out, &errs, func(string) string { return "" })
	if errs.Len() > 0 {
		t.Errorf("checker stderr: %s", errs.String())
	}
	return code, out.String()
}

var summaryRE = regexp.MustCompile(`\n(\d+) passed, (\d+) failed, (\d+) skipped\n$`)

// quietCheck is the check that stays quiet for longer than the server's write
// timeout.
const quietCheck = "ws-ping-answered-after-quiet"

// TestRealServer: the real server passes every rule protocol.md names,
// directly and through a proxy that changes nothing; only the rules that need
// a setting a case does not give are skipped, each by name. The liveness
// checks run on their own: with every check at once, peers of a busy machine
// (go test -race ./... on two cores) can miss two ping intervals. So do the
// two checks for a server without an origin list and without TURN, and
// ws-ping-answered-after-quiet, which is told the server's real write timeout
// (10 s, main.go's default; it has no flag) and so stays quiet for 12.5 s
// while the others run: the liveness checks, which take about 7 s at -ping 2s,
// fit in that time.
func TestRealServer(t *testing.T) {
	t.Parallel()
	rules := protocolRules(t)
	full := checkerFlags("-skip", "^"+quietCheck+"$") // without -ping: the liveness checks are skipped
	needPing := []string{"liveness-server-pings", "liveness-silent-dropped", "liveness-traffic-keeps-alive"}
	fullSkips := slices.Concat(needPing, []string{"origin-any-without-list", "turn-unconfigured", quietCheck})
	cases := []struct {
		name    string
		addr    string
		args    []string // for the checker, besides -run
		run     string   // the rules to check, as -run takes them; "" for all
		skipped []string // the rules that must be skipped; every other rule run must pass
	}{
		{"direct", startServer(t, "-ping", "2s"), full, "", fullSkips},
		{"proxy", startProxy(t, startServer(t, "-ping", "2s"), nil).addr, full, "", fullSkips},
		{"liveness", startServer(t, "-ping", "2s"), checkerFlags("-ping", "2s"), "^liveness-", nil},
		{"unconfigured", startServerWith(t, []string{"-ping", "2s"}), []string{"-origin=", "-turn="}, "^(origin|turn)-", []string{"origin-allow-list", "turn-credential"}},
		// -ping 1h: the server's pings would set a new write deadline every
		// interval, and so hide a pong that fails once the last one passed.
		{"quiet", startServer(t, "-ping", "1h"), checkerFlags("-write-timeout", "10s"), "^" + quietCheck + "$", nil},
	} // each its own server: server-full fills it
	outs := make([]string, len(cases))
	codes := make([]int, len(cases))
	var wg sync.WaitGroup
	for i, tt := range cases { // all at once: subtests would run only GOMAXPROCS at once
		args := tt.args
		if tt.run != "" {
			args = slices.Concat(args, []string{"-run", tt.run})
		}
		wg.Go(func() { codes[i], outs[i] = runChecker(t, tt.addr, args...) })
	}
	wg.Wait()
	passedSomewhere := map[string]bool{}
	for i, tt := range cases {
		passed, skipped, failed := results(outs[i])
		for _, name := range passed {
			passedSomewhere[name] = true
		}
		run := regexp.MustCompile(tt.run)
		var wantPassed []string
		for _, rule := range rules {
			if run.MatchString(rule) && !slices.Contains(tt.skipped, rule) {
				wantPassed = append(wantPassed, rule)
			}
		}
		wantSkipped := slices.Sorted(slices.Values(tt.skipped))
		if m := summaryRE.FindStringSubmatch(outs[i]); codes[i] != 0 || m == nil || len(failed) > 0 ||
			!slices.Equal(passed, wantPassed) || !slices.Equal(skipped, wantSkipped) {
			t.Errorf("%s: checker exit %d, output:\n%s\nfailed %v, not passed %v, passed but not a rule run here %v, skipped %v;\nwant exit 0, every rule of protocol.md run here passed, skipped %v",
				tt.name, codes[i], outs[i], failed, missing(passed, wantPassed), missing(wantPassed, passed), skipped, wantSkipped)
		}
	}
	for _, rule := range rules {
		if !passedSomewhere[rule] {
			t.Errorf("protocol.md names the rule %s; no case passed it (no check of that name ran, or it never passed)", rule)
		}
	}
}

// notRules are the words in protocol.md in code type, written like rule
// names, that are not rules.
var notRules = []string{
	"north-wind",                            // an example secret
	"use-auth-secret", "static-auth-secret", // coturn's options
	"permessage-deflate", // a WebSocket extension
}

// protocolRules returns the names protocol.md gives its rules, sorted: the
// words in code type that are lower-case words joined by hyphens, except
// notRules. They come from the document, not from the checker's list, so that
// a check dropped from the list is missed.
func protocolRules(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, m := range regexp.MustCompile("`([a-z0-9]+(?:-[a-z0-9]+)+)`").FindAllStringSubmatch(string(doc), -1) {
		if !slices.Contains(notRules, m[1]) && !slices.Contains(rules, m[1]) {
			rules = append(rules, m[1])
		}
	}
	if len(rules) < 50 {
		t.Fatalf("protocol.md names %d rules: %v; want the 60 or so it had", len(rules), rules)
	}
	slices.Sort(rules)
	return rules
}

// results returns the names of the checks the checker's output says passed,
// were skipped and failed, each sorted.
func results(out string) (passed, skipped, failed []string) {
	for _, line := range strings.Split(out, "\n") {
		verdict, rest, _ := strings.Cut(line, " ")
		name, _, _ := strings.Cut(rest, ":")
		switch verdict {
		case "PASS":
			passed = append(passed, name)
		case "SKIP":
			skipped = append(skipped, name)
		case "FAIL":
			failed = append(failed, name)
		}
	}
	slices.Sort(passed)
	slices.Sort(skipped)
	slices.Sort(failed)
	return passed, skipped, failed
}

// missing returns the names in want that are not in got.
func missing(got, want []string) []string {
	return slices.DeleteFunc(slices.Clone(want), func(name string) bool { return slices.Contains(got, name) })
}

// brokenTimeout is the checker's -timeout in TestBrokenServers: how long a
// check waits for each reply. Where a broken server's fault is a reply that
// never comes, the check fails after it; elsewhere it only bounds the wait.
const brokenTimeout = "5s"

// TestBrokenServers: each broken server, the real one behind a proxy that
// changes one thing, is caught by the check named for the rule it breaks,
// with the failure that check's own assertion reports (want): not merely
// any failure, such as a reply that came late on a busy machine, or the
// first-message check every check makes. As a control, the same check with
// the same flags passes through a proxy that changes nothing; and the change
// must have changed a frame.
func TestBrokenServers(t *testing.T) {
	t.Parallel()
	addr := startServer(t, "-ping", "1s")
	nothingWithin := func(after, who, want string) string {
		return regexp.QuoteMeta(fmt.Sprintf("after %s, %s got nothing within %s; want %s", after, who, brokenTimeout, want))
	}
	cases := []struct {
		check  string // the check that must fail
		want   string // a regular expression its FAIL line must match
		change change
	}{
		{"relay-exact", `B got fields \["type" "peerId" "signal" "via"\] in .*; want exactly type, peerId, signal`,
			onType(toClient, "offer", "answer", "candidate", func(s *session, m msg) []frame {
				return textFrame(rebuild(m, nil, `"via":"proxy"`)) // a field more
			})},
		{"error-invalid-utf8", regexp.QuoteMeta("; got `{\"type\":\"pong\"}`; want error `message is not valid UTF-8`"),
			func(s *session, dir direction, f frame) []frame {
				if dir == toServer && f.op == opText {
					f.data = bytes.ToValidUTF8(f.data, []byte("?")) // so the server never sees invalid UTF-8
				}
				return []frame{f}
			}},
		{"error-connection-usable", `^A sent 30 bad messages at once; after \d+ replies, the reply to .*: the connection ended .*; want an error$`,
			onType(toClient, "error", func(s *session, m msg) []frame {
				return append(textFrame(m.raw), frame{end: true}) // an error, then the connection is gone
			})},
		{"remove-on-close", nothingWithin("B sent a close frame", "A", "remove from B"), onType(toClient, "remove", drop)},
		{"announce-on-join", nothingWithin("B joined", "A", "announce from B"), onType(toClient, "announce", drop)},
		{"relay-sender-set-by-server", "^after A sent .*, B got `" + regexp.QuoteMeta(`{"type":"offer","peerId":"`) + "[A-Z2-7]{26}" + regexp.QuoteMeta(`","signal":1}`) + "`; want offer from A$",
			func(s *session, dir direction, f frame) []frame {
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
		{"ws-ping-answered", regexp.QuoteMeta("after A sent a WebSocket ping just after its handshake: no pong within " + brokenTimeout),
			func(s *session, dir direction, f frame) []frame {
				if dir == toClient && f.op == opPong {
					return nil
				}
				return []frame{f}
			}},
		{"error-binary-frame", regexp.QuoteMeta("A sent a binary frame `{\"type\":\"ping\"}`; got `{\"type\":\"pong\"}`; want error `binary frames are not accepted; send JSON as text`"),
			func(s *session, dir direction, f frame) []frame {
				if dir == toServer && f.op == opBinary {
					f.op = opText
				}
				return []frame{f}
			}},
		{"peers-first-message", `A connected to /r: first message .*; want peers, with an id and a list of ids`,
			onType(toClient, "peers", func(s *session, m msg) []frame {
				if string(m.fields["peers"]) == "[]" {
					return textFrame(rebuild(m, map[string]string{"peers": "null"}, ""))
				}
				return textFrame(m.raw)
			})},
		{"peers-lists-others", `^A joined an empty room: got .*; want "peers":\[\]`, // the list has the receiver in it too
			onType(toClient, "peers", func(s *session, m msg) []frame {
				ids := append(listOf(m), m.str("id"))
				return textFrame(rebuild(m, map[string]string{"peers": jsonList(ids)}, ""))
			})},
		{"peers-lists-others", `^B joined after A: got .*; want peers \[A\]`, // the list misses the last peer in it
			onType(toClient, "peers", func(s *session, m msg) []frame {
				ids := listOf(m)
				if len(ids) == 0 {
					return textFrame(m.raw)
				}
				return textFrame(rebuild(m, map[string]string{"peers": jsonList(ids[:len(ids)-1])}, ""))
			})},
		{"envelope-case-sensitive", regexp.QuoteMeta("A sent `{\"Type\":\"ping\"}`; got `{\"type\":\"pong\"}`; want error `message needs \"type\", a string that is not empty`"),
			func(s *session, dir direction, f frame) []frame {
				if dir == toServer {
					f.data = bytes.ReplaceAll(f.data, []byte(`"Type"`), []byte(`"type"`))
				}
				return []frame{f}
			}},
		{"liveness-silent-dropped", `^B answered no ping and sent nothing: still connected after \S+; want dropped after two ping intervals`,
			func(s *session, dir direction, f frame) []frame {
				if dir == toClient && f.op == opPing { // the proxy answers for the client
					s.write(toServer, frame{fin: true, op: opPong, data: f.data})
					return nil
				}
				return []frame{f}
			}},
		{quietCheck, `^after A, quiet for \S+ \(longer than -write-timeout 300ms\), sent a WebSocket ping: no pong within ` + brokenTimeout + `$`,
			pongsOnlyWhileBusy()},
		{"reserved-opcode-closes", regexp.QuoteMeta("B sent a frame of opcode 0x3 `{\"type\":\"ping\"}`; got `{\"type\":\"error\",\"error\":\"binary frames are not accepted; send JSON as text\"}`; want error `reserved WebSocket opcode; closing`"),
			func(s *session, dir direction, f frame) []frame {
				if dir == toServer && (f.op >= 0x3 && f.op <= 0x7 || f.op >= 0xB) {
					f.op = opBinary // which gets an error, and the connection stays
				}
				return []frame{f}
			}},
		{"turn-credential", `^A's first peers message: credential "x[^"]*"; want "[^"]*", base64 of HMAC-SHA1 of the username keyed by the secret`,
			onType(toClient, "peers", func(s *session, m msg) []frame {
				return textFrame(bytes.Replace(m.raw, []byte(`"credential":"`), []byte(`"credential":"x`), 1))
			})},
	}
	control := startProxy(t, addr, nil)
	outs := make([]string, len(cases))
	codes := make([]int, len(cases))
	controlOuts := make([]string, len(cases))
	controlCodes := make([]int, len(cases))
	proxies := make([]*proxy, len(cases))
	var wg sync.WaitGroup
	for i, tt := range cases { // all at once: subtests would run only GOMAXPROCS at once
		proxies[i] = startProxy(t, addr, tt.change)
		args := checkerFlags("-ping", "1s", "-run", "^"+tt.check+"$", "-timeout", brokenTimeout)
		wg.Go(func() { codes[i], outs[i] = runChecker(t, proxies[i].addr, args...) })
		wg.Go(func() { controlCodes[i], controlOuts[i] = runChecker(t, control.addr, args...) })
	}
	wg.Wait()
	for i, tt := range cases {
		line, summary, _ := strings.Cut(outs[i], "\n")
		failure, ok := strings.CutPrefix(line, "FAIL "+tt.check+": ")
		if codes[i] != 1 || !ok || !regexp.MustCompile(tt.want).MatchString(failure) || summary != "0 passed, 1 failed, 0 skipped\n" {
			t.Errorf("case %d: checker exit %d, output:\n%s\nwant exit 1 and one line FAIL %s: matching %s", i, codes[i], outs[i], tt.check, tt.want)
		}
		if controlCodes[i] != 0 || controlOuts[i] != "PASS "+tt.check+"\n1 passed, 0 failed, 0 skipped\n" {
			t.Errorf("case %d, control (the same flags through a proxy that changes nothing): checker exit %d, output:\n%s\nwant exit 0 and PASS %s", i, controlCodes[i], controlOuts[i], tt.check)
		}
		if n := proxies[i].changed.Load(); n == 0 {
			t.Errorf("case %d (%s): the proxy changed no frame; want the change applied", i, tt.check)
		}
		t.Logf("%s", outs[i])
	}
}

// jsonList returns ids as a JSON array.
func jsonList(ids []string) string {
	b, _ := json.Marshal(append([]string{}, ids...)) // [], not null, if there are none
	return string(b)
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
	fin      bool
	rsv      byte // the reserved bits, as sent
	op       byte
	unmasked bool // a client frame sent unmasked: passed on so, as the client broke RFC 6455
	data     []byte
	end      bool
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

// proxy is a running proxy: startProxy starts it.
type proxy struct {
	addr    string // where it listens
	target  string
	change  change
	changed atomic.Int64 // frames the change did not pass on as they were

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
func startProxy(t *testing.T, target string, ch change) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if ch == nil {
		ch = func(_ *session, _ direction, f frame) []frame { return []frame{f} }
	}
	p := &proxy{addr: ln.Addr().String(), target: target, change: ch, claims: map[string]string{}}
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
	return p
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
		outs := s.p.change(s, dir, f)
		if !unchanged(outs, f) {
			s.p.changed.Add(1)
		}
		for _, out := range outs {
			if out.end || s.write(dir, out) != nil {
				s.client.Close()
				s.server.Close()
				return
			}
		}
	}
}

// unchanged says whether outs is f alone, as it was.
func unchanged(outs []frame, f frame) bool {
	return len(outs) == 1 && !outs[0].end && outs[0].fin == f.fin && outs[0].op == f.op && bytes.Equal(outs[0].data, f.data)
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
	b := []byte{f.rsv | f.op}
	if f.fin {
		b[0] |= 0x80
	}
	masked := dir == toServer && !f.unmasked
	mask := byte(0)
	if masked {
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
	if masked {
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
	return frame{fin: h[0]&0x80 != 0, rsv: h[0] & 0x70, op: h[0] & 0x0f, unmasked: !masked, data: data}, nil
}
