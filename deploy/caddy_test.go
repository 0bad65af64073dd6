package deploy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckerThroughCaddy: every rule of protocol.md holds over wss://
// through Caddy with deploy/Caddyfile, as the checker sees it, origin
// allow-list included; Caddy's certificate comes from its own local CA, which
// the checker is told to trust with -ca.
func TestCheckerThroughCaddy(t *testing.T) {
	t.Setenv("PEERO_TURN_SECRET", checkerSecret) // for the instance, and the checker
	site := caddySite(t)
	in := startInstance(t, append([]string{"-origin", site.origin()}, checkerFlags...)...)
	startCaddy(t, site, in.addr)
	args := append([]string{"-ca", site.rootCA(), "-origin", site.origin(), "-turn-secret", checkerSecret}, checkerFlags...)
	start := time.Now()
	code, out := runChecker(t, "wss://"+site.addr, args...)
	t.Logf("checker through Caddy, %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	checkPassed(t, code, out, "server-full", "origin-any-without-list", "turn-unconfigured")
}

// TestCaddyServesClient: the Caddyfile's one origin serves client/ over
// https (the demo page at /, peero.js), sends a room asked for without a
// WebSocket to Peero, which answers 426, and redirects http:// to https://.
func TestCaddyServesClient(t *testing.T) {
	site := caddySite(t)
	in := startInstance(t, "-origin", site.origin())
	startCaddy(t, site, in.addr)
	client := &http.Client{
		Timeout:       3 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: trusting(t, site.rootCA(), "localhost")},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(url string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	for path, file := range map[string]string{"/": "index.html", "/index.html": "index.html", "/peero.js": "peero.js"} {
		want, err := os.ReadFile(filepath.Join("..", "client", file))
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := get(site.origin() + path); resp.StatusCode != http.StatusOK || body != string(want) {
			t.Errorf("GET %s: HTTP %s, %d bytes; want 200 and client/%s (%d bytes)", path, resp.Status, len(body), file, len(want))
		}
	}
	if resp, body := get(site.origin() + "/some-room"); resp.StatusCode != http.StatusUpgradeRequired || !strings.HasPrefix(body, "peero:") {
		t.Errorf("GET /some-room: HTTP %s %q; want 426 and Peero's hint", resp.Status, body)
	}
	resp, _ := get("http://" + site.plain + "/some-room")
	if got, want := resp.StatusCode, http.StatusPermanentRedirect; got != want || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("GET http://%s/some-room: HTTP %d to %q; want %d to https://", site.plain, got, resp.Header.Get("Location"), want)
	}
}

// TestCaddyWebSocketOnAnyPath: the Caddyfile tells a WebSocket handshake by
// its headers, whatever their case, not by its path: one to / or /peero.js
// joins that room, while a plain GET of them gets the file. One over HTTP/1.0
// is refused with 400, as Peero refuses it.
func TestCaddyWebSocketOnAnyPath(t *testing.T) {
	site := caddySite(t)
	in := startInstance(t)
	startCaddy(t, site, in.addr)
	cases := []struct {
		proto, path, connection, upgrade string
		want                             int
	}{
		{"HTTP/1.1", "/", "Upgrade", "websocket", http.StatusSwitchingProtocols},
		{"HTTP/1.1", "/", "keep-alive, upgrade", "WebSocket", http.StatusSwitchingProtocols},
		{"HTTP/1.1", "/peero.js", "Upgrade", "websocket", http.StatusSwitchingProtocols},
		{"HTTP/1.1", "/index.html", "upgrade", "websocket", http.StatusSwitchingProtocols},
		{"HTTP/1.0", "/", "Upgrade", "websocket", http.StatusBadRequest},
		{"HTTP/1.0", "/room", "upgrade", "WEBSOCKET", http.StatusBadRequest},
	}
	for _, c := range cases {
		req := fmt.Sprintf("GET %s %s\r\nHost: %s\r\nConnection: %s\r\nUpgrade: %s\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			c.path, c.proto, site.addr, c.connection, c.upgrade)
		if got := handshakeStatus(t, site, req); got != c.want {
			t.Errorf("%s %s, Connection: %s, Upgrade: %s: HTTP %d; want %d", c.proto, c.path, c.connection, c.upgrade, got, c.want)
		}
	}
}

// handshakeStatus sends req, a WebSocket handshake, to site over TLS and
// returns the status of the response.
func handshakeStatus(t *testing.T, site caddySiteInfo, req string) int {
	t.Helper()
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: trusting(t, site.rootCA(), "localhost")}
	c, err := dialer.Dial("tcp", site.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", req, err)
	}
	return resp.StatusCode
}

// caddySiteInfo is where a test's Caddy serves, and where it keeps its state.
type caddySiteInfo struct {
	addr  string // the https site, localhost:PORT
	port  string
	plain string // Caddy's http port, for redirects: 127.0.0.1:PORT
	dir   string // Caddy's storage, configuration and logs
}

// origin is the site's origin, as a browser sends it.
func (s caddySiteInfo) origin() string { return "https://" + s.addr }

// rootCA is the file of the root certificate of Caddy's local CA, which
// Caddy writes when it first starts.
func (s caddySiteInfo) rootCA() string {
	return filepath.Join(s.dir, "data", "pki", "authorities", "local", "root.crt")
}

// caddySite picks the ports and the directory of a Caddy site, or skips the
// test if Caddy is missing.
func caddySite(t *testing.T) caddySiteInfo {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if caddySkipReason != "" {
		t.Skip(caddySkipReason)
	}
	_, port, _ := net.SplitHostPort(freeTCPAndUDPAddr(t)) // Caddy also listens on UDP, for HTTP/3
	return caddySiteInfo{addr: "localhost:" + port, port: port, plain: freeAddr(t), dir: t.TempDir()}
}

// startCaddy runs Caddy with deploy/Caddyfile for site, with upstream as
// Peero's address, changed only where a test must: global options that keep
// it to loopback, to its own local CA and to the test's directory, the site's
// address, Peero's address, and the path of client/. It returns when Caddy
// serves the site with a certificate from its CA; Caddy gets SIGTERM when the
// test ends.
func startCaddy(t *testing.T, site caddySiteInfo, upstream string) {
	t.Helper()
	shipped, err := os.ReadFile("Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	client, err := filepath.Abs(filepath.Join("..", "client"))
	if err != nil {
		t.Fatal(err)
	}
	_, plainPort, _ := net.SplitHostPort(site.plain)
	global := fmt.Sprintf(`{
	admin off
	local_certs
	skip_install_trust
	default_bind 127.0.0.1
	http_port %s
	https_port %s
	storage file_system %s
	grace_period 1s
}
`, plainPort, site.port, filepath.Join(site.dir, "data"))
	conf := global + editConfig(t, "Caddyfile", string(shipped), []edit{
		{`(?m)^peero\.example\.com \{$`, site.addr + " {"},
		{`reverse_proxy 127\.0\.0\.1:8080`, "reverse_proxy " + upstream},
		{`root \* client\n`, "root * " + client + "\n"},
	})
	file := filepath.Join(site.dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", file, "--adapter", "caddyfile")
	// Caddy keeps state under $XDG_DATA_HOME and $XDG_CONFIG_HOME (and $HOME):
	// keep them in the test's directory.
	cmd.Env = append(os.Environ(), "HOME="+site.dir, "XDG_DATA_HOME="+filepath.Join(site.dir, "xdg-data"), "XDG_CONFIG_HOME="+filepath.Join(site.dir, "xdg-config"))
	log := &logBuffer{}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() { // ends when Caddy exits and its stderr closes
		defer close(copied)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			log.Printf("%s", sc.Text())
		}
	}()
	exited := make(chan error, 1)
	go func() { <-copied; exited <- cmd.Wait() }() // Wait closes the pipe: read it all first
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("caddy still running 5 s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("caddy log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for { // ready once the site's certificate checks out against Caddy's root
		if lastErr = handshake(site); lastErr == nil {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("caddy exited: %v\n%s", err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy not serving %s with its local CA's certificate after 10 s: %v\n%s", site.addr, lastErr, log)
		}
	}
}

// handshake makes a TLS connection to site, trusting only Caddy's root.
func handshake(site caddySiteInfo) error {
	pemBytes, err := os.ReadFile(site.rootCA())
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("no certificate in %s yet", site.rootCA())
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	c, err := dialer.Dial("tcp", site.addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// freeTCPAndUDPAddr returns an address of 127.0.0.1 whose port is free for
// both TCP and UDP at the time of the call.
func freeTCPAndUDPAddr(t *testing.T) string {
	t.Helper()
	for range 10 {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := tcp.Addr().String()
		udp, err := net.ListenPacket("udp", addr)
		tcp.Close()
		if err == nil {
			udp.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}
