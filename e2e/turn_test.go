package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// turnserver is coturn's server (apt-get install coturn).
const turnserver = "/usr/bin/turnserver"

// turnSecret is the secret coturn shares with Peero: Peero derives each
// peer's TURN password from it, and coturn checks the password with it.
const turnSecret = "e2e-shared-secret"

// startTURN runs coturn on 127.0.0.1 with TURN REST API credentials
// (use-auth-secret, secret turnSecret) and returns its port once it answers.
// It relays only on 127.0.0.1, from ports 20000–20199, outside the range the
// kernel hands out to the browsers' and pion's own sockets. It gets SIGTERM
// when the test ends; its log is printed if the test fails.
func startTURN(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(turnserver); err != nil {
		cannotTest(t, fmt.Sprintf("no coturn at %s (apt-get install coturn): %v", turnserver, err))
	}
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(turnserver, "-n", // no configuration file
		"--listening-ip=127.0.0.1", "--listening-port="+port,
		"--relay-ip=127.0.0.1", "--min-port=20000", "--max-port=20199",
		"--allow-loopback-peers", // else coturn refuses to relay to 127.0.0.1
		"--use-auth-secret", "--static-auth-secret="+turnSecret, "--realm=peero.test",
		"--no-cli", "--no-tls", "--no-dtls",
		// Its own files in the test's directory: in a user namespace, as
		// root, it would otherwise write the host's /var/run/turnserver.pid.
		"--pidfile="+filepath.Join(dir, "turnserver.pid"), "--db="+filepath.Join(dir, "turndb"),
		"--log-file=stdout", "--simple-log")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start coturn: %v", err)
	}
	log := &logBuffer{}
	copied := make(chan struct{})
	go func() { // ends when coturn exits and closes its stdout
		defer close(copied)
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			log.Printf("%s", sc.Text())
		}
	}()
	t.Cleanup(func() {
		// SIGTERM, not SIGKILL: coturn's stdout is block-buffered, and it
		// flushes its log only when it exits cleanly.
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { <-copied; exited <- cmd.Wait() }()
		var err error
		select {
		case err = <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			err = <-exited
			t.Errorf("coturn still running 5 s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("coturn (exit: %v) log:\n%s", err, log)
		}
	})
	if err := stunPing("127.0.0.1:"+port, 5*time.Second); err != nil {
		t.Fatalf("coturn does not answer STUN on port %s: %v", port, err)
	}
	return port
}

// cannotTest skips t, saying why, or fails it when PEERO_E2E_REQUIRE is set.
func cannotTest(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("PEERO_E2E_REQUIRE") != "" {
		t.Fatal("NOT RUN: " + reason)
	}
	t.Skip("NOT RUN: " + reason)
}

// freePort returns a port that is free on 127.0.0.1 for both UDP and TCP
// (coturn listens on both) at the time of the call.
func freePort(t *testing.T) string {
	t.Helper()
	for range 10 {
		udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
		udp.Close()
		if err == nil {
			tcp.Close()
			return strconv.Itoa(port)
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// stunPing sends STUN binding requests to addr until one is answered or
// timeout has passed. Each try comes from a new socket: a client address
// whose first request reaches coturn 4.6 while it is starting can stay
// unanswered for good.
func stunPing(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if stunBinding(addr, 100*time.Millisecond) == nil {
			return nil
		}
	}
	return fmt.Errorf("no answer in %v", timeout)
}

// stunBinding sends one STUN binding request to addr and waits up to wait for the answer.
func stunBinding(addr string, wait time.Duration) error {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil {
		return err
	}
	if res.Type != stun.BindingSuccess || res.TransactionID != req.TransactionID {
		return fmt.Errorf("answer %v; want a binding success", res)
	}
	return nil
}

// turnRoom starts coturn and a Peero that hands out credentials for it,
// derived from peeroSecret, and returns the test's context, Peero's base URL,
// the test pages' base URL and a browser. Peero gets args besides -turn.
func turnRoom(t *testing.T, peeroSecret string, args ...string) (ctx context.Context, server, pages string, b *browserSession) {
	t.Helper()
	ctx = setup(t)
	port := startTURN(t)
	s := runServer(t, []string{"PEERO_TURN_SECRET=" + peeroSecret}, append(args, "-turn", "turn:127.0.0.1:"+port+"?transport=udp")...)
	pages = servePages(t)
	return ctx, s.url, pages, newBrowser(t, ctx, pages)
}

// relayOnly is the reference client's option to connect through TURN only.
const relayOnly = `{"iceTransportPolicy":"relay"}`

// waitRelayed waits until the tab's channel to peer id is open and checks
// that the selected candidate pair is relay at both ends.
func (tb *tab) waitRelayed(id string) {
	tb.t.Helper()
	tb.waitOpen(id)
	if got := eval[string](tb, fmt.Sprintf(`room.route(%q).then((r) => r.local + "/" + r.remote)`, id)); got != "relay/relay" {
		tb.t.Errorf("tab %s: route to %s = %s; want relay/relay", tb.name, id, got)
	}
}

// TestTURNTwoTabs: two tabs that may use nothing but TURN relays connect
// through coturn with the credentials Peero hands out, and talk.
func TestTURNTwoTabs(t *testing.T) {
	_, server, pages, b := turnRoom(t, turnSecret)
	a, aID := b.clientTabWith("a", pages, server, "/turn", relayOnly)
	c, cID := b.clientTabWith("c", pages, server, "/turn", relayOnly)
	a.waitRelayed(cID)
	c.waitRelayed(aID)
	a.send(cID, "through the relay")
	c.waitMessage(aID, "through the relay")
	c.send(aID, "and back")
	a.waitMessage(cID, "and back")
}

// TestTURNPionAndChromium: a pion peer and a Chromium tab, both relay-only,
// connect through coturn; each side's selected pair is relay at both ends.
func TestTURNPionAndChromium(t *testing.T) {
	ctx, server, pages, b := turnRoom(t, turnSecret)
	tb, tabID := b.clientTabWith("tab", pages, server, "/turn-pion", relayOnly)
	p, _ := newPionPeer(t, server+"/turn-pion")
	if len(p.config.ICEServers) != 1 {
		t.Fatalf("pion: ICE servers from peers = %+v; want one TURN server", p.config.ICEServers)
	}
	p.config.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	p.offerTo(tabID)
	p.waitOpen(ctx, tabID)
	tb.waitRelayed(p.id)
	if local, remote := p.route(tabID); local != webrtc.ICECandidateTypeRelay || remote != webrtc.ICECandidateTypeRelay {
		t.Errorf("pion: route to the tab = %s/%s; want relay/relay", local, remote)
	}
	p.sendText(tabID, "pion via coturn")
	tb.waitMessage(p.id, "pion via coturn")
	tb.send(p.id, "chromium via coturn")
	p.waitMessage(ctx, tabID, "chromium via coturn")
}

// TestTURNDemoPage: the demo page opened with ?relay=1 connects through the
// relay and says so.
func TestTURNDemoPage(t *testing.T) {
	_, server, pages, b := turnRoom(t, turnSecret)
	var tabs []*tab
	for _, name := range []string{"alice", "bob"} {
		tb := b.open(name, pages+"/index.html?relay=1")
		if !eval[bool](tb, `document.getElementById("relay").checked`) {
			t.Fatalf("%s: ?relay=1 left the relay-only box unticked", name)
		}
		tb.joinDemo(server, "turn-demo")
		tabs = append(tabs, tb)
	}
	for _, tb := range tabs {
		tb.waitFor("the peer connected through the relay",
			`document.querySelector('#peers li[data-route="relay/relay"] .state')?.textContent === "relayed (TURN)"`)
	}
}

// TestTURNCredentialsRefreshed: credentials that expire in 3 s are renewed
// before they do (the client asks with a peers request), so a tab that has
// been in the room longer than that still connects through the relay to a
// newcomer.
func TestTURNCredentialsRefreshed(t *testing.T) {
	_, server, pages, b := turnRoom(t, turnSecret, "-turn-ttl", "3s")
	a, aID := b.clientTabWith("a", pages, server, "/turn-ttl", relayOnly)
	expiry := eval[int](a, `parseInt(received[0].iceServers[0].username)`)
	a.waitFor("a request for fresh credentials", `sent.some((m) => m.type === "peers")`)
	a.waitFor("fresh credentials", fmt.Sprintf(`received.some((m) => m.type === "peers" && parseInt(m.iceServers[0].username) > %d)`, expiry))
	// Time must pass for the first credentials to expire.
	a.waitFor("the first credentials to expire", fmt.Sprintf(`Date.now() / 1000 > %d + 1`, expiry))
	c, cID := b.clientTabWith("c", pages, server, "/turn-ttl", relayOnly)
	a.waitRelayed(cID)
	c.waitRelayed(aID)
	c.send(aID, "still relayed")
	a.waitMessage(cID, "still relayed")
}

// TestTURNWrongSecret: when Peero's secret is not coturn's, coturn refuses
// the credentials (401) and relay-only tabs cannot connect. As a control, two
// relay-only tabs of a Peero that has coturn's secret connect through the same
// coturn meanwhile, with no ICE error; the tabs with wrong credentials must
// still have no connection after three times as long as the control needed,
// not merely when the 401 comes.
func TestTURNWrongSecret(t *testing.T) {
	ctx := setup(t)
	turn := "turn:127.0.0.1:" + startTURN(t) + "?transport=udp"
	wrong := runServer(t, []string{"PEERO_TURN_SECRET=not-" + turnSecret}, "-turn", turn)
	right := runServer(t, []string{"PEERO_TURN_SECRET=" + turnSecret}, "-turn", turn)
	pages := servePages(t)
	b := newBrowser(t, ctx, pages)
	start := time.Now()
	a, aID := b.clientTabWith("a", pages, wrong.url, "/turn-wrong", relayOnly)
	c, cID := b.clientTabWith("c", pages, wrong.url, "/turn-wrong", relayOnly)
	ok1, ok1ID := b.clientTabWith("ok1", pages, right.url, "/turn-right", relayOnly)
	ok2, ok2ID := b.clientTabWith("ok2", pages, right.url, "/turn-right", relayOnly)
	ok1.waitRelayed(ok2ID)
	ok2.waitRelayed(ok1ID)
	took := time.Since(start)
	for _, tb := range []*tab{ok1, ok2} {
		if got := eval[string](tb, `JSON.stringify(events.filter((e) => e.type === "iceerror"))`); got != "[]" {
			t.Errorf("tab %s, with coturn's secret: ICE errors %s; want none", tb.name, got)
		}
	}
	pairs := []struct {
		tb    *tab
		other string
	}{{a, cID}, {c, aID}}
	for _, x := range pairs {
		// Bounded: right credentials connect in about a second.
		x.tb.waitForWithin(8*time.Second, "coturn's 401", `events.some((e) => e.type === "iceerror" && e.code === 401)`)
	}
	time.Sleep(time.Until(start.Add(3 * took))) // the time that passes is what is checked
	t.Logf("the control connected %v after the tabs began; checked the tabs with wrong credentials %v after", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, x := range pairs {
		if got := eval[int](x.tb, `events.filter((e) => e.type === "open" || (e.type === "state" && e.state === "connected")).length`); got != 0 {
			t.Errorf("tab %s: %d open or connected events with wrong credentials; want 0", x.tb.name, got)
		}
		if got := eval[bool](x.tb, fmt.Sprintf(`room.route(%q).then((r) => r !== null)`, x.other)); got {
			t.Errorf("tab %s: a candidate pair to %s was selected with wrong credentials; want none", x.tb.name, x.other)
		}
	}
}
