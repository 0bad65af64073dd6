// Command bench measures Peero side by side with PeerJS server (npm package
// "peer"), with a bare golang.org/x/net/websocket echo server, the ceiling
// of the WebSocket library Peero uses for relaying, and with a minimal x/net
// server that only holds connections, the floor for idle memory. Run it
// through run.sh, which installs PeerJS, builds the servers and pins this
// load generator to one core; each server runs pinned to the other. Every scenario runs against every server
// it applies to in the same run, interleaved (A B A B), for -rounds rounds,
// each on a fresh server process. It writes RESULTS.md and a chart.
package main

import (
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"runtime/trace"
	"slices"
	"strings"
	"time"
)

// config is what a run measures; -smoke shrinks it to seconds.
type config struct {
	rounds           int
	pairs, size      int
	windows          []int // messages in flight per pair: the offered load
	warmup, measure  time.Duration
	idlePeers        []int
	idleSettle       time.Duration
	idlePing         time.Duration // Peero's ping interval in the idle scenario: shorter than idleSettle
	stormPeers       int
	roomStormPeers   int // try to join one room
	roomStormBatch   int // dial at once
	roomStormArgs    []string
	fanoutPeers      int
	fanoutTimes      int
	churnCycles      int
	churnRooms       int
	capacityPeers    int
	floodReaders     int // read a flood of broadcasts
	floodSize        int // bytes of a flood offer
	floodFor         time.Duration
	stalledPeers     int // never read
	stalledActive    int // broadcast to the stalled room and read
	stalledSize      int // bytes of an active peer's offer
	stalledEvery     time.Duration
	stalledFor       time.Duration
	openLoopRate     float64 // messages/s offered; 0: openLoopShare of PeerJS's lockstep rate in this run
	openLoopFrom     string  // where openLoopRate came from, for the report
	serverCPU        string
	out, chart, only string
	peeroVersion     string // of ../main.go, for the report
}

func main() {
	c := config{pairs: 50, size: 1024, windows: []int{1, 4, 16, 64}, warmup: time.Second, measure: 4 * time.Second,
		idlePeers: []int{1000, 5000, 10000}, idleSettle: 5 * time.Second, idlePing: 3 * time.Second, stormPeers: 1000, roomStormPeers: 4000, roomStormBatch: 200, fanoutPeers: 1000, fanoutTimes: 10,
		churnCycles: 50000, churnRooms: 500, capacityPeers: 19000,
		floodSize: 64 << 10, stalledSize: 4096}
	smoke := flag.Bool("smoke", false, "tiny counts, one round: checks that every scenario still runs")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds of every scenario")
	flag.StringVar(&c.serverCPU, "server-cpu", "0", "the core servers are pinned to (run.sh pins this program to another)")
	flag.StringVar(&c.out, "out", "RESULTS.md", "where to write the results")
	flag.StringVar(&c.chart, "chart", "relay-latency.svg", "where to write the latency chart")
	flag.StringVar(&c.only, "only", "relay,openloop,idle,storm,roomstorm,fanout,churn,capacity,flood,stalled", "scenarios to run")
	flag.IntVar(&c.floodReaders, "flood-readers", 300, "peers that read the flood")
	flag.DurationVar(&c.floodFor, "flood-for", 10*time.Second, "how long the flood lasts")
	flag.IntVar(&c.stalledPeers, "stalled-peers", 290, "peers of the stalled room that never read")
	flag.IntVar(&c.stalledActive, "stalled-active", 10, "peers of the stalled room that broadcast offers and read")
	flag.DurationVar(&c.stalledEvery, "stalled-every", 10*time.Millisecond, "how often each active peer of the stalled room broadcasts")
	flag.DurationVar(&c.stalledFor, "stalled-for", 10*time.Second, "how long the active peers of the stalled room broadcast")
	flag.Float64Var(&c.openLoopRate, "openloop-rate", 0, "messages/s offered in the open-loop relay (default: 40% of PeerJS's lockstep rate, measured in the run)")
	attach := flag.String("attach", "", "with -attach-pid: run only the relay load, -rounds times, against the Peero server at this address (for profiling)")
	attachPID := flag.Int("attach-pid", 0, "the pid of the server of -attach")
	attachWindow := flag.Int("attach-window", 1, "messages in flight per pair, with -attach")
	attachIdle := flag.Int("attach-idle", 0, "with -attach: instead of the relay load, hold this many idle peers (rooms of two) for -attach-hold")
	attachTrace := flag.String("attach-trace", "", "with -attach: write a 2 s execution trace of this load generator to this file")
	attachTraceAt := flag.Duration("attach-trace-at", 3*time.Second, "when -attach-trace starts, after the start")
	attachScenario := flag.String("attach-scenario", "", "with -attach: instead of the relay load, run flood, stalled, or openloop (needs -openloop-rate), -rounds times")
	attachRoomStorm := flag.Int("attach-room-storm", 0, "with -attach: instead of the relay load, run the room storm with this many peers, 200 at a time, -rounds times")
	attachHold := flag.Duration("attach-hold", 30*time.Second, "how long -attach-idle holds its peers")
	flag.StringVar(&c.peeroVersion, "peero-version", "", "the commit of the Peero build, for the report (run.sh passes it)")
	flag.StringVar(&peeroBin, "peero", peeroBin, "the Peero build to run (run.sh builds ../main.go there)")
	probeAddr := flag.String("probe", "", "run as the room storm's probe against the Peero server at this address (the room storm starts it)")
	flag.Parse()
	if *probeAddr != "" {
		if err := runProbe(*probeAddr); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *attach != "" && *attachScenario != "" {
		s := &server{kind: peero, addr: *attach, proc: *attachPID}
		if *attachScenario == "openloop" && c.openLoopRate <= 0 {
			log.Fatal("-attach-scenario openloop needs -openloop-rate")
		}
		for range c.rounds {
			var res fmt.Stringer
			var err error
			switch *attachScenario {
			case "flood":
				res, err = flood(s, c.floodReaders, c.floodSize, c.floodFor)
			case "stalled":
				res, err = stalledRoom(s, c.stalledPeers, c.stalledActive, c.stalledSize, c.stalledEvery, c.stalledFor)
			case "openloop":
				res, err = openLoop(s, c.pairs, c.size, c.openLoopRate, c.warmup, c.measure)
			default:
				log.Fatalf("-attach-scenario %q: want flood, stalled or openloop", *attachScenario)
			}
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("%s: %v", *attachScenario, res) // bench/ab.sh reads this line
		}
		return
	}
	if *attach != "" && *attachRoomStorm > 0 {
		s := &server{kind: peero, addr: *attach, proc: *attachPID}
		for range c.rounds {
			res, err := roomStorm(s, *attachRoomStorm, 200)
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("room storm %d peers: %d let in, %d room full, %d failed; %.1f s of server CPU in %.1f s; probe p50 %.2f  p99 %.2f  max %.2f ms (%d pings)",
				*attachRoomStorm, res.Accepted, res.RoomFull, res.Failed, res.CPUSeconds, res.Seconds, res.ProbeP50, res.ProbeP99, res.ProbeMax, res.Probes)
		}
		return
	}
	if *attach != "" && *attachIdle > 0 {
		s := &server{kind: peero, addr: *attach, proc: *attachPID}
		res, err := idleMemory(s, *attachIdle, *attachHold)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("idle %d peers: %.1f KiB per peer (RSS %d KiB)", *attachIdle, res.PerPeer, res.RSSKB)
		return
	}
	if *attach != "" {
		s := &server{kind: peero, addr: *attach, proc: *attachPID}
		if *attachTrace != "" {
			go traceSelf(*attachTrace, *attachTraceAt, 2*time.Second)
		}
		for range c.rounds {
			res, err := relay(s, c.pairs, *attachWindow, c.size, c.warmup, c.measure)
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("relay window %d: %.0f msg/s  p50 %.2f  p99 %.2f ms  server CPU %.0f%%  %.1f µs/msg  load generator CPU %.0f%%",
				*attachWindow, res.MsgsPerSec, res.P50, res.P99, 100*res.ServerCPU, res.CPUPerMsgMicros, 100*res.LoadgenCPU)
		}
		return
	}
	if *smoke {
		c = config{rounds: 1, pairs: 2, size: 1024, windows: []int{1, 16}, warmup: 200 * time.Millisecond, measure: 500 * time.Millisecond,
			idlePeers: []int{50}, idleSettle: 200 * time.Millisecond, idlePing: time.Second, stormPeers: 20, roomStormPeers: 40, roomStormBatch: 10, fanoutPeers: 20, fanoutTimes: 2,
			churnCycles: 200, churnRooms: 10, capacityPeers: 100,
			floodReaders: 10, floodSize: 64 << 10, floodFor: time.Second,
			stalledPeers: 20, stalledActive: 3, stalledSize: 4096, stalledEvery: 10 * time.Millisecond, stalledFor: time.Second, openLoopRate: c.openLoopRate,
			serverCPU: c.serverCPU, out: c.out, chart: c.chart, only: c.only, peeroVersion: c.peeroVersion}
		if peeroHasFlag("max-room-peers") { // a room limit below the storm, so that refusals run too
			c.roomStormArgs = []string{"-max-room-peers", "25"}
		}
	}
	if c.openLoopRate > 0 {
		c.openLoopFrom = "set with -openloop-rate"
	}
	r := newResults()
	started, loadBefore := time.Now(), loadAverage()
	for round := 1; round <= c.rounds; round++ {
		log.Printf("round %d of %d", round, c.rounds)
		if c.runs("relay") {
			for _, w := range c.windows {
				for _, k := range []kind{peero, peerjs, echo} {
					withServer(k, c, func(s *server) error {
						res, err := relay(s, c.pairs, w, c.size, c.warmup, c.measure)
						if err == nil {
							r.addRelay(k, w, res)
							log.Printf("relay %-10s window %2d: %7.0f msg/s  p50 %.2f  p99 %.2f ms  server CPU %.0f%%  load generator CPU %.0f%%",
								k, w, res.MsgsPerSec, res.P50, res.P99, 100*res.ServerCPU, 100*res.LoadgenCPU)
						}
						return err
					})
				}
			}
		}
		if c.runs("openloop") {
			if c.openLoopRate <= 0 {
				if err := c.pickOpenLoopRate(r); err != nil {
					log.Fatal(err)
				}
				log.Printf("open-loop relay: %.0f msg/s offered, %s", c.openLoopRate, c.openLoopFrom)
			}
			for _, k := range []kind{peero, peerjs, echo} {
				withServer(k, c, func(s *server) error {
					res, err := openLoop(s, c.pairs, c.size, c.openLoopRate, c.warmup, c.measure)
					if err == nil {
						r.addOpenLoop(k, res)
						log.Printf("openloop %-10s %v", k, res)
					}
					return err
				})
			}
		}
		if c.runs("idle") {
			for _, n := range c.idlePeers {
				for _, k := range []kind{peero, peerjs, floor} {
					withServer(k, c, func(s *server) error {
						res, err := idleMemory(s, n, c.idleSettle)
						if err == nil {
							r.add("idle", k, fmt.Sprint(n), res.PerPeer)
							r.add("idle-gc", k, fmt.Sprint(n), res.PerPeerAfterGC)
							log.Printf("idle %-11s %5d peers: %.1f KiB per peer, %.1f after a GC (RSS %d KiB)", k, n, res.PerPeer, res.PerPeerAfterGC, res.RSSKB)
						}
						return err
					}, "-ping", c.idlePing.String()) // Peero only: a ping round within the settling time
				}
			}
		}
		if c.runs("storm") {
			withServer(peero, c, func(s *server) error {
				res, err := joinStorm(s, c.stormPeers)
				if err == nil {
					r.add("storm", peero, "seconds", res.Seconds)
					r.add("storm", peero, "peak MiB", float64(res.PeakKB)/1024)
					log.Printf("join storm %d peers: %.2f s, peak RSS %d KiB", c.stormPeers, res.Seconds, res.PeakKB)
				}
				return err
			})
		}
		if c.runs("roomstorm") {
			withServer(peero, c, func(s *server) error {
				res, err := roomStorm(s, c.roomStormPeers, c.roomStormBatch)
				if res.Failed > 0 {
					log.Printf("room storm: %d joins failed, the first: %v", res.Failed, res.FirstFailure)
				}
				if err == nil {
					r.add("roomstorm", peero, "accepted", float64(res.Accepted))
					r.add("roomstorm", peero, "room full", float64(res.RoomFull))
					r.add("roomstorm", peero, "failed", float64(res.Failed))
					r.add("roomstorm", peero, "cpu s", res.CPUSeconds)
					r.add("roomstorm", peero, "seconds", res.Seconds)
					r.add("roomstorm", peero, "p50", res.ProbeP50)
					r.add("roomstorm", peero, "p99", res.ProbeP99)
					r.add("roomstorm", peero, "max", res.ProbeMax)
					r.add("roomstorm", peero, "pings", float64(res.Probes))
					r.add("roomstorm", peero, "peak MiB", float64(res.PeakKB)/1024)
					log.Printf("room storm %d peers: %d let in, %d room full, %d failed; %.1f s of server CPU in %.1f s; probe p50 %.2f  p99 %.2f  max %.2f ms (%d pings)",
						c.roomStormPeers, res.Accepted, res.RoomFull, res.Failed, res.CPUSeconds, res.Seconds, res.ProbeP50, res.ProbeP99, res.ProbeMax, res.Probes)
				}
				return err
			}, c.roomStormArgs...)
		}
		if c.runs("fanout") {
			withServer(peero, c, func(s *server) error {
				took, err := fanout(s, c.fanoutPeers, c.fanoutTimes)
				if err == nil {
					slices.Sort(took)
					r.add("fanout", peero, "ms", 1000*median(took))
					log.Printf("fan-out to %d peers: median %.1f ms over %d broadcasts", c.fanoutPeers-1, 1000*median(took), len(took))
				}
				return err
			})
		}
		if c.runs("churn") {
			withServer(peero, c, func(s *server) error {
				res := churn(s, c.churnCycles, c.churnRooms, 64)
				r.churn = append(r.churn, res)
				log.Printf("churn %d cycles: %.1f s, %d errors, goroutines %d -> %d, RSS %d -> peak %d -> %d (%d after GC) KiB",
					c.churnCycles, res.Seconds, res.Errors, res.GoroutinesBefore, res.After, res.RSSBeforeKB, res.PeakKB, res.RSSAfterKB, res.RSSAfterGCKB)
				return nil
			})
		}
		if c.runs("capacity") {
			withServer(peero, c, func(s *server) error {
				res, err := capacity(s, c.capacityPeers)
				if err == nil {
					r.capacity = append(r.capacity, res)
					log.Printf("capacity: %d peers held, %d answered, RSS %d KiB", res.Held, res.Answered, res.RSSKB)
				}
				return err
			}, "-max-peers", fmt.Sprint(c.capacityPeers+100))
		}
		if c.runs("flood") {
			withServer(peero, c, func(s *server) error {
				res, err := flood(s, c.floodReaders, c.floodSize, c.floodFor)
				if err == nil {
					r.addFlood(res)
					log.Printf("flood: %v", res)
				}
				return err
			})
		}
		if c.runs("stalled") {
			withServer(peero, c, func(s *server) error {
				res, err := stalledRoom(s, c.stalledPeers, c.stalledActive, c.stalledSize, c.stalledEvery, c.stalledFor)
				if err == nil {
					r.addStalled(res)
					log.Printf("stalled: %v", res)
				}
				return err
			})
		}
	}
	if err := r.write(c, time.Since(started), loadBefore); err != nil {
		log.Fatal(err)
	}
	if len(failures) > 0 {
		log.Fatalf("%d runs failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
}

// openLoopShare is the open-loop relay's offered rate as a share of
// PeerJS's lockstep rate (the relay with one message in flight a pair).
const openLoopShare = 0.4

// pickOpenLoopRate sets the open-loop relay's rate: openLoopShare of PeerJS's
// lockstep messages/s in this run's relay, measured now if the relay did not run.
func (c *config) pickOpenLoopRate(r *results) error {
	lockstep := median(r.values[key("relay-1", peerjs, "msg/s")])
	from := "this run's relay"
	if math.IsNaN(lockstep) {
		from = "a lockstep relay run for it"
		withServer(peerjs, *c, func(s *server) error {
			res, err := relay(s, c.pairs, 1, c.size, c.warmup, c.measure)
			lockstep = res.MsgsPerSec
			return err
		})
	}
	if !(lockstep > 0) {
		return fmt.Errorf("open-loop relay: no lockstep rate of PeerJS to start from; set -openloop-rate")
	}
	c.openLoopRate = openLoopShare * lockstep
	c.openLoopFrom = fmt.Sprintf("%.0f%% of PeerJS's lockstep rate (%.0f msg/s in %s)", 100*openLoopShare, lockstep, from)
	return nil
}

func (c config) runs(scenario string) bool {
	return slices.Contains(strings.Split(c.only, ","), scenario)
}

// withServer runs f against a fresh server of kind k and stops it after.
// A failure is recorded and reported at the end; the run goes on.
var failures []string

func withServer(k kind, c config, f func(*server) error, args ...string) {
	s, err := start(k, c.serverCPU, args...)
	if err != nil {
		failures = append(failures, fmt.Sprintf("%s: %v", k, err))
		log.Printf("%s: %v", k, err)
		return
	}
	defer s.stop()
	if err := f(s); err != nil {
		failures = append(failures, fmt.Sprintf("%s: %v", k, err))
		log.Printf("%s: %v", k, err)
	}
}

// traceSelf writes an execution trace of this program to file, for length
// from after on: the load generator's own scheduling is part of the latency
// it measures.
func traceSelf(file string, after, length time.Duration) {
	time.Sleep(after)
	f, err := os.Create(file)
	if err != nil {
		log.Print(err)
		return
	}
	defer f.Close()
	if err := trace.Start(f); err != nil {
		log.Print(err)
		return
	}
	time.Sleep(length)
	trace.Stop()
}

func init() {
	log.SetFlags(log.Ltime)
	log.SetOutput(os.Stderr)
}
