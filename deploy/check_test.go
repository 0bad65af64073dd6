package deploy

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkerFlags are the settings the instances run with, given to the checker
// too, so that it checks them through nginx.
var checkerFlags = []string{"-ping", "1s", "-max-room-peers", "20", "-turn", "turn:127.0.0.1:3478", "-resume-ttl", "2s"}

const checkerSecret = "deploy-check-secret"

// runChecker builds the checker (../check, protocol.md made executable) and
// runs it against target, a ws:// or wss:// URL, with args; it returns its
// exit status and output.
func runChecker(t *testing.T, target string, args ...string) (int, string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "check")
	build := exec.Command("go", "build", "-o", bin, "./check")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the checker: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(args, target)...)
	cmd.Dir = ".."
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode(), string(out) + stderr.String()
		}
		t.Fatalf("running the checker: %v", err)
	}
	return 0, string(out)
}

// checkPassed fails t unless the checker's run passed: exit status 0, no
// check failed, and none skipped but those named in allowedSkips.
func checkPassed(t *testing.T, code int, out string, allowedSkips ...string) {
	t.Helper()
	if code != 0 || !regexp.MustCompile(`\n\d+ passed, 0 failed, \d+ skipped\n$`).MatchString(out) {
		t.Errorf("checker exit %d; want 0, nothing failed", code)
	}
	for _, line := range strings.Split(out, "\n") {
		if name, _, _ := strings.Cut(strings.TrimPrefix(line, "SKIP "), ":"); strings.HasPrefix(line, "SKIP ") && !slices.Contains(allowedSkips, name) {
			t.Errorf("%s; want only %v skipped", line, allowedSkips)
		}
	}
}

// TestCheckerThroughNginx: every rule of protocol.md holds through nginx with
// deploy/nginx.conf, as the checker sees it: a proxy that broke the protocol
// (no Upgrade header passed on, frames buffered, a read timeout shorter than
// Peero's pings) would fail it. Settings the instances were not started with
// are skipped.
func TestCheckerThroughNginx(t *testing.T) {
	t.Setenv("PEERO_TURN_SECRET", checkerSecret) // for the instances, and the checker
	proxy, _ := cluster(t, 3, shortTimeouts, checkerFlags...)
	args := append([]string{"-origin=", "-turn-secret", checkerSecret}, checkerFlags...)
	start := time.Now()
	code, out := runChecker(t, "ws://"+proxy, args...)
	t.Logf("checker through nginx, %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	checkPassed(t, code, out, "server-full", "origin-allow-list", "turn-unconfigured") // settings the instances do not have, or have
}

// TestCheckerCatchesShortReadTimeout: the checker fails behind an nginx whose
// read timeout is shorter than Peero's ping interval: idle peers are cut.
func TestCheckerCatchesShortReadTimeout(t *testing.T) {
	proxy, _ := cluster(t, 1, proxyTimeouts{connect: time.Second, read: 300 * time.Millisecond}, "-ping", "1s")
	code, out := runChecker(t, "ws://"+proxy, "-ping", "1s", "-write-timeout", "1s", "-run", "^ws-ping-answered-after-quiet$")
	if code != 1 || !strings.HasPrefix(out, "FAIL ws-ping-answered-after-quiet: ") {
		t.Errorf("checker exit %d, output:\n%s\nwant exit 1 and FAIL ws-ping-answered-after-quiet", code, out)
	}
}
