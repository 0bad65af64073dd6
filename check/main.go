// Check is protocol.md, executable: it connects to a Peero server as a
// client, checks each rule of the protocol, and says which hold.
//
//	go run ./check [flags] ws://HOST:PORT
//	go run ./check [flags] wss://HOST[:PORT]
//
// Point it at your copy of main.go, at a port to another language, or at a
// deployment behind a proxy. For wss:// it checks the server's certificate
// against the system's certificate authorities, or against those in the PEM
// file given with -ca (a private or test CA, a self-signed certificate), and
// stops at once, with exit status 2, if the TLS handshake fails. It prints one
// line per check,
// named after the rule it checks,
//
//	PASS relay-exact
//	FAIL error-invalid-utf8: A sent "{\"type\":\"ping\",\"x\":\"\xff\"}"; got `{"type":"pong"}`; want error `message is not valid UTF-8`
//	SKIP liveness-silent-dropped: needs -ping, the server's setting
//
// then "N passed, M failed, K skipped", and exits 1 if any check failed.
//
// Each check uses its own rooms under a random prefix (/peero-check-…/), so a
// run disturbs no one else's room; the checks run at once, every read has a
// deadline (-timeout), and a run takes about as long as its slowest check:
// ws-ping-answered-after-quiet stays quiet for longer than -write-timeout.
// The exception is server-full, which fills the whole server for a moment:
// it runs alone, last, and only when -max-peers is given.
//
// Checks that depend on how the server was started run only when told: give
// the checker the flags you gave the server (-ping, -max-peers,
// -max-room-peers, -origin, -turn, -turn-ttl, -turn-secret or
// $PEERO_TURN_SECRET, and -max-bytes if the frame limit is not 64 KiB). A
// flag given empty says the server has none of it: -origin= (any origin
// allowed), -turn= (no TURN). A check that needs a setting it was not given
// is reported as SKIP, never as passed; so is one that would take longer
// than 40 s, unless -slow is given.
// Prefer $PEERO_TURN_SECRET to -turn-secret: flags show in ps. -run and -skip
// take a regular expression of check names, as go test does.
package main

import (
	"cmp"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// budget is how long a check may take without -slow.
const budget = 40 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// config is what the checks know about the server under check.
type config struct {
	addr   string      // host:port to dial
	host   string      // the Host header
	tls    *tls.Config // for wss://; nil for ws://
	base   string      // the URL's path, without its final "/": rooms go under it
	prefix string      // this run's room prefix, "/peero-check-…"

	timeout      time.Duration // how long to wait for each reply
	writeTimeout time.Duration
	slow         bool
	ping         time.Duration
	maxPeers     int
	maxRoomPeers int
	maxBytes     int
	origins      []string
	turnURLs     []string
	turnSecret   string
	turnTTL      time.Duration
	resumeTTL    time.Duration
	given        map[string]bool // the settings given: flag names, and "turn-secret" if $PEERO_TURN_SECRET is set
}

// quiet is how long ws-ping-answered-after-quiet stays silent: longer than
// the server's write timeout.
func (cfg *config) quiet() time.Duration { return cfg.writeTimeout*6/5 + 500*time.Millisecond }

// run runs the checker with args and returns its exit status.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./check [flags] ws://HOST:PORT | wss://HOST[:PORT]\n\nChecks a Peero server against protocol.md. Give the flags you gave the server;\nchecks that need a setting not given are skipped.\n\nflags:")
		fs.PrintDefaults()
	}
	cfg := &config{given: map[string]bool{}}
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Second, "how long to wait for each reply")
	fs.DurationVar(&cfg.writeTimeout, "write-timeout", 10*time.Second, "the server's write timeout")
	fs.BoolVar(&cfg.slow, "slow", false, "also run the checks that take longer than "+budget.String())
	fs.DurationVar(&cfg.ping, "ping", 0, "the server's -ping interval (if not given, the liveness checks are skipped)")
	fs.IntVar(&cfg.maxPeers, "max-peers", 0, "the server's -max-peers (if not given, server-full is skipped; it fills the server)")
	fs.IntVar(&cfg.maxRoomPeers, "max-room-peers", 0, "the server's -max-room-peers (if not given, room-full is skipped)")
	fs.IntVar(&cfg.maxBytes, "max-bytes", 64<<10, "the server's frame size limit")
	origins := fs.String("origin", "", "the server's -origin list; -origin= for none (any origin allowed)")
	turn := fs.String("turn", "", "the server's -turn URLs; -turn= for no TURN")
	fs.StringVar(&cfg.turnSecret, "turn-secret", "", "the server's TURN secret (default $PEERO_TURN_SECRET)")
	fs.DurationVar(&cfg.turnTTL, "turn-ttl", 0, "the server's -turn-ttl (if not given, a credential's expiry need only be in the future)")
	fs.DurationVar(&cfg.resumeTTL, "resume-ttl", 0, "the server's -resume-ttl (if not given, an expired resume token is not checked)")
	only := fs.String("run", "", "run only the checks whose names match this regular expression")
	skip := fs.String("skip", "", "skip the checks whose names match this regular expression (reported as SKIP)")
	caFile := fs.String("ca", "", "for wss://: trust the certificate authorities in this PEM `file` instead of the system's")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fs.Visit(func(f *flag.Flag) { cfg.given[f.Name] = true })
	cfg.given["ping"] = cfg.given["ping"] && cfg.ping > 0 // 0 is not a setting
	cfg.given["max-peers"] = cfg.given["max-peers"] && cfg.maxPeers > 0
	cfg.given["max-room-peers"] = cfg.given["max-room-peers"] && cfg.maxRoomPeers > 0
	if s := getenv("PEERO_TURN_SECRET"); s != "" && !cfg.given["turn-secret"] {
		cfg.turnSecret, cfg.given["turn-secret"] = s, true
	}
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	}
	cfg.origins, cfg.turnURLs = split(*origins), split(*turn)
	filter, err := regexp.Compile(*only)
	skipRE, err2 := regexp.Compile(cmp.Or(*skip, "^$"))
	if err != nil || err2 != nil || fs.NArg() != 1 || cfg.maxBytes < 256 {
		fs.Usage()
		return 2
	}
	if err := cfg.target(fs.Arg(0), *caFile); err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return 2
	}
	if err := cfg.handshakeTLS(); err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return 2
	}
	cfg.prefix = "/peero-check-" + strings.ToLower(rand.Text()[:10])

	var selected []check
	for _, phase := range []int{concurrent, alone, summary} {
		for _, c := range checks {
			if c.phase == phase && filter.MatchString(c.name) {
				if skipRE.MatchString(c.name) {
					c.run = func(t *T) { t.Skipf("-skip %s", *skip) }
				}
				selected = append(selected, c)
			}
		}
	}
	rs := &runState{ids: map[string]string{}}
	results := make([]chan result, len(selected))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	go func() { // ends when every selected check has ended
		for _, phase := range []int{concurrent, alone, summary} {
			var wg sync.WaitGroup
			for i, c := range selected {
				if c.phase == phase {
					wg.Go(func() { results[i] <- runCheck(cfg, rs, c) })
				}
			}
			wg.Wait()
		}
	}()
	var passed, failed, skipped int
	for i, c := range selected { // in order, each as soon as it is known
		r := <-results[i]
		switch {
		case r.skip != "":
			skipped++
			fmt.Fprintf(stdout, "SKIP %s: %s\n", c.name, r.skip)
		case len(r.failures) > 0:
			failed++
			fmt.Fprintf(stdout, "FAIL %s: %s\n", c.name, oneLine(r.failures))
		default:
			passed++
			fmt.Fprintf(stdout, "PASS %s\n", c.name)
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 {
		return 1
	}
	return 0
}

// target sets where to connect from the URL ws://HOST:PORT/PATH or
// wss://HOST:PORT/PATH. For wss://, caFile names a PEM file of the
// certificate authorities to trust; "" trusts the system's.
func (cfg *config) target(raw, caFile string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("%q: want ws://HOST:PORT or wss://HOST[:PORT], with an optional path under which rooms go", raw)
	}
	cfg.host, cfg.addr = u.Host, u.Host
	cfg.base = strings.TrimSuffix(u.EscapedPath(), "/")
	if u.Scheme == "ws" {
		if caFile != "" {
			return fmt.Errorf("-ca is for wss:// URLs; %q is ws://", raw)
		}
		if u.Port() == "" {
			cfg.addr = net.JoinHostPort(u.Hostname(), "80")
		}
		return nil
	}
	if u.Port() == "" {
		cfg.addr = net.JoinHostPort(u.Hostname(), "443")
	}
	cfg.tls = &tls.Config{ServerName: u.Hostname()}
	if caFile == "" {
		return nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("-ca: %v", err)
	}
	cfg.tls.RootCAs = x509.NewCertPool()
	if !cfg.tls.RootCAs.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-ca %s: no PEM certificate in it", caFile)
	}
	return nil
}

// handshakeTLS makes one TLS connection to a wss:// server, so that a
// certificate the checker cannot verify stops the run with one clear error
// rather than failing every check. For ws:// it does nothing.
func (cfg *config) handshakeTLS() error {
	if cfg.tls == nil {
		return nil
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: cfg.timeout}, Config: cfg.tls}
	nc, err := dialer.Dial("tcp", cfg.addr)
	if err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return fmt.Errorf("TLS to %s: %v (for a private or test CA, or a self-signed certificate, give its PEM file with -ca)", cfg.addr, err)
		}
		return fmt.Errorf("TLS to %s: %v", cfg.addr, err)
	}
	return nc.Close()
}

// oneLine joins failures into one line, the first few in full.
func oneLine(failures []string) string {
	const most = 3
	s := strings.Join(failures[:min(len(failures), most)], "; ")
	if len(failures) > most {
		s += fmt.Sprintf("; and %d more", len(failures)-most)
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// The phases of a run.
const (
	concurrent = iota // the checks that run at once, each in its own rooms
	alone             // then the ones that need the server to themselves
	summary           // then the ones about what all the others saw
)

// check is one rule of protocol.md, checked.
type check struct {
	name  string // the rule's name: lower case, hyphens
	phase int
	run   func(t *T)
}

type result struct {
	failures []string
	skip     string
}

// runState is what the checks of one run share.
type runState struct {
	mu     sync.Mutex        // guards the fields below
	faults []string          // envelope faults in messages from the server
	ids    map[string]string // every id the server gave, and the check that got it
	dupes  []string          // ids given twice
}

// envelope notes a fault of the envelope in m, a frame the server sent to a
// connection of the check named name.
func (rs *runState) envelope(name string, fin bool, m msg) {
	if fault := envelopeFault(fin, m); fault != "" {
		rs.mu.Lock()
		rs.faults = append(rs.faults, name+": "+fault)
		rs.mu.Unlock()
	}
}

func (rs *runState) gaveID(name, id string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if first, ok := rs.ids[id]; ok {
		rs.dupes = append(rs.dupes, fmt.Sprintf("%s (in %s, then in %s)", id, first, name))
	}
	rs.ids[id] = name
}

// T is the state of one check, like testing.T: Fatalf and Skipf end the
// check; they must be called from the check's own goroutine.
type T struct {
	name     string
	cfg      *config
	run      *runState
	deadline time.Time // every connection's I/O ends by then

	mu       sync.Mutex        // guards the fields below
	conns    []net.Conn        // to close when the check ends
	names    int               // connections named so far
	ids      map[string]string // id -> the name of its connection
	joined   []*conn           // the connections that got a peers message
	failures []string
	skip     string
}

// runCheck runs c and returns its result. A check that outlives its time is
// failed, and its connections closed, which ends its reads.
func runCheck(cfg *config, rs *runState, c check) result {
	limit := 10*cfg.timeout + cfg.quiet()
	if cfg.given["ping"] {
		limit += 4 * cfg.ping
	}
	t := &T{name: c.name, cfg: cfg, run: rs, deadline: time.Now().Add(limit), ids: map[string]string{}}
	done := make(chan struct{})
	go func() { // ends when the check returns or calls Fatalf or Skipf
		defer close(done)
		defer t.closeAll()
		defer func() {
			if e := recover(); e != nil {
				t.Errorf("the check panicked: %v", e)
			}
		}()
		c.run(t)
	}()
	select {
	case <-done:
	case <-time.After(limit + cfg.timeout):
		t.Errorf("did not finish within %v", limit)
		t.closeAll()
		<-done
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.failures) > 0 {
		return result{failures: t.failures}
	}
	return result{skip: t.skip}
}

// Errorf records a failure; the check goes on.
func (t *T) Errorf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures = append(t.failures, fmt.Sprintf(format, args...))
}

// Fatalf records a failure and ends the check.
func (t *T) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}

// Skipf ends the check, reported as skipped, saying why.
func (t *T) Skipf(format string, args ...any) {
	t.mu.Lock()
	t.skip = fmt.Sprintf(format, args...)
	t.mu.Unlock()
	runtime.Goexit()
}

// needs skips the check unless every setting named was given.
func (t *T) needs(settings ...string) {
	var missing []string
	for _, s := range settings {
		if !t.cfg.given[s] {
			missing = append(missing, "-"+s)
		}
	}
	if len(missing) > 0 {
		t.Skipf("needs %s, the server's setting", strings.Join(missing, " and "))
	}
}

// takes skips the check if it would take longer than the budget, unless -slow.
func (t *T) takes(d time.Duration) {
	if d > budget && !t.cfg.slow {
		t.Skipf("takes %v; run with -slow", d.Round(time.Second))
	}
}

func (t *T) track(nc net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns = append(t.conns, nc)
}

func (t *T) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, nc := range t.conns {
		nc.Close()
	}
}

// nextName names connections A, B, …, Z, A2, B2, ….
func (t *T) nextName() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.names
	t.names++
	if n < 26 {
		return string(rune('A' + n))
	}
	return fmt.Sprintf("%c%d", 'A'+n%26, n/26+1)
}

// path is the URL path of room (which starts with "/") for this check.
func (t *T) path(room string) string {
	return t.cfg.base + t.cfg.prefix + "/" + t.name + room
}

// connect connects to room and reads the first message, which must be a peers
// message.
func (t *T) connect(room string, o dialOptions) (*conn, error) {
	if o.resume != "" {
		room += "?resume=" + url.QueryEscape(o.resume)
	}
	c, resp, err := t.dial(t.path(room), o)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %v", t.path(room), err)
	}
	if c == nil {
		return nil, fmt.Errorf("connecting to %s: HTTP %s; want 101", t.path(room), resp.Status)
	}
	m, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("%s connected to %s: first message: %v; want peers", c.name, room, err)
	}
	if _, ok := peersOf(m); !m.is("peers", "") || m.str("id") == "" || !ok {
		return nil, fmt.Errorf("%s connected to %s: first message %s; want peers, with an id and a list of ids", c.name, room, m)
	}
	c.id, c.peer = m.str("id"), m
	if id, _, _ := strings.Cut(o.resume, "."); c.id != id { // a resumed id is given again
		t.run.gaveID(t.name, c.id)
	}
	t.mu.Lock()
	t.ids[c.id] = c.name
	t.joined = append(t.joined, c)
	t.mu.Unlock()
	return c, nil
}

// join connects to room and reads its peers message.
func (t *T) join(room string) *conn {
	c, err := t.connect(room, dialOptions{})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// joinAll joins n peers to room one after the other; each reads the
// announce of every later one.
func (t *T) joinAll(room string, n int) []*conn {
	var cs []*conn
	for range n {
		c := t.join(room)
		for _, o := range cs {
			o.expect("announce", c.id, c.name+" joined")
		}
		cs = append(cs, c)
	}
	return cs
}

func without[S ~[]E, E comparable](s S, e E) S {
	return slices.DeleteFunc(slices.Clone(s), func(x E) bool { return x == e })
}
