package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestCheckerThroughNginxTLS: every rule of protocol.md holds over wss://
// through nginx with deploy/nginx-tls.conf and a self-signed certificate,
// which the checker is told to trust with -ca.
func TestCheckerThroughNginxTLS(t *testing.T) {
	t.Setenv("PEERO_TURN_SECRET", checkerSecret) // for the instances, and the checker
	proxy, _, cert := nginxTLS(t, checkerFlags...)
	args := append([]string{"-ca", cert, "-origin=", "-turn-secret", checkerSecret}, checkerFlags...)
	start := time.Now()
	code, out := runChecker(t, "wss://"+proxy, args...)
	t.Logf("checker through nginx over TLS, %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	checkPassed(t, code, out, "server-full", "origin-allow-list", "turn-unconfigured")
}

// TestNginxTLSRedirects: nginx-tls.conf's port-80 server sends plain http://
// requests, WebSocket handshakes included, to https://, and serves the
// certificate authority's challenge files.
func TestNginxTLSRedirects(t *testing.T) {
	_, plain, _ := nginxTLS(t)
	client := &http.Client{
		Timeout:       3 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, _ := http.NewRequest("GET", "http://"+plain+"/room?x=1", nil)
	req.Host = "peero.example.com"
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Status+" "+resp.Header.Get("Location"), "301 Moved Permanently https://peero.example.com/room?x=1"; got != want {
		t.Errorf("a handshake to port 80: %s; want %s", got, want)
	}
	resp, err = client.Get("http://" + plain + "/.well-known/acme-challenge/" + challengeToken)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != challengeToken+".key" {
		t.Errorf("the challenge file: HTTP %s %q; want 200 %q", resp.Status, body, challengeToken+".key")
	}
}

// challengeToken names the challenge file that nginxTLS puts where
// nginx-tls.conf's port-80 server serves them from.
const challengeToken = "peero-test-token"

// TestNginxTLSMatchesPlain: nginx-tls.conf's location for Peero is nginx.conf's,
// so that what the nginx.conf tests prove holds over TLS too.
func TestNginxTLSMatchesPlain(t *testing.T) {
	block := regexp.MustCompile(`(?s)\n        location / \{\n            # Peero refuses.*?\n        \}\n`)
	var blocks []string
	for _, file := range []string{"nginx.conf", "nginx-tls.conf"} {
		conf, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		b := block.FindString(string(conf))
		if b == "" {
			t.Fatalf("deploy/%s has no location / block with Peero's settings any more: update this test", file)
		}
		blocks = append(blocks, b)
	}
	if blocks[0] != blocks[1] {
		t.Errorf("nginx-tls.conf's location / is\n%s\nnginx.conf's is\n%s\nwant the same", blocks[1], blocks[0])
	}
}

// nginxTLS starts three instances with args and nginx with
// deploy/nginx-tls.conf in front of them, with a self-signed certificate for
// localhost. It returns nginx's TLS address, as localhost:PORT, its plain
// http address, and the certificate's file.
func nginxTLS(t *testing.T, args ...string) (tlsAddr, plainAddr, certFile string) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	var upstreams []string
	for range 3 {
		upstreams = append(upstreams, startInstance(t, args...).addr)
	}
	certFile, keyFile := selfSigned(t, "localhost")
	tlsAddr, plainAddr = freeAddr(t), freeAddr(t)
	runNginx(t, "nginx-tls.conf", tlsAddr, upstreams, proxyTimeouts{connect: time.Second, read: 3 * time.Second},
		edit{`listen 443 ssl;`, "listen " + tlsAddr + " ssl;"},
		edit{`listen 80;`, "listen " + plainAddr + ";"},
		edit{`ssl_certificate     /etc/ssl/peero/fullchain\.pem;`, "ssl_certificate " + certFile + ";"},
		edit{`ssl_certificate_key /etc/ssl/peero/privkey\.pem;`, "ssl_certificate_key " + keyFile + ";"},
		edit{`root /var/www/letsencrypt;`, "root " + challengeDir(t) + ";"},
	)
	_, port, _ := net.SplitHostPort(tlsAddr)
	return "localhost:" + port, plainAddr, certFile
}

// challengeDir returns a directory with the file
// .well-known/acme-challenge/<challengeToken> in it, as certbot leaves it. It
// is readable by all: nginx's workers run as nobody when the test runs as root.
func challengeDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "peero-acme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sub := filepath.Join(dir, ".well-known", "acme-challenge")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, challengeToken), []byte(challengeToken+".key"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// selfSigned writes a self-signed certificate for host, and its key, as PEM
// files, and returns their paths. A client trusts it by trusting the
// certificate itself.
func selfSigned(t *testing.T, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// trusting returns a TLS configuration for host that trusts only the
// certificates in the PEM file caFile.
func trusting(t *testing.T, caFile, host string) *tls.Config {
	t.Helper()
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return &tls.Config{RootCAs: roots, ServerName: host}
}
