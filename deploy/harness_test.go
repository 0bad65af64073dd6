// Package deploy tests the configurations in deploy/: nginx.conf, with three
// real Peero instances behind a real nginx; nginx-tls.conf, the same over TLS
// with a self-signed certificate; and the Caddyfile, with Caddy's own local
// CA; all on loopback. Run it with `cd deploy && go test ./...`; it needs nginx
// and Caddy (apt-get install nginx caddy) and starts its own, with their
// configuration, logs, certificates and pid files under the test's temporary
// directory.
package deploy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

const nginxBin = "/usr/sbin/nginx"

var (
	peeroBin        string // built by TestMain
	skipReason      string // why the tests cannot run here; they skip with it
	caddyBin        string // Caddy, found by TestMain in $PATH
	caddySkipReason string // why the Caddy tests cannot run here
)

// TestMain builds the real peero once. Without nginx the tests skip, and
// without Caddy the Caddy tests skip, saying why; or the run fails when
// PEERO_DEPLOY_REQUIRE is set (as in CI, which installs both).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peero-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	peeroBin = filepath.Join(dir, "peero")
	build := exec.Command("go", "build", "-o", peeroBin, ".")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy: building peero:", err)
		os.Exit(1)
	}
	if _, err := os.Stat(nginxBin); err != nil {
		skipReason = fmt.Sprintf("no nginx at %s (apt-get install nginx): %v", nginxBin, err)
		fmt.Fprintln(os.Stderr, "deploy: NOT RUN:", skipReason)
		if os.Getenv("PEERO_DEPLOY_REQUIRE") != "" {
			os.Exit(1)
		}
	}
	caddyBin, err = exec.LookPath("caddy")
	if err != nil {
		caddySkipReason = fmt.Sprintf("no caddy in $PATH (apt-get install caddy): %v", err)
		fmt.Fprintln(os.Stderr, "deploy: Caddy tests NOT RUN:", caddySkipReason)
		if os.Getenv("PEERO_DEPLOY_REQUIRE") != "" {
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer collects lines from several goroutines.
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

// instance is one Peero process.
type instance struct {
	addr string // 127.0.0.1:PORT
	cmd  *exec.Cmd
	log  *logBuffer
}

var joinRE = regexp.MustCompile(`INFO join peer=\S+ room=(\S+)`)

// rooms returns how many joins the instance has logged per room.
func (in *instance) rooms() map[string]int {
	joins := map[string]int{}
	for _, m := range joinRE.FindAllStringSubmatch(in.log.String(), -1) {
		joins[m[1]]++
	}
	return joins
}

// startInstance runs peero with args on a free port. Its log is printed if the
// test fails; it is killed when the test ends, if it still runs.
func startInstance(t *testing.T, args ...string) *instance {
	t.Helper()
	cmd := exec.Command(peeroBin, append([]string{"-port", "0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{cmd: cmd, log: &logBuffer{}}
	ports := make(chan string, 1)
	go func() { // ends when the instance exits and its stderr closes
		portRE := regexp.MustCompile(`peero listening port=(\d+)`)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			in.log.Printf("%s", sc.Text())
			if m := portRE.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("instance %s log:\n%s", in.addr, in.log)
		}
	})
	select {
	case port := <-ports:
		in.addr = "127.0.0.1:" + port
		return in
	case <-time.After(10 * time.Second):
		t.Fatalf("peero did not say its port; log:\n%s", in.log)
		return nil
	}
}

// proxyTimeouts are the nginx timeouts a test runs with, short so that it
// runs in seconds.
type proxyTimeouts struct{ connect, read time.Duration }

// startNginx runs nginx with deploy/nginx.conf, changed only where a test must:
// its listen address, its upstream servers, its timeouts, and paths under the
// test's directory. It returns nginx's address; nginx gets SIGTERM when the
// test ends.
func startNginx(t *testing.T, upstreams []string, timeouts proxyTimeouts) string {
	t.Helper()
	addr := freeAddr(t)
	runNginx(t, "nginx.conf", addr, upstreams, timeouts, edit{`listen 8080;`, "listen " + addr + ";"})
	return addr
}

// edit is a change a test makes to a shipped configuration file: every match
// of the regular expression pattern is replaced.
type edit struct{ pattern, replacement string }

// runNginx runs nginx with the shipped configuration file, with the changes
// every test makes (upstream servers, timeouts, paths under the test's
// directory) and the edits given, which must make it listen on addr. It
// returns when nginx accepts connections on addr; nginx gets SIGTERM when
// the test ends.
func runNginx(t *testing.T, file, addr string, upstreams []string, timeouts proxyTimeouts, edits ...edit) {
	t.Helper()
	shipped, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	servers := ""
	for _, u := range upstreams {
		servers += "        server " + u + ";\n"
	}
	ms := func(d time.Duration) string { return fmt.Sprint(d.Milliseconds(), "ms") }
	conf := editConfig(t, file, string(shipped), append([]edit{
		{`(?m)^        server 127\.0\.0\.1:808[123];\n`, ""},
		{`hash \$uri consistent;\n`, "hash $$uri consistent;\n" + servers},
		{`proxy_connect_timeout 2s;`, "proxy_connect_timeout " + ms(timeouts.connect) + ";"},
		{`proxy_read_timeout 50s;`, "proxy_read_timeout " + ms(timeouts.read) + ";"},
		{`proxy_send_timeout 50s;`, "proxy_send_timeout " + ms(timeouts.read) + ";"},
		{`access_log /var/log/nginx/peero\.log peero;`, "access_log " + dir + "/access.log peero;"},
		{`http \{\n`, "http {\n" + tempPaths(dir)},
	}, edits...))
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginxBin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"),
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+"; worker_processes 1;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Error("nginx still running 5 s after SIGTERM")
		}
		if t.Failed() {
			errs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			access, _ := os.ReadFile(filepath.Join(dir, "access.log"))
			t.Logf("nginx output:\n%s\nnginx error.log:\n%s\nnginx access.log:\n%s", out.String(), errs, access)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for { // nginx says nothing when it is ready: try its port
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening on %s after 5 s\n%s", addr, out.String())
		}
	}
}

// editConfig applies edits to conf, the text of the shipped file named file.
// An edit whose pattern is not found fails the test: the file has changed
// under it.
func editConfig(t *testing.T, file, conf string, edits []edit) string {
	t.Helper()
	for _, e := range edits {
		re := regexp.MustCompile(e.pattern)
		if !re.MatchString(conf) {
			t.Fatalf("deploy/%s has no %q any more: update this test", file, e.pattern)
		}
		conf = re.ReplaceAllString(conf, e.replacement)
	}
	return conf
}

// tempPaths keeps nginx's temporary files under dir, away from the system's.
func tempPaths(dir string) string {
	s := ""
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		s += fmt.Sprintf("    %s_temp_path %s/%s;\n", kind, dir, kind)
	}
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// msg is a Peero message, either way.
type msg struct {
	Type   string          `json:"type"`
	ID     string          `json:"id,omitempty"`
	Peers  []string        `json:"peers,omitempty"`
	PeerID string          `json:"peerId,omitempty"`
	Signal json.RawMessage `json:"signal,omitempty"`
	Error  string          `json:"error,omitempty"`
	Resume string          `json:"resume,omitempty"`
}

// client is a hand-made WebSocket client, so that a test can tell a close
// frame from a connection that just ended. Like a browser, it answers pings.
type client struct {
	t      *testing.T
	conn   net.Conn
	id     string
	peers  []string
	resume string        // the resume token of the first message
	msgs   chan msg      // text messages; closed when the connection ends
	done   chan struct{} // closed when the connection ends
	// gotClose says whether the server sent a close frame; read it after done.
	gotClose bool
	wmu      sync.Mutex // serializes writes
}

// dial connects through addr to path and reads the first message, peers.
func dial(t *testing.T, addr, path string) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("handshake through %s: %v %v", addr, resp.Status, err)
	}
	conn.SetDeadline(time.Time{})
	c := &client{t: t, conn: conn, msgs: make(chan msg, 256), done: make(chan struct{})}
	go c.readLoop(r) // ends when the connection ends
	t.Cleanup(func() { conn.Close(); <-c.done })
	first, err := c.next(3 * time.Second)
	if err != nil || first.Type != "peers" {
		return nil, fmt.Errorf("first message %+v, %v; want peers", first, err)
	}
	c.id, c.peers, c.resume = first.ID, first.Peers, first.Resume
	return c, nil
}

func mustDial(t *testing.T, addr, path string) *client {
	t.Helper()
	c, err := dial(t, addr, path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *client) readLoop(r *bufio.Reader) {
	defer close(c.done)
	defer close(c.msgs)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(l[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		switch h[0] & 0x0f {
		case 0x1:
			var m msg
			if err := json.Unmarshal(payload, &m); err != nil {
				c.t.Errorf("server sent %q: %v", payload, err)
				return
			}
			c.msgs <- m
		case 0x8:
			c.gotClose = true
			return
		case 0x9:
			c.write(0xA, payload) // pong
		}
	}
}

// write sends one masked frame.
func (c *client) write(opcode byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var key [4]byte
	rand.Read(key[:])
	frame := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n <= 125:
		frame = append(frame, 0x80|byte(n))
	case n < 1<<16:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	frame = append(frame, key[:]...)
	for i, b := range payload {
		frame = append(frame, b^key[i%4])
	}
	c.conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
	_, err := c.conn.Write(frame)
	return err
}

func (c *client) send(m msg) {
	c.t.Helper()
	b, _ := json.Marshal(m)
	if err := c.write(0x1, b); err != nil {
		c.t.Fatalf("send %s: %v", b, err)
	}
}

// next returns the next message, or an error after timeout or if the connection ended.
func (c *client) next(timeout time.Duration) (msg, error) {
	select {
	case m, ok := <-c.msgs:
		if !ok {
			return msg{}, fmt.Errorf("connection ended")
		}
		return m, nil
	case <-time.After(timeout):
		return msg{}, fmt.Errorf("no message within %v", timeout)
	}
}

// expect reads the next message and fails unless it has type typ (and is from peerID, if not "").
func (c *client) expect(typ, peerID string) msg {
	c.t.Helper()
	m, err := c.next(3 * time.Second)
	if err != nil {
		c.t.Fatalf("client %s: waiting for %s: %v", c.id, typ, err)
	}
	if m.Type != typ || peerID != "" && m.PeerID != peerID {
		c.t.Fatalf("client %s: got %+v; want %s from %q", c.id, m, typ, peerID)
	}
	return m
}

// quiet checks that nothing is waiting for c: the reply to a ping comes next.
func (c *client) quiet() {
	c.t.Helper()
	c.send(msg{Type: "ping"})
	c.expect("pong", "")
}

// waitLogged waits until the instances have logged n joins in all.
func waitLogged(t *testing.T, instances []*instance, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		total := 0
		for _, in := range instances {
			for _, k := range in.rooms() {
				total += k
			}
		}
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances logged %d joins; want %d", total, n)
		}
		time.Sleep(10 * time.Millisecond) // the logs arrive through pipes: nothing to wait on
	}
}

// instanceOf returns the instance that logged a join to room.
func instanceOf(instances []*instance, room string) *instance {
	for _, in := range instances {
		if in.rooms()[room] > 0 {
			return in
		}
	}
	return nil
}

func roomName(i int) string { return fmt.Sprintf("/room-%02d", i) }

// joinPairs joins two clients to each of rooms rooms through proxy, each pair
// told of each other, and waits until instances have logged every join.
func joinPairs(t *testing.T, proxy string, instances []*instance, rooms int) [][2]*client {
	t.Helper()
	pairs := make([][2]*client, rooms)
	for i := range pairs {
		pairs[i] = [2]*client{mustDial(t, proxy, roomName(i)), mustDial(t, proxy, roomName(i))}
		pairs[i][0].expect("announce", pairs[i][1].id)
	}
	waitLogged(t, instances, 2*rooms)
	return pairs
}

// busiest returns the instance serving the most rooms.
func busiest(instances []*instance) *instance {
	victim := instances[0]
	for _, in := range instances[1:] {
		if len(in.rooms()) > len(victim.rooms()) {
			victim = in
		}
	}
	return victim
}
