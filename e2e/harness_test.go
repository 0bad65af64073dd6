// Package e2e drives real WebRTC peers (Chromium tabs running client/peero.js,
// and pion peers) through a real Peero process. It lives in its own module so
// that chromedp and pion stay out of the root module.
//
// Run it with `cd e2e && go test ./...`. It needs Chromium at
// /usr/bin/chromium, coturn at /usr/bin/turnserver (apt-get install chromium
// coturn) and the right to create a network namespace: TestMain re-runs the
// tests inside a fresh one whose only interface is loopback, so WebRTC can
// gather nothing but 127.0.0.1. README.md explains the recipe.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"
)

// testTimeout bounds each test: real connections take a second or two.
const testTimeout = 30 * time.Second

var (
	peeroBin   = os.Getenv("PEERO_BIN") // the server, built by TestMain before entering the namespace
	skipReason string                   // why the tests cannot run here; they skip with it
)

// TestMain builds peero, then runs the tests again in a new user and network
// namespace in which only lo exists, and exits with their result. With
// PEERO_E2E_REQUIRE set (as in CI), failing to make the namespace fails the
// run instead of skipping every test.
func TestMain(m *testing.M) {
	if os.Getenv("PEERO_E2E_IN_NETNS") == "1" {
		if err := onlyLoopback(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	os.Exit(runInNamespace(m))
}

func runInNamespace(m *testing.M) int {
	dir, err := os.MkdirTemp("", "peero-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "peero")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = ".." // the root module: the real main.go
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building peero:", err)
		return 1
	}
	if _, err := os.Stat(chromium); err != nil {
		return cannotRun(m, fmt.Sprintf("no Chromium at %s (apt-get install chromium): %v", chromium, err))
	}

	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), "PEERO_E2E_IN_NETNS=1", "PEERO_BIN="+bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
	}
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		return cannotRun(m, fmt.Sprintf("cannot create a network namespace (%v); these tests must run where only loopback exists", err))
	}
}

// cannotRun says loudly why the tests cannot run, and fails if they must.
func cannotRun(m *testing.M, reason string) int {
	fmt.Fprintln(os.Stderr, "e2e: NOT RUN:", reason)
	if os.Getenv("PEERO_E2E_REQUIRE") != "" {
		return 1
	}
	skipReason = reason
	return m.Run()
}

// onlyLoopback brings lo up in the new namespace and checks that nothing else is there.
func onlyLoopback() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		return fmt.Errorf("the namespace has interfaces %v; want only lo", ifaces)
	}
	return nil
}

// setup skips if the tests cannot run here and returns the test's context.
func setup(t *testing.T) context.Context {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logBuffer collects lines from several goroutines, to print when a test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Printf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(&b.buf, format+"\n", args...)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// peeroServer is the real peero binary, run by a test. It can be killed and
// started again on the same port, as a crashed server that comes back.
type peeroServer struct {
	t    *testing.T
	args []string // besides -port
	env  []string // added to the test's environment
	log  *logBuffer
	port string
	url  string // ws://127.0.0.1:PORT

	cmd    *exec.Cmd
	copied chan struct{} // closed when the server's stderr is fully read
}

// startServer runs peero on a free port and returns its ws:// base URL.
func startServer(t *testing.T) string {
	t.Helper()
	return runServer(t, nil).url
}

// runServer runs peero on a free port with args and env. Its log is printed
// if the test fails; when the test ends it gets SIGTERM, and must exit 0.
func runServer(t *testing.T, env []string, args ...string) *peeroServer {
	t.Helper()
	s := &peeroServer{t: t, args: args, env: env, log: &logBuffer{}, port: "0"}
	s.start()
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Signal(syscall.SIGCONT) // in case a test froze it
			s.cmd.Process.Signal(syscall.SIGTERM)
			if err := s.wait(5 * time.Second); err != nil {
				t.Errorf("peero after SIGTERM: %v; want exit 0", err)
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log)
		}
	})
	return s
}

// start starts the server on s.port ("0" for a free one) and waits until it listens.
func (s *peeroServer) start() {
	s.t.Helper()
	cmd := exec.Command(peeroBin, append([]string{"-port", s.port}, s.args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.copied = cmd, make(chan struct{})
	ports := make(chan string, 1)
	go func(copied chan struct{}) { // ends when the server exits and closes its stderr
		defer close(copied)
		portRE := regexp.MustCompile(`peero listening.*\b(?:port=|addr=\S*:)(\d+)`)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			s.log.Printf("%s", sc.Text())
			if m := portRE.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
			}
		}
	}(s.copied)
	select {
	case port := <-ports:
		s.port, s.url = port, "ws://127.0.0.1:"+port
	case <-time.After(10 * time.Second):
		s.t.Fatalf("peero did not say which port it listens on; its log:\n%s", s.log)
	}
}

// kill kills the server with SIGKILL, as a crash: no close frames, no removes.
func (s *peeroServer) kill() {
	s.t.Helper()
	s.cmd.Process.Kill()
	if err := s.wait(5 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		s.t.Fatalf("peero after SIGKILL: %v; want killed", err)
	}
}

// restart starts the server again on the port it had.
func (s *peeroServer) restart() {
	s.t.Helper()
	s.start()
}

// signal sends sig to the server process.
func (s *peeroServer) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal peero: %v", err)
	}
}

// wait waits up to timeout for the server to exit (killing it after that)
// and returns how it ended.
func (s *peeroServer) wait(timeout time.Duration) error {
	cmd, copied := s.cmd, s.copied
	s.cmd = nil
	exited := make(chan error, 1)
	go func() { <-copied; exited <- cmd.Wait() }() // Wait closes the pipe: read it all first
	select {
	case err := <-exited:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("still running %v later", timeout)
	}
}

// recorder runs in every page a tab opens, before the page's own scripts: it
// records the messages the page's WebSockets send in window.sent and those
// they get in window.received, so that a test can read them and check that
// the server sent no error. A socket made with window.NativeWebSocket is not
// recorded.
const recorder = `
  window.sent = [];
  window.received = [];
  window.NativeWebSocket = WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => received.push(JSON.parse(e.data)));
    }
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  };`

// testPage loads the reference client with the options in its query
// (?ws=URL&opts=JSON) and records its events, with the time they came, in
// window.events (and, as every page, its messages: see recorder).
const testPage = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script src="/peero.js"></script>
<script>
  window.events = [];
  const params = new URLSearchParams(location.search);
  const room = new Peero(params.get("ws"), JSON.parse(params.get("opts") || "{}"));
  for (const type of ["ready", "join", "state", "open", "message", "leave", "reconnecting", "iceerror", "error"]) {
    room.addEventListener(type, (e) => {
      events.push({ type, t: performance.now(), ...e.detail });
      console.log("peero event", type, JSON.stringify(e.detail));
    });
  }
</script>`

// servePages serves client/ and the test page over HTTP on loopback and
// returns the base URL; pages need an http origin to be granted the
// permission that makes Chromium gather loopback candidates.
func servePages(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir("../client")))
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(testPage))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

const chromium = "/usr/bin/chromium"

// browserSession is one headless Chromium process; its tabs share it.
type browserSession struct {
	t       *testing.T
	ctx     context.Context // the first tab's context; new tabs derive from it
	console *logBuffer
	used    bool // whether the first tab has been handed out
}

// newBrowser starts Chromium with the flags that README.md explains and
// grants origin ("" for every origin, file:// pages included) the microphone
// permission, without which Chromium offers no loopback candidates. Its
// consoles are printed if the test fails.
func newBrowser(t *testing.T, ctx context.Context, origin string) *browserSession {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("TMPDIR="+shortTempDir(t)), // Chromium leaves directories behind in TMPDIR
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browserSession{t: t, ctx: tabCtx, console: &logBuffer{}}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("browser console:\n%s", b.console)
		}
	})
	if err := chromedp.Do(tabCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	_, err := chromedp.CallBrowser(tabCtx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "microphone"},
		Setting:    browser.PermissionSettingGranted,
		Origin:     origin,
	})
	if err != nil {
		t.Fatalf("grant the microphone permission: %v", err)
	}
	return b
}

// shortTempDir returns a new temporary directory with a short path: Chromium
// puts a Unix socket in its TMPDIR, and socket paths must stay under about
// 107 bytes, which a subtest's t.TempDir() can exceed.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "chr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// tab is one page of a browser.
type tab struct {
	t      *testing.T
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	closed bool // by close
}

// open opens url in a new tab (the first call uses the browser's first tab)
// and records the tab's console under name. The page's WebSocket messages are
// recorded (see recorder); when the test ends, or the tab is closed, the
// test fails if the server sent the page an error.
func (b *browserSession) open(name, url string) *tab {
	b.t.Helper()
	ctx, cancel := b.ctx, context.CancelFunc(func() {})
	if b.used {
		ctx, cancel = chromedp.NewContext(b.ctx)
		// A new tab's target exists only after its first action.
		if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
			b.t.Fatalf("tab %s: %v", name, err)
		}
	}
	b.used = true
	tb := &tab{t: b.t, name: name, ctx: ctx, cancel: cancel}
	params := page.AddScriptToEvaluateOnNewDocumentParams{Source: recorder}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, params); err != nil {
		b.t.Fatalf("tab %s: add the recorder: %v", name, err)
	}
	b.t.Cleanup(func() { // before the browser's: the tab is still there
		if !tb.closed {
			tb.noErrors()
		}
	})
	console := chromedp.Console(ctx)
	go func() { // ends when the tab's context ends
		for m, err := range console {
			if err != nil {
				return
			}
			b.console.Printf("[%s] %s", name, m)
		}
	}()
	// WaitReady: later evaluations must not race the old page's context away.
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("body"))); err != nil {
		b.t.Fatalf("tab %s: open %s: %v", name, url, err)
	}
	return tb
}

// noErrors fails the test if the server sent the tab's page an error message:
// no test here sends a server anything it should refuse, except through
// window.NativeWebSocket.
func (tb *tab) noErrors() {
	tb.t.Helper()
	errs, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify(received.filter((m) => m.type === "error"))`))
	switch {
	case err != nil:
		tb.t.Errorf("tab %s: reading the messages it got: %v", tb.name, err)
	case errs != "[]":
		tb.t.Errorf("tab %s got errors from the server: %s; want none", tb.name, errs)
	}
}

// close closes the tab, after checking that its page got no error.
func (tb *tab) close() {
	tb.t.Helper()
	tb.noErrors()
	tb.closed = true
	tb.cancel()
}

// waitFor polls the JavaScript expression js in the tab until it is true.
func (tb *tab) waitFor(what, js string) {
	tb.t.Helper()
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		tb.t.Fatalf("tab %s: waiting for %s (%s): %v", tb.name, what, js, err)
	}
}

// waitForWithin is waitFor with a deadline of its own, d from now.
func (tb *tab) waitForWithin(d time.Duration, what, js string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		tb.t.Fatalf("tab %s: waiting %v for %s (%s): %v", tb.name, d, what, js, err)
	}
}

// eval evaluates js in the tab, awaiting it if it is a promise.
func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, js, err)
	}
	return v
}

// clientTab opens the test page of the reference client in room and returns the tab with its peer id.
func (b *browserSession) clientTab(name, pages, server, room string) (*tab, string) {
	b.t.Helper()
	return b.clientTabWith(name, pages, server, room, "{}")
}

// clientTabWith is clientTab with options for the client, as JSON.
func (b *browserSession) clientTabWith(name, pages, server, room, opts string) (*tab, string) {
	b.t.Helper()
	tb := b.open(name, pages+"/test.html?"+url.Values{"ws": {server + room}, "opts": {opts}}.Encode())
	tb.waitFor("its id", `room.id !== null`)
	return tb, eval[string](tb, `room.id`)
}

// waitOpen waits until the tab's DataChannel to peer id is open.
func (tb *tab) waitOpen(id string) {
	tb.t.Helper()
	tb.waitFor("a channel open to "+id, fmt.Sprintf(`events.some((e) => e.type === "open" && e.id === %q)`, id))
}

// waitMessage waits until the tab has had text from peer id.
func (tb *tab) waitMessage(id, text string) {
	tb.t.Helper()
	tb.waitFor(fmt.Sprintf("%q from %s", text, id),
		fmt.Sprintf(`events.some((e) => e.type === "message" && e.id === %q && e.data === %q)`, id, text))
}

// send sends text over the tab's channel to peer id, which must be open.
func (tb *tab) send(id, text string) {
	tb.t.Helper()
	if !eval[bool](tb, fmt.Sprintf(`room.send(%q, %q)`, id, text)) {
		tb.t.Fatalf("tab %s: the channel to %s is not open", tb.name, id)
	}
}

// waitRejoin waits until the tab has joined again with an id other than old, and returns it.
func (tb *tab) waitRejoin(old string) string {
	tb.t.Helper()
	tb.waitFor("a new id", fmt.Sprintf(`room.id !== null && room.id !== %q`, old))
	return eval[string](tb, `room.id`)
}
