package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one server process under test, pinned to the server core.
type server struct {
	kind  kind
	addr  string // where clients connect
	debug string // Peero only: its pprof listener
	cmd   *exec.Cmd
	proc  int // its pid: taskset execs the server, so the pid is the server's
}

// paths of what run.sh built and installed.
var (
	peeroBin  = ".bin/peero"
	echoBin   = ".bin/echo"
	floorBin  = ".bin/floor"
	peerjsDir = ".peerjs"
)

var listenRE = regexp.MustCompile(`(?:peero listening port=|listening (?:127\.0\.0\.1|\[::\]):)(\d+)`)

// start starts a server of kind on the server core and waits until it listens.
func start(k kind, serverCPU string, args ...string) (*server, error) {
	s := &server{kind: k}
	var cmd *exec.Cmd
	switch k {
	case peero:
		s.debug = freeAddr()
		cmd = exec.Command("taskset", append([]string{"-c", serverCPU, peeroBin, "-port", "0"}, args...)...)
		cmd.Env = append(os.Environ(), "PEERO_DEBUG_ADDR="+s.debug)
	case peerjs:
		cmd = exec.Command("taskset", "-c", serverCPU, "node", "--expose-gc", "peerjs.cjs")
		cmd.Env = append(os.Environ(), "NODE_PATH="+peerjsDir+"/node_modules")
	case echo:
		cmd = exec.Command("taskset", "-c", serverCPU, echoBin)
	case floor:
		cmd = exec.Command("taskset", "-c", serverCPU, floorBin)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout // Peero logs to stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.cmd, s.proc = cmd, cmd.Process.Pid
	ports := make(chan string, 1)
	go func() { // ends when the server exits
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
				break
			}
		}
		io.Copy(io.Discard, out) // Peero logs each join and leave
	}()
	select {
	case port := <-ports:
		s.addr = "127.0.0.1:" + port
		return s, nil
	case <-time.After(20 * time.Second):
		s.stop()
		return nil, fmt.Errorf("%s did not start", k)
	}
}

// stop ends the server: SIGTERM, then SIGKILL after a few seconds.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

func (s *server) pid() int { return s.proc }

// cpuSeconds returns the CPU time (user + system) a process has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// pinnedCore returns the one core a process may run on (taskset), or -1
// if it may run on several.
func pinnedCore(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return -1
}

// coreBusy returns the time core n has spent busy (user, nice, system, irq,
// softirq and steal in /proc/stat), in seconds; NaN if n is not a core.
func coreBusy(n int) float64 {
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != fmt.Sprint("cpu", n) {
			continue
		}
		var busy float64
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			v, _ := strconv.ParseFloat(f[i], 64)
			busy += v
		}
		return busy / 100 // USER_HZ
	}
	return math.NaN()
}

// memKB returns a field of /proc/PID/status in KiB: VmRSS now, VmHWM the peak.
func memKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// goroutines returns Peero's goroutine count, from its debug listener.
func (s *server) goroutines() int {
	resp, err := http.Get("http://" + s.debug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	return n
}

// collectGarbage makes the server run a full garbage collection: Peero and
// the floor also return free memory to the OS (debug.FreeOSMemory).
func (s *server) collectGarbage() {
	switch s.kind {
	case peero:
		if resp, err := http.Get("http://" + s.debug + "/debug/freeosmemory"); err == nil {
			resp.Body.Close()
		}
	case peerjs, floor:
		s.cmd.Process.Signal(syscall.SIGUSR2)
	}
	time.Sleep(time.Second) // neither says when it is done
}

// peeroHasFlag tells whether the Peero build has a command-line flag.
func peeroHasFlag(name string) bool {
	out, _ := exec.Command(peeroBin, "-h").CombinedOutput() // -h exits 2 after listing the flags
	return strings.Contains(string(out), "-"+name+" ")
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
