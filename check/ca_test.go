package main

import (
	"bytes"
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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWSSWithCA: over wss://, through a TLS proxy whose certificate comes from
// a private CA, the real server passes every check when the checker is given
// that CA with -ca.
func TestWSSWithCA(t *testing.T) {
	t.Parallel()
	caFile, cert := newCA(t, "localhost")
	port := portOf(t, startTLSProxy(t, startServer(t, "-ping", "2s"), cert))
	args := append(checkerFlags("-timeout", "2s", "-write-timeout", "300ms", "-ca", caFile), "wss://localhost:"+port)
	var out, errs bytes.Buffer
	code := run(args, &out, &errs, func(string) string { return "" })
	if m := summaryRE.FindStringSubmatch(out.String()); code != 0 || m == nil || m[2] != "0" || m[1] == "0" {
		t.Errorf("checker exit %d, output:\n%s%s\nwant exit 0, checks passed, none failed", code, out.String(), errs.String())
	}
}

// TestWSSRefused: a wss:// run whose certificate cannot be checked, or a -ca
// that cannot be used, stops before any check with exit status 2 and one
// line that says why.
func TestWSSRefused(t *testing.T) {
	t.Parallel()
	caFile, cert := newCA(t, "localhost")
	otherCA, _ := newCA(t, "localhost")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := portOf(t, startTLSProxy(t, startServer(t), cert))
	cases := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no -ca", []string{"wss://localhost:" + port}, "give its PEM file with -ca"},
		{"another CA", []string{"-ca", otherCA, "wss://localhost:" + port}, "certificate signed by unknown authority"},
		{"another name", []string{"-ca", caFile, "wss://127.0.0.1:" + port}, "127.0.0.1"},
		{"no PEM", []string{"-ca", notPEM, "wss://localhost:" + port}, "no PEM certificate"},
		{"no file", []string{"-ca", notPEM + ".missing", "wss://localhost:" + port}, "no such file"},
		{"ws://", []string{"-ca", caFile, "ws://localhost:" + port}, "-ca is for wss://"},
	}
	for _, c := range cases {
		var out, errs bytes.Buffer
		code := run(c.args, &out, &errs, func(string) string { return "" })
		if code != 2 || out.Len() > 0 || !strings.Contains(errs.String(), c.want) || strings.Count(errs.String(), "\n") != 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 2, no output, one line saying %q", c.name, code, out.String(), errs.String(), c.want)
		}
	}
}

// newCA makes a private CA and a certificate from it for host, and returns
// the file that holds the CA's certificate (PEM) and the host's certificate.
func newCA(t *testing.T, host string) (string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Peero checker test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// startTLSProxy ends TLS with cert on a port of 127.0.0.1 and passes the bytes
// on to target, as a TLS-terminating proxy does; it returns its address.
func startTLSProxy(t *testing.T, target string, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards open
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
			// Each copy ends when its source ends, and ends the other side.
			wg.Go(func() { io.Copy(server, client); server.Close() })
			wg.Go(func() { io.Copy(client, server); client.Close() })
		}
	})
	return ln.Addr().String()
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
