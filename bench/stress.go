package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the stress scenarios: a flood of large broadcasts into a
// room of readers, a room where most peers stopped reading, and the relay at
// a fixed offered rate. Each runs against any Peero build: they use only the
// protocol, and the server's /proc files for its memory and CPU.

// dialAll dials n clients of kind to s, dialers at a time, client i to
// room(i), and returns them once every one has been greeted. Unlike
// connectAll it starts no reads: the caller decides who reads.
func dialAll(ctx context.Context, s *server, n, dialers int, room func(int) string) ([]*client, error) {
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

// waitGroup waits for wg, at most timeout, and tells whether it ended.
func waitGroup(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }() // ends with wg: the caller cancels what it waits for
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// broadcastOf builds an offer to the whole room (Peero) of exactly size
// bytes, whose signal carries the time at.
func broadcastOf(size int, at time.Time) []byte {
	return broadcast(signal(size-len(`{"type":"offer","signal":}`), at))
}

// resetPeakRSS sets the server's VmHWM back to its RSS now (Linux's
// /proc/PID/clear_refs), so that a later VmHWM is the peak since.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// seconds returns how long after start each non-zero time is, sorted.
func seconds(times []time.Time, start time.Time) []float64 {
	var s []float64
	for _, t := range times {
		if !t.IsZero() {
			s = append(s, t.Sub(start).Seconds())
		}
	}
	slices.Sort(s)
	return s
}

// kv formats name=value pairs for a log line that ab.sh can read: a float
// with 2 decimals, anything else as it prints.
func kv(pairs ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch v := pairs[i+1].(type) {
		case float64:
			fmt.Fprintf(&b, "%s=%.2f", pairs[i], v)
		default:
			fmt.Fprintf(&b, "%s=%v", pairs[i], v)
		}
	}
	return b.String()
}

// usage is what a server and the load generator did over a period, as
// shares of one core: the CPU each used, and the CPU other programs used on
// the core each is pinned to (NaN if it is not pinned to one), a sign of a
// disturbed run on a shared machine.
type usage struct {
	ServerCPU, LoadgenCPU       float64
	ServerOthers, LoadgenOthers float64
	Seconds                     float64 // the period
}

// startUsage starts measuring the usage of the server pid and this program;
// the function it returns ends the period.
func startUsage(pid int) func() usage {
	me := os.Getpid()
	sc, gc := pinnedCore(pid), pinnedCore(me)
	cpu0, gen0, sb0, gb0, t0 := cpuSeconds(pid), cpuSeconds(me), coreBusy(sc), coreBusy(gc), time.Now()
	return func() usage {
		e := time.Since(t0).Seconds()
		u := usage{ServerCPU: (cpuSeconds(pid) - cpu0) / e, LoadgenCPU: (cpuSeconds(me) - gen0) / e, Seconds: e}
		u.ServerOthers = max(0, (coreBusy(sc)-sb0)/e-u.ServerCPU)
		u.LoadgenOthers = max(0, (coreBusy(gc)-gb0)/e-u.LoadgenCPU)
		return u
	}
}

func (u usage) kv() []any {
	return []any{"server_cpu_pct", 100 * u.ServerCPU, "server_core_others_pct", 100 * u.ServerOthers,
		"loadgen_cpu_pct", 100 * u.LoadgenCPU, "loadgen_core_others_pct", 100 * u.LoadgenOthers}
}

// floodResult is the flood measurement.
type floodResult struct {
	RelayedGB                    float64 // message bytes the readers received during the flood, in 10^9
	Readers, ReadersDropped      int     // readers, and those whose connection ended before the scenario did
	FirstDrop                    float64 // s after the flood began that the first dropped reader saw its end; -1 for none
	Sent                         int     // offers the flooding peer had written when the flood ended
	FlooderDropped               bool    // its connection ended before the flood did
	RSSRiseMiB                   float64 // the server's peak RSS in the scenario minus its RSS before
	ProbeP50, ProbeP99, ProbeMax float64 // the probe's round trips, ms
	Probes                       int
	usage                        // during the flood
}

func (r floodResult) String() string {
	return kv(append([]any{"relayed_GB", r.RelayedGB, "readers_dropped", r.ReadersDropped, "of", r.Readers, "first_drop_s", orNone(r.FirstDrop),
		"sent", r.Sent, "flooder_dropped", b2i(r.FlooderDropped), "rss_rise_MiB", r.RSSRiseMiB,
		"probe_p50_ms", r.ProbeP50, "probe_p99_ms", r.ProbeP99, "probe_max_ms", r.ProbeMax, "pings", r.Probes}, r.usage.kv()...)...)
}

// orNone is a time in s, or "none" if negative: nothing happened.
func orNone(s float64) any {
	if s < 0 {
		return "none"
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// floodDrain is how long the readers read on after the flooding peer stops:
// a reader the server dropped sees its close frame only after the data
// queued before it.
const floodDrain = time.Second

// flood joins readers peers to room /flood of a Peero server, and one more
// that broadcasts offers of exactly size bytes as fast as its writes return,
// for length. The readers read all they are sent, as fast as they can.
// Meanwhile a probe (see runProbe) pings the server from another room. The
// scenario ends floodDrain after the flood: a reader whose connection ended
// before that (a close frame, EOF, a reset) was dropped.
func flood(s *server, readers, size int, length time.Duration) (floodResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := floodResult{Readers: readers, FirstDrop: -1}
	clients, err := dialAll(ctx, s, readers+1, 32, func(int) string { return "/flood" })
	if err != nil {
		return r, err
	}
	defer closeAll(clients)
	flooder := clients[readers]
	var (
		floodOver, over atomic.Bool  // the flood ended; the scenario ended: connections that end after were not dropped
		received        atomic.Int64 // message bytes, all readers together
		wg              sync.WaitGroup
	)
	dropped := make([]time.Time, readers) // when reader i saw its connection end; each reader writes its own
	for i, c := range clients[:readers] {
		wg.Go(func() { // ends when its connection does: dropped, or closed at the end
			buf := make([]byte, 64<<10)
			for {
				_, rd, err := c.ws.Reader(ctx)
				for err == nil {
					var n int
					n, err = rd.Read(buf)
					received.Add(int64(n))
				}
				if err != io.EOF { // EOF ends a message; anything else the connection
					if !over.Load() {
						dropped[i] = time.Now()
					}
					return
				}
			}
		})
	}
	probe, err := startProbe(s.addr)
	if err != nil {
		return r, err
	}
	defer probe.stop() // at once if the flood fails; stopped on purpose below
	before := memKB(s.pid(), "VmRSS")
	if err := resetPeakRSS(s.pid()); err != nil {
		return r, err
	}
	var sent atomic.Int64
	var flooderDropped atomic.Bool
	msg := broadcastOf(size, time.Now())
	received.Store(0) // the announces of the joins do not count
	stopUsage, start := startUsage(s.pid()), time.Now()
	wg.Go(func() { // the flooding peer's writes; end with the flood, or its connection
		for !floodOver.Load() {
			if err := flooder.write(ctx, msg); err != nil {
				if !floodOver.Load() {
					flooderDropped.Store(true)
				}
				return
			}
			sent.Add(1)
		}
	})
	wg.Go(func() { // the flooding peer's reads (announces, the server's pings); end with its connection
		for {
			if _, err := flooder.read(ctx); err != nil {
				if !floodOver.Load() {
					flooderDropped.Store(true)
				}
				return
			}
		}
	})
	time.Sleep(length)
	floodOver.Store(true)
	r.RelayedGB, r.Sent, r.FlooderDropped = float64(received.Load())/1e9, int(sent.Load()), flooderDropped.Load()
	r.usage = stopUsage()
	rtts, err := probe.stop()
	if err != nil {
		return r, err
	}
	slices.Sort(rtts)
	r.ProbeP50, r.ProbeP99, r.ProbeMax, r.Probes = percentile(rtts, 0.5), percentile(rtts, 0.99), rtts[len(rtts)-1], len(rtts)
	time.Sleep(floodDrain)
	over.Store(true)
	r.RSSRiseMiB = float64(memKB(s.pid(), "VmHWM")-before) / 1024
	cancel()
	closeAll(clients)
	wg.Wait()
	drops := seconds(dropped, start)
	r.ReadersDropped = len(drops)
	if len(drops) > 0 {
		r.FirstDrop = drops[0]
	}
	return r, nil
}

// stalledResult is the stalled room measurement.
type stalledResult struct {
	P50, P99, Max         float64 // the active peers' offer latency, ms, from each offer's scheduled send time
	Sent, Received, Lost  int     // offers the active peers sent; their arrivals at the other active peers; arrivals missing
	SendLagMax            float64 // ms: the latest an offer went out after its scheduled time
	Stalled, StalledGone  int     // stalled peers, and those the room was told had left
	FirstGone, LastGone   float64 // s after the first offer that the first and the last of those were told; -1 for none
	Active, ActiveDropped int     // active peers, and those whose connection ended before the scenario did
	RSSRiseMiB            float64 // the server's peak RSS in the scenario minus its RSS before
	usage                         // while the active peers send
}

func (r stalledResult) String() string {
	return kv("p50_ms", r.P50, "p99_ms", r.P99, "max_ms", r.Max, "sent", r.Sent, "lost", r.Lost, "send_lag_max_ms", r.SendLagMax,
		"stalled_dropped", r.StalledGone, "of", r.Stalled, "first_drop_s", orNone(r.FirstGone), "last_drop_s", orNone(r.LastGone),
		"active_dropped", r.ActiveDropped, "rss_rise_MiB", r.RSSRiseMiB) + " " + kv(r.usage.kv()...)
}

// stalledWait bounds how long the stalled room waits, after the last offer,
// for the offers still on their way.
const stalledWait = 5 * time.Second

// stalledRoom joins stalled peers to room /stalled of a Peero server that
// never read after their greeting (their sockets keep the system's buffer
// sizes), then active peers that read all they are sent. Each active peer
// broadcasts an offer of size bytes every every for length, open loop: the
// k-th at its own scheduled time, which its signal carries, however late
// the one before went out. It measures the offers' latency from that time
// to their arrival at each of the other active peers, and notes when the
// room is told ("remove") that a stalled peer left: those never read, so
// only the server can tell that it dropped them.
func stalledRoom(s *server, stalled, active, size int, every, length time.Duration) (stalledResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := stalledResult{Stalled: stalled, Active: active, FirstGone: -1, LastGone: -1}
	quiet, err := dialAll(ctx, s, stalled, 32, func(int) string { return "/stalled" })
	if err != nil {
		return r, err
	}
	defer closeAll(quiet)
	index := map[string]int{} // stalled peer id -> its index
	for i, c := range quiet {
		index[c.id] = i
	}
	actives, err := dialAll(ctx, s, active, 32, func(int) string { return "/stalled" })
	if err != nil {
		return r, err
	}
	defer closeAll(actives)
	var (
		over     atomic.Bool // the scenario ended: connections that end after were not dropped
		received atomic.Int64
		wg       sync.WaitGroup
	)
	gone := make([]atomic.Int64, stalled) // UnixNano when the room was first told stalled peer i left
	latencies := make([][]float64, active)
	activeDropped := make([]bool, active)
	removePrefix := []byte(`{"type":"remove","peerId":"`)
	for i, c := range actives {
		wg.Go(func() { // ends when its connection does: dropped, or closed at the end
			for {
				msg, err := c.read(ctx)
				if err != nil {
					activeDropped[i] = !over.Load()
					return
				}
				now := time.Now()
				if ts, ok := sentAt(msg); ok {
					latencies[i] = append(latencies[i], float64(now.UnixNano()-ts)/1e6)
					received.Add(1)
				} else if id, ok := bytes.CutPrefix(msg, removePrefix); ok {
					if j, ok := index[string(bytes.TrimSuffix(id, []byte(`"}`)))]; ok {
						gone[j].CompareAndSwap(0, now.UnixNano())
					}
				}
			}
		})
	}
	before := memKB(s.pid(), "VmRSS")
	if err := resetPeakRSS(s.pid()); err != nil {
		return r, err
	}
	var sent atomic.Int64
	lags := make([]time.Duration, active)
	stopUsage := startUsage(s.pid())
	start := time.Now().Add(10 * time.Millisecond) // the first offer's scheduled time
	end := start.Add(length)
	var senders sync.WaitGroup
	for i, c := range actives {
		senders.Go(func() { // ends after its last offer, or when its connection does
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k)*every + time.Duration(i)*every/time.Duration(active)) // spread over the period
				if !at.Before(end) {
					return
				}
				time.Sleep(time.Until(at))
				lags[i] = max(lags[i], time.Since(at))
				if c.write(ctx, broadcastOf(size, at)) != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	waitGroup(&senders, time.Until(end)+stalledWait) // a sender the server stopped reading may be stuck in a write
	r.usage = stopUsage()
	wait := time.Now()
	want := sent.Load() * int64(active-1)
	for received.Load() < want && time.Since(wait) < stalledWait {
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	over.Store(true)
	r.RSSRiseMiB = float64(memKB(s.pid(), "VmHWM")-before) / 1024
	cancel()
	closeAll(actives)
	wg.Wait()
	r.Sent, r.Received = int(sent.Load()), int(received.Load())
	r.Lost = max(0, int(want)-r.Received)
	r.SendLagMax = float64(slices.Max(lags).Microseconds()) / 1000
	for _, d := range activeDropped {
		if d {
			r.ActiveDropped++
		}
	}
	var goneAt []time.Time
	for i := range gone {
		if ns := gone[i].Load(); ns != 0 {
			goneAt = append(goneAt, time.Unix(0, ns))
		}
	}
	if g := seconds(goneAt, start); len(g) > 0 {
		r.StalledGone, r.FirstGone, r.LastGone = len(g), g[0], g[len(g)-1]
	}
	all := slices.Concat(latencies...)
	if len(all) == 0 {
		return r, fmt.Errorf("no offer arrived")
	}
	slices.Sort(all)
	r.P50, r.P99, r.Max = percentile(all, 0.5), percentile(all, 0.99), all[len(all)-1]
	return r, nil
}

// openLoopResult is one open-loop relay measurement.
type openLoopResult struct {
	Rate            float64 // offered, messages/s
	P50, P99, P999  float64 // ms, from each message's scheduled send time to its arrival
	Measured, Lost  int     // messages scheduled in the measuring period; those that never arrived
	CPUPerMsgMicros float64 // server CPU time over the messages that arrived in the measure period
	SendLagP99      float64 // ms: how late messages went out after their scheduled time
	usage                   // in the measure period
}

func (r openLoopResult) String() string {
	return kv(append([]any{"rate", r.Rate, "p50_ms", r.P50, "p99_ms", r.P99, "p99.9_ms", r.P999, "lost", r.Lost, "of", r.Measured,
		"us_per_msg", r.CPUPerMsgMicros, "send_lag_p99_ms", r.SendLagP99}, r.usage.kv()...)...)
}

// openLoopWait bounds how long openLoop waits, after the last message, for
// those still on their way.
const openLoopWait = 3 * time.Second

// openLoop runs the relay's pairs of clients (targeted offers of size
// bytes), but at a fixed offered rate, in messages/s over all pairs: every
// client sends to its partner on a schedule of its own, each message at its
// own time, which its signal carries, however late the one before went out.
// Against the echo server the first of each pair sends at twice the rate
// and the server sends back, so that the server relays as many messages.
// Latency is from the scheduled time to the arrival, so that a sender held
// up counts; only messages scheduled within the measure period count, and
// the run waits for them.
func openLoop(s *server, pairs, size int, rate float64, warmup, measure time.Duration) (openLoopResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := openLoopResult{Rate: rate}
	clients := make([]*client, 2*pairs)
	for i := range pairs {
		room := fmt.Sprintf("/openloop-%d", i)
		for j := range 2 {
			c, err := dial(ctx, s.kind, s.addr, room)
			if err != nil {
				closeAll(clients)
				return r, err
			}
			clients[2*i+j] = c
		}
	}
	defer closeAll(clients)
	senders := clients
	if s.kind == echo {
		senders = nil
		for i := 0; i < len(clients); i += 2 {
			senders = append(senders, clients[i])
		}
	}
	start := time.Now().Add(20 * time.Millisecond) // the first message's scheduled time
	// The measure period, in scheduled times: half a message's interval off
	// the schedule, as PeerJS carries a time through a JavaScript number,
	// exact to 2^53 only (to 256 ns now): no message can cross the bounds.
	from := start.Add(warmup).UnixNano() + int64(0.5/rate*1e9)
	to := from + measure.Nanoseconds()
	var (
		measuring          atomic.Bool  // arrivals now count for CPU per message
		arrived            atomic.Int64 // in the measuring period
		scheduled, counted atomic.Int64 // messages scheduled in the measure period: sent, and arrived
		readers, writers   sync.WaitGroup
	)
	latencies := make([][]float64, len(clients))
	lags := make([][]float64, len(clients))
	for i, c := range senders {
		readers.Go(func() { // ends when ctx ends or the connection breaks
			for {
				msg, err := c.read(ctx)
				if err != nil {
					return
				}
				ts, ok := sentAt(msg)
				if !ok {
					continue // an announce, a pong
				}
				now := time.Now().UnixNano()
				if measuring.Load() {
					arrived.Add(1)
				}
				if ts >= from && ts < to {
					latencies[i] = append(latencies[i], float64(now-ts)/1e6)
					counted.Add(1)
				}
			}
		})
		partner := "" // the echo server sends a message back to its sender
		if s.kind != echo {
			partner = clients[i^1].id
		}
		writers.Go(func() { // ends after the measure period, or when the connection breaks
			n := len(senders)
			for k := 0; ; k++ {
				at := start.Add(time.Duration((float64(k*n+i) / rate) * 1e9)) // all senders together: one message every 1/rate s
				if at.UnixNano() >= to {
					return
				}
				time.Sleep(time.Until(at))
				lag := time.Since(at)
				if c.write(ctx, c.offer(partner, size, at)) != nil {
					return
				}
				if at.UnixNano() >= from {
					scheduled.Add(1)
					lags[i] = append(lags[i], float64(lag.Nanoseconds())/1e6)
				}
			}
		})
	}
	time.Sleep(time.Until(time.Unix(0, from)))
	stopUsage := startUsage(s.pid())
	measuring.Store(true)
	time.Sleep(measure)
	measuring.Store(false)
	r.usage = stopUsage()
	waitGroup(&writers, openLoopWait) // a sender the server stopped reading may be stuck in a write
	for wait := time.Now(); counted.Load() < scheduled.Load() && time.Since(wait) < openLoopWait; {
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	cancel()
	closeAll(clients)
	readers.Wait()
	all := slices.Concat(latencies...)
	if len(all) == 0 {
		return r, fmt.Errorf("no message arrived")
	}
	slices.Sort(all)
	allLags := slices.Sorted(slices.Values(slices.Concat(lags...)))
	r.P50, r.P99, r.P999 = percentile(all, 0.50), percentile(all, 0.99), percentile(all, 0.999)
	r.Measured, r.Lost = int(scheduled.Load()), int(scheduled.Load()-counted.Load())
	r.CPUPerMsgMicros = r.ServerCPU * r.Seconds / float64(max(arrived.Load(), 1)) * 1e6
	r.SendLagP99 = percentile(allLags, 0.99)
	return r, nil
}
