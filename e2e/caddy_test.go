package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoPageOverCaddy: Chromium loads the demo page from Caddy, run with
// deploy/Caddyfile, over https with a certificate from Caddy's local CA, and
// two tabs join a room over wss:// on the same origin and exchange a message
// over a DataChannel. Chromium trusts the CA as a user would install it: in
// the NSS database of its $HOME, not by ignoring certificate errors.
func TestDemoPageOverCaddy(t *testing.T) {
	ctx := setup(t)
	site := startCaddySite(t)
	trustInNSS(t, site.rootCA)
	b := newBrowser(t, ctx, site.origin)
	var tabs []*tab
	for _, name := range []string{"alice", "bob"} {
		tb := b.open(name, site.origin+"/")
		if got := eval[string](tb, `location.protocol + " " + window.isSecureContext`); got != "https: true" {
			t.Fatalf("tab %s: the page's protocol and secure context: %s; want https: true", name, got)
		}
		tb.joinDemo("wss://"+site.host, "e2e-caddy")
		tabs = append(tabs, tb)
	}
	alice, bob := tabs[0], tabs[1]
	for _, tb := range tabs {
		tb.waitFor("its id", `document.getElementById("status").dataset.id?.length === 26`)
		tb.waitFor("the other peer connected directly", `document.querySelector("#peers li[data-route] .state")?.textContent === "direct"`)
	}
	err := chromedp.Do(alice.ctx,
		chromedp.SendKeys(chromedp.CSS("#text"), "hello bob, over wss"),
		chromedp.Click(chromedp.CSS("#sendButton")),
	)
	if err != nil {
		t.Fatalf("alice sends: %v", err)
	}
	bob.waitFor("alice's message in the log", `document.getElementById("log").textContent.includes("hello bob, over wss")`)
	if joins := regexp.MustCompile(`INFO join `).FindAllString(site.peero.log.String(), -1); len(joins) != 2 {
		t.Errorf("Peero logged %d joins; want 2, one per tab, through Caddy", len(joins))
	}
}

// TestCaddyCertificateNeedsTrust: without Caddy's CA in its NSS database,
// Chromium refuses the page, so TestDemoPageOverCaddy's tabs connect because
// the CA is trusted, not because certificates go unchecked.
func TestCaddyCertificateNeedsTrust(t *testing.T) {
	ctx := setup(t)
	site := startCaddySite(t)
	t.Setenv("HOME", t.TempDir()) // no NSS database
	b := newBrowser(t, ctx, site.origin)
	err := chromedp.Do(b.ctx, chromedp.Navigate(site.origin+"/"))
	if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Errorf("opening %s without its CA: %v; want net::ERR_CERT_AUTHORITY_INVALID", site.origin, err)
	}
}

// caddySite is a Caddy, run with deploy/Caddyfile, in front of a Peero that
// allows only its origin.
type caddySite struct {
	host   string // localhost:PORT
	origin string // https://localhost:PORT
	rootCA string // the file of the root certificate of Caddy's local CA
	peero  *peeroServer
}

// startCaddySite runs Peero with -origin set to Caddy's site, and Caddy with
// deploy/Caddyfile in front of it, changed only where a test must: global
// options that keep Caddy to its own local CA and to the test's directory,
// the site's address, Peero's address and the path of client/. It returns
// once Caddy serves the site with a certificate from its CA. Caddy gets
// SIGTERM when the test ends; its log is printed if the test fails. Without
// Caddy the test is skipped, or fails under PEERO_E2E_REQUIRE.
func startCaddySite(t *testing.T) caddySite {
	t.Helper()
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		cannotTest(t, fmt.Sprintf("no caddy in $PATH (apt-get install caddy): %v", err))
	}
	httpsPort, httpPort := freePort(t), freePort(t) // free for UDP too: Caddy serves HTTP/3 on its https port
	site := caddySite{host: "localhost:" + httpsPort, origin: "https://localhost:" + httpsPort}
	site.peero = runServer(t, nil, "-origin", site.origin)
	shipped, err := os.ReadFile("../deploy/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	client, err := filepath.Abs("../client")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	site.rootCA = filepath.Join(dir, "data", "pki", "authorities", "local", "root.crt")
	conf := fmt.Sprintf(`{
	admin off
	local_certs
	skip_install_trust
	default_bind 127.0.0.1
	http_port %s
	https_port %s
	storage file_system %s
	grace_period 1s
}
`, httpPort, httpsPort, filepath.Join(dir, "data")) + string(shipped)
	for _, e := range []struct{ pattern, replacement string }{
		{`(?m)^peero\.example\.com \{$`, site.host + " {"},
		{`reverse_proxy 127\.0\.0\.1:8080`, "reverse_proxy 127.0.0.1:" + site.peero.port},
		{`root \* client\n`, "root * " + client + "\n"},
	} {
		re := regexp.MustCompile(e.pattern)
		if !re.MatchString(conf) {
			t.Fatalf("deploy/Caddyfile has no %q any more: update this test", e.pattern)
		}
		conf = re.ReplaceAllString(conf, e.replacement)
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(caddy, "run", "--config", file, "--adapter", "caddyfile")
	// Caddy keeps state under $XDG_DATA_HOME and $XDG_CONFIG_HOME (and $HOME).
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start caddy: %v", err)
	}
	log := &logBuffer{}
	copied := make(chan struct{})
	go func() { // ends when Caddy exits and closes its stderr
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
			t.Errorf("caddy still running 5 s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("caddy log:\n%s", log)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for { // ready once the site's certificate checks out against Caddy's root
		err := handshake(ctx, site)
		if err == nil {
			return site
		}
		select {
		case err := <-exited:
			t.Fatalf("caddy exited: %v\n%s", err, log)
		case <-ctx.Done():
			t.Fatalf("caddy not serving %s with its local CA's certificate after 10 s: %v\n%s", site.host, err, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// handshake makes a TLS connection to site, trusting only Caddy's root.
func handshake(ctx context.Context, site caddySite) error {
	pemBytes, err := os.ReadFile(site.rootCA)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("no certificate in %s yet", site.rootCA)
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	c, err := dialer.DialContext(ctx, "tcp", site.host)
	if err != nil {
		return err
	}
	return c.Close()
}

// certutil is NSS's tool (apt-get install libnss3-tools).
const certutil = "/usr/bin/certutil"

// trustInNSS makes a new $HOME for the browsers the test starts, with an NSS
// database, where Chromium on Linux looks for the certificate authorities a
// user added, that trusts the CA in caFile to identify web sites.
func trustInNSS(t *testing.T, caFile string) {
	t.Helper()
	if _, err := os.Stat(certutil); err != nil {
		cannotTest(t, fmt.Sprintf("no certutil at %s (apt-get install libnss3-tools): %v", certutil, err))
	}
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + db, "--empty-password"},
		{"-A", "-d", "sql:" + db, "-n", "Caddy local CA (Peero test)", "-t", "C,,", "-i", caFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Setenv("HOME", home) // Chromium, started after this, inherits it
}
