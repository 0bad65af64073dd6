package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// connectAll dials n clients of kind to s, dialers at a time; room(i) names
// client i's room (Peero). Each gets a goroutine that reads until ctx ends,
// handing every message to onMessage (which may be nil): reading also
// answers the server's pings.
func connectAll(ctx context.Context, s *server, n, dialers int, room func(int) string, onMessage func(i int, msg []byte)) ([]*client, error) {
	clients := make([]*client, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, err := dial(ctx, s.kind, s.addr, room(i))
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("client %d of %d: %w", i, n, err) })
					return
				}
				clients[i] = c
				go func() { // ends when ctx ends or the connection breaks
					for {
						msg, err := c.read(ctx)
						if err != nil {
							return
						}
						if onMessage != nil {
							onMessage(i, msg)
						}
					}
				}()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(clients)
		return nil, firstErr
	}
	return clients, nil
}

func closeAll(clients []*client) {
	for _, c := range clients {
		if c != nil {
			c.close()
		}
	}
}

// relayResult is one relay measurement.
type relayResult struct {
	MsgsPerSec      float64
	P50, P99, P999  float64 // one-way latency, ms
	ServerCPU       float64 // share of one core
	CPUPerMsgMicros float64
	LoadgenCPU      float64 // share of one core: near 1 means the generator, not the server, set the pace
}

// relay runs pairs of clients that keep window targeted offers of size
// bytes in flight between them: one side sends window offers, the other
// sends each straight back, and every arrival is answered with a new offer.
// Against the echo server, the first of each pair sends and the server sends
// back. Only messages that arrive within the measure period count.
func relay(s *server, pairs, window, size int, warmup, measure time.Duration) (relayResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var measuring atomic.Bool
	var count atomic.Int64
	latencies := make([][]float64, 2*pairs)
	clients := make([]*client, 2*pairs)
	for i := range pairs {
		room := fmt.Sprintf("/relay-%d", i)
		for j := range 2 {
			c, err := dial(ctx, s.kind, s.addr, room)
			if err != nil {
				closeAll(clients)
				return relayResult{}, err
			}
			clients[2*i+j] = c
		}
	}
	defer closeAll(clients)
	var wg sync.WaitGroup
	for i, c := range clients {
		partner := clients[i^1].id
		first := i%2 == 0
		if s.kind == echo && !first {
			continue // against the echo server, one client per pair carries the same load
		}
		wg.Go(func() { // ends when ctx ends
			if first {
				for range window {
					if c.write(ctx, c.offer(partner, size, time.Now())) != nil {
						return
					}
				}
			}
			for {
				msg, err := c.read(ctx)
				if err != nil {
					return
				}
				ts, ok := sentAt(msg)
				if !ok {
					continue // an announce, a pong
				}
				now := time.Now()
				if measuring.Load() {
					count.Add(1)
					latencies[i] = append(latencies[i], float64(now.UnixNano()-ts)/1e6)
				}
				if c.write(ctx, c.offer(partner, size, now)) != nil {
					return
				}
			}
		})
	}
	time.Sleep(warmup) // the load runs on its own; this only sets the measuring period
	cpu0, gen0, t0 := cpuSeconds(s.pid()), cpuSeconds(os.Getpid()), time.Now()
	measuring.Store(true)
	time.Sleep(measure)
	measuring.Store(false)
	cpu1, gen1, elapsed := cpuSeconds(s.pid()), cpuSeconds(os.Getpid()), time.Since(t0).Seconds()
	cancel()
	wg.Wait()
	all := slices.Concat(latencies...)
	if len(all) == 0 {
		return relayResult{}, fmt.Errorf("no message arrived")
	}
	slices.Sort(all)
	n := float64(count.Load())
	return relayResult{
		MsgsPerSec:      n / elapsed,
		P50:             percentile(all, 0.50),
		P99:             percentile(all, 0.99),
		P999:            percentile(all, 0.999),
		ServerCPU:       (cpu1 - cpu0) / elapsed,
		CPUPerMsgMicros: (cpu1 - cpu0) / n * 1e6,
		LoadgenCPU:      (gen1 - gen0) / elapsed,
	}, nil
}

func percentile(sorted []float64, p float64) float64 {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// idleResult is the idle measurement: server RSS per peer in KiB above its
// RSS before the peers came, as it is after settling, and after a full GC.
type idleResult struct {
	PerPeer, PerPeerAfterGC float64
	RSSKB                   int
}

// idleMemory connects n idle peers (Peero: rooms of two) and measures the
// server's memory. PeerJS clients send a HEARTBEAT every 5 s as PeerJS's own
// client does; Peero's answer the server's pings.
func idleMemory(s *server, n int, settle time.Duration) (idleResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.Sleep(time.Second)
	before := memKB(s.pid(), "VmRSS")
	clients, err := connectAll(ctx, s, n, 32, func(i int) string { return fmt.Sprintf("/idle-%d", i/2) }, nil)
	if err != nil {
		return idleResult{}, err
	}
	defer closeAll(clients)
	if s.kind == peerjs {
		go func() { // ends with ctx
			heartbeat := []byte(`{"type":"HEARTBEAT"}`)
			for tick := time.NewTicker(5 * time.Second); ; {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					for _, c := range clients {
						c.write(ctx, heartbeat)
					}
				}
			}
		}()
	}
	time.Sleep(settle) // let the server settle after the connection burst
	r := idleResult{RSSKB: memKB(s.pid(), "VmRSS")}
	s.collectGarbage()
	r.PerPeer, r.PerPeerAfterGC = float64(r.RSSKB-before)/float64(n), float64(memKB(s.pid(), "VmRSS")-before)/float64(n)
	return r, nil
}

// stormResult is the join storm measurement.
type stormResult struct {
	Seconds float64 // until every peer had every announce
	PeakKB  int
}

// joinStorm has n peers join one Peero room at once, 32 dialing at a time,
// until each has been told of every other that joined after it: n(n-1)/2
// announces in all.
func joinStorm(s *server, n int) (stormResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var told atomic.Int64 // announces received
	start := time.Now()
	clients, err := connectAll(ctx, s, n, 32, func(int) string { return "/storm" }, func(_ int, msg []byte) {
		if bytes.HasPrefix(msg, []byte(`{"type":"announce",`)) {
			told.Add(1)
		}
	})
	if err != nil {
		return stormResult{}, err
	}
	defer closeAll(clients)
	// Each pair meets twice: the later peer finds the earlier in its peers
	// list, and the earlier is sent an announce of the later.
	want := int64(n * (n - 1) / 2)
	if err := waitFor(&told, want, 60*time.Second, "announces"); err != nil {
		return stormResult{}, err
	}
	return stormResult{Seconds: time.Since(start).Seconds(), PeakKB: memKB(s.pid(), "VmHWM")}, nil
}

// waitFor waits until counter reaches want, or fails after timeout.
func waitFor(counter *atomic.Int64, want int64, timeout time.Duration, what string) error {
	deadline := time.Now().Add(timeout)
	for counter.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d %s after %s", counter.Load(), want, what, timeout)
		}
		time.Sleep(time.Millisecond) // polling a counter; the resolution is enough for seconds
	}
	return nil
}

// fanout joins n peers to one Peero room, then has one of them broadcast an
// offer, times times, and returns how long each took to reach all others.
func fanout(s *server, n, times int) ([]float64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reached atomic.Int64
	done := make(chan struct{}, 1)
	clients, err := connectAll(ctx, s, n, 32, func(int) string { return "/fanout" }, func(_ int, msg []byte) {
		if _, ok := sentAt(msg); ok && reached.Add(1) == int64(n-1) {
			done <- struct{}{}
		}
	})
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	time.Sleep(time.Second) // let the announces of the joins drain first
	var took []float64
	for range times {
		reached.Store(0)
		start := time.Now()
		if err := clients[0].write(ctx, broadcast(signal(1024, start))); err != nil {
			return nil, err
		}
		select {
		case <-done:
			took = append(took, time.Since(start).Seconds())
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("broadcast reached %d of %d peers in 30 s", reached.Load(), n-1)
		}
	}
	return took, nil
}

// churnResult is the churn measurement.
type churnResult struct {
	Seconds                         float64
	Errors                          int
	GoroutinesBefore, After         int
	RSSBeforeKB, PeakKB, RSSAfterKB int // after: once idle, then after a forced GC
	RSSAfterGCKB                    int
}

// churn runs cycles joins and leaves over rooms rooms, workers at a time:
// each cycle connects, waits for the peers list, and leaves.
func churn(s *server, cycles, rooms, workers int) churnResult {
	ctx := context.Background()
	time.Sleep(time.Second)
	r := churnResult{GoroutinesBefore: s.goroutines(), RSSBeforeKB: memKB(s.pid(), "VmRSS")}
	var next, errs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(cycles); i = next.Add(1) {
				c, err := dial(ctx, peero, s.addr, fmt.Sprintf("/churn-%d", i%int64(rooms)))
				if err != nil {
					errs.Add(1)
					continue
				}
				c.close()
			}
		})
	}
	wg.Wait()
	r.Seconds, r.Errors = time.Since(start).Seconds(), int(errs.Load())
	r.PeakKB = memKB(s.pid(), "VmHWM")
	deadline := time.Now().Add(10 * time.Second)
	for r.After = s.goroutines(); r.After > r.GoroutinesBefore && time.Now().Before(deadline); r.After = s.goroutines() {
		time.Sleep(50 * time.Millisecond) // leaves finish in the server's own time
	}
	time.Sleep(5 * time.Second)
	r.RSSAfterKB = memKB(s.pid(), "VmRSS")
	s.collectGarbage()
	r.RSSAfterGCKB = memKB(s.pid(), "VmRSS")
	return r
}

// capacityResult is the capacity measurement.
type capacityResult struct {
	Held, Answered int
	RSSKB          int
}

// capacity holds n Peero peers (rooms of two) at once and has every one of
// them ping the server; all must answer.
func capacity(s *server, n int) (capacityResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pongs atomic.Int64
	all := make(chan struct{}, 1)
	clients, err := connectAll(ctx, s, n, 64, func(i int) string { return fmt.Sprintf("/cap-%d", i/2) }, func(_ int, msg []byte) {
		if string(msg) == `{"type":"pong"}` && pongs.Add(1) == int64(n) {
			all <- struct{}{}
		}
	})
	if err != nil {
		return capacityResult{}, err
	}
	defer closeAll(clients)
	for _, c := range clients {
		if err := c.write(ctx, []byte(`{"type":"ping"}`)); err != nil {
			return capacityResult{}, err
		}
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
	}
	return capacityResult{Held: len(clients), Answered: int(pongs.Load()), RSSKB: memKB(s.pid(), "VmRSS")}, nil
}

// roomStormResult is the room storm measurement.
type roomStormResult struct {
	Accepted, RoomFull, Failed   int     // joins let in, refused with "room full", failed otherwise
	FirstFailure                 error   // the first of Failed
	Seconds                      float64 // from the first dial until every peer let in had every announce
	CPUSeconds                   float64 // server CPU used in that time
	ProbeP50, ProbeP99, ProbeMax float64 // the probe's round trips, ms
	Probes                       int
	PeakKB                       int
}

// roomStorm has n peers try to join one Peero room, batch at a time: a
// batch dials at once, and the next starts when the server has let in or
// refused all of it. Peers let in stay until the end and read all they are
// sent. Meanwhile a probe (see runProbe) pings the server from another
// room. The storm ends when every peer let in has been told of every other
// let in after it.
func roomStorm(s *server, n, batch int) (roomStormResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var r roomStormResult
	probe, err := startProbe(s.addr)
	if err != nil {
		return r, err
	}
	cpu0, start := cpuSeconds(s.pid()), time.Now()
	defer probe.stop() // at once if the storm fails; stopped on purpose below
	var (
		told     atomic.Int64 // announces received
		mu       sync.Mutex   // guards r's counts and accepted while a batch dials
		accepted []*client
	)
	defer func() { closeAll(accepted) }()
	for first := 0; first < n; first += batch {
		var wg sync.WaitGroup
		for range min(batch, n-first) {
			wg.Go(func() {
				c, err := dial(ctx, peero, s.addr, "/storm")
				var refused *refusedError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					r.Accepted++
					accepted = append(accepted, c)
				case errors.As(err, &refused) && refused.reason == "room full":
					r.RoomFull++
					return
				default:
					if r.Failed++; r.FirstFailure == nil {
						r.FirstFailure = err
					}
					return
				}
				go func() { // ends when ctx ends or the connection breaks
					for {
						msg, err := c.read(ctx)
						if err != nil {
							return
						}
						if bytes.HasPrefix(msg, []byte(`{"type":"announce",`)) {
							told.Add(1)
						}
					}
				}()
			})
		}
		wg.Wait()
	}
	if err := waitFor(&told, int64(r.Accepted*(r.Accepted-1)/2), 180*time.Second, "announces"); err != nil {
		return r, err
	}
	r.Seconds, r.CPUSeconds = time.Since(start).Seconds(), cpuSeconds(s.pid())-cpu0
	rtts, err := probe.stop()
	if err != nil {
		return r, err
	}
	slices.Sort(rtts)
	r.ProbeP50, r.ProbeP99, r.ProbeMax, r.Probes = percentile(rtts, 0.5), percentile(rtts, 0.99), rtts[len(rtts)-1], len(rtts)
	r.PeakKB = memKB(s.pid(), "VmHWM")
	return r, nil
}

// probe is a child process running runProbe: this program again, with
// -probe. A process of its own, so that the load generator's busy
// goroutines do not delay it: the kernel, not Go's scheduler, shares the
// generator's core between the two.
type probe struct {
	cmd   *exec.Cmd
	stdin io.Closer
	rtts  chan []float64 // the round trips, once the probe has exited
}

func startProbe(addr string) (*probe, error) {
	cmd := exec.Command(os.Args[0], "-probe", addr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &probe{cmd: cmd, stdin: in, rtts: make(chan []float64, 1)}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" { // it has joined its room
		in.Close()
		cmd.Wait()
		return nil, fmt.Errorf("probe did not start")
	}
	go func() { // ends when the probe exits
		var rtts []float64
		for sc.Scan() {
			if v, err := strconv.ParseFloat(sc.Text(), 64); err == nil {
				rtts = append(rtts, v)
			}
		}
		p.rtts <- rtts
	}()
	return p, nil
}

// stop ends the probe and returns its round trips in ms. Calls after the
// first return nothing.
func (p *probe) stop() ([]float64, error) {
	if p.stdin == nil {
		return nil, nil
	}
	p.stdin.Close() // the probe's signal to stop
	p.stdin = nil
	rtts := <-p.rtts
	if err := p.cmd.Wait(); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	if len(rtts) == 0 {
		return nil, fmt.Errorf("probe: no pong")
	}
	return rtts, nil
}

// runProbe is the probe process (-probe): it joins room /probe of the
// Peero at addr and pings it, {"type":"ping"} then waiting for
// {"type":"pong"}, a ping every 10 ms (a late pong delays the next), until
// its standard input closes. It prints each round trip in ms, a line each.
func runProbe(addr string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := dial(ctx, peero, addr, "/probe")
	if err != nil {
		return err
	}
	defer c.close()
	stop := make(chan struct{})
	go func() { // ends when standard input closes
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	fmt.Fprintln(out, "ready")
	out.Flush()
	ping := []byte(`{"type":"ping"}`)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C { // at least one ping, however short the storm
		select {
		case <-stop:
			return nil
		default:
		}
		sent := time.Now()
		if err := c.write(ctx, ping); err != nil {
			return err
		}
		for {
			msg, err := c.read(ctx)
			if err != nil {
				return err
			}
			if string(msg) == `{"type":"pong"}` {
				break
			}
		}
		fmt.Fprintf(out, "%.3f\n", float64(time.Since(sent).Nanoseconds())/1e6)
	}
}
