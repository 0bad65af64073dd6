package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results holds every round's values of every figure.
type results struct {
	values   map[string][]float64 // "scenario/kind/metric" -> one value a round
	churn    []churnResult
	capacity []capacityResult
}

func newResults() *results { return &results{values: map[string][]float64{}} }

func key(scenario string, k kind, metric string) string {
	return scenario + "/" + string(k) + "/" + metric
}

func (r *results) add(scenario string, k kind, metric string, v float64) {
	r.values[key(scenario, k, metric)] = append(r.values[key(scenario, k, metric)], v)
}

func (r *results) addRelay(k kind, window int, res relayResult) {
	s := fmt.Sprint("relay-", window)
	r.add(s, k, "msg/s", res.MsgsPerSec)
	r.add(s, k, "p50", res.P50)
	r.add(s, k, "p99", res.P99)
	r.add(s, k, "p99.9", res.P999)
	r.add(s, k, "cpu", 100*res.ServerCPU)
	r.add(s, k, "us/msg", res.CPUPerMsgMicros)
	r.add(s, k, "gen", 100*res.LoadgenCPU)
}

func (r *results) addOpenLoop(k kind, res openLoopResult) {
	r.add("openloop", k, "rate", res.Rate)
	r.add("openloop", k, "p50", res.P50)
	r.add("openloop", k, "p99", res.P99)
	r.add("openloop", k, "p99.9", res.P999)
	r.add("openloop", k, "us/msg", res.CPUPerMsgMicros)
	r.add("openloop", k, "lost", float64(res.Lost))
	r.add("openloop", k, "lag", res.SendLagP99)
	r.addUsage("openloop", k, res.usage)
}

func (r *results) addUsage(scenario string, k kind, u usage) {
	r.add(scenario, k, "cpu", 100*u.ServerCPU)
	r.add(scenario, k, "gen", 100*u.LoadgenCPU)
	r.add(scenario, k, "others", 100*u.ServerOthers)
	r.add(scenario, k, "gen others", 100*u.LoadgenOthers)
}

func (r *results) addFlood(res floodResult) {
	r.add("flood", peero, "GB", res.RelayedGB)
	r.add("flood", peero, "dropped", float64(res.ReadersDropped))
	if res.FirstDrop >= 0 {
		r.add("flood", peero, "first drop", res.FirstDrop)
	}
	r.add("flood", peero, "sent", float64(res.Sent))
	r.add("flood", peero, "flooder dropped", float64(b2i(res.FlooderDropped)))
	r.add("flood", peero, "rss", res.RSSRiseMiB)
	r.add("flood", peero, "p50", res.ProbeP50)
	r.add("flood", peero, "p99", res.ProbeP99)
	r.add("flood", peero, "max", res.ProbeMax)
	r.add("flood", peero, "pings", float64(res.Probes))
	r.addUsage("flood", peero, res.usage)
}

func (r *results) addStalled(res stalledResult) {
	r.add("stalled", peero, "p50", res.P50)
	r.add("stalled", peero, "p99", res.P99)
	r.add("stalled", peero, "max", res.Max)
	r.add("stalled", peero, "sent", float64(res.Sent))
	r.add("stalled", peero, "lost", float64(res.Lost))
	r.add("stalled", peero, "gone", float64(res.StalledGone))
	if res.FirstGone >= 0 {
		r.add("stalled", peero, "first gone", res.FirstGone)
		r.add("stalled", peero, "last gone", res.LastGone)
	}
	r.add("stalled", peero, "active dropped", float64(res.ActiveDropped))
	r.add("stalled", peero, "rss", res.RSSRiseMiB)
	r.add("stalled", peero, "lag", res.SendLagMax)
	r.addUsage("stalled", peero, res.usage)
}

// othersText says what the others figures are.
const othersText = "Others is the share of a core that other programs used meanwhile (the core's busy time in /proc/stat less the server's, or the load generator's, own): on a shared machine, high figures mean a disturbed run."

// usage formats a scenario's usage figures as a row of a two-column table.
func (r *results) usage(scenario string) string {
	return fmt.Sprintf("CPU, as a share of one core | server %s %%, others on its core %s %%; load generator %s %%, others on its core %s %%",
		r.cell(scenario, peero, "cpu", "%.0f"), r.cell(scenario, peero, "others", "%.0f"), r.cell(scenario, peero, "gen", "%.0f"), r.cell(scenario, peero, "gen others", "%.0f"))
}

// count says in how many rounds a 0-or-1 figure was 1.
func (r *results) count(scenario string, k kind, metric string) string {
	v := r.values[key(scenario, k, metric)]
	n := 0
	for _, x := range v {
		if x != 0 {
			n++
		}
	}
	return fmt.Sprintf("in %d of %d rounds", n, len(v))
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cell formats a figure as its median and, with more than one round, its range.
func (r *results) cell(scenario string, k kind, metric, format string) string {
	v := r.values[key(scenario, k, metric)]
	if len(v) == 0 {
		return "–"
	}
	m := fmt.Sprintf(format, median(v))
	if len(v) == 1 {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, fmt.Sprintf(format, slices.Min(v)), fmt.Sprintf(format, slices.Max(v)))
}

// ratio is the median of num's figure over den's, as in "PeerJS/Peero".
// Callers put Peero where above 1 means Peero is ahead: on top for
// throughput, below for costs.
func (r *results) ratio(scenario, metric string, num, den kind) string {
	a, b := r.values[key(scenario, num, metric)], r.values[key(scenario, den, metric)]
	if len(a) == 0 || len(b) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", median(a)/median(b))
}

func (r *results) write(c config, took time.Duration, loadBefore string) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Peero and PeerJS server, side by side")
	p("")
	p("Written by `bench/run.sh` on %s in %s. %d rounds; every figure is the median of the rounds, with their range in brackets. Servers are pinned to core %s and the load generator to the other core (`taskset`); each run starts a fresh server process, and the servers take turns (A B A B). Everything talks over loopback.",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), took.Round(time.Second), c.rounds, c.serverCPU)
	p("")
	if c.peeroVersion != "" {
		p("Peero: main.go at %s.", c.peeroVersion)
		p("")
	}
	p("Machine: %s. Versions: %s. Load average (1, 5, 15 minutes) at the start: %s; at the end: %s. The servers and the load generator each use one core; well above 2 means other programs competed for the two cores.", machine(), versions(), loadBefore, loadAverage())
	p("")
	p("**Ratios read one way: above 1 means Peero is ahead.** For messages/s a ratio is Peero's over the other server's (Peero/PeerJS); for latency, CPU and memory it is the other server's over Peero's (PeerJS/Peero, floor/Peero). Each heading names its division.")
	p("")
	if _, ok := r.values[key(fmt.Sprint("relay-", c.windows[0]), peero, "msg/s")]; ok {
		p("## Relay")
		p("")
		p("%d pairs of peers send each other targeted offers of %d bytes; every arrival is answered with a new offer, so each pair keeps a fixed number of messages in flight (1 is lockstep). Latency is one way, sender to receiver, through the server. Server CPU is the share of its core it used, and CPU µs/message its CPU time over the messages relayed. The x/net echo server is the ceiling: the same load, each message sent back to its sender by a bare golang.org/x/net/websocket server, Peero's WebSocket library doing nothing else.", c.pairs, c.size)
		p("")
		p("| in flight | server | messages/s | p50 ms | p99 ms | p99.9 ms | server CPU %% | CPU µs/message | load generator CPU %% |")
		p("|---|---|---|---|---|---|---|---|---|")
		for _, w := range c.windows {
			s := fmt.Sprint("relay-", w)
			for _, k := range []kind{peero, peerjs, echo} {
				p("| %d | %s | %s | %s | %s | %s | %s | %s | %s |", w, k, r.cell(s, k, "msg/s", "%.0f"), r.cell(s, k, "p50", "%.2f"),
					r.cell(s, k, "p99", "%.2f"), r.cell(s, k, "p99.9", "%.2f"), r.cell(s, k, "cpu", "%.0f"), r.cell(s, k, "us/msg", "%.1f"), r.cell(s, k, "gen", "%.0f"))
			}
		}
		p("")
		p("| in flight | messages/s, Peero/PeerJS | CPU µs/message, PeerJS/Peero | p50, PeerJS/Peero | p99, PeerJS/Peero | p99.9, PeerJS/Peero |")
		p("|---|---|---|---|---|---|")
		for _, w := range c.windows {
			s := fmt.Sprint("relay-", w)
			p("| %d | %s | %s | %s | %s | %s |", w, r.ratio(s, "msg/s", peero, peerjs), r.ratio(s, "us/msg", peerjs, peero),
				r.ratio(s, "p50", peerjs, peero), r.ratio(s, "p99", peerjs, peero), r.ratio(s, "p99.9", peerjs, peero))
		}
		p("")
		p("![relay latency against load](%s)", c.chart)
		p("")
		if err := os.WriteFile(c.chart, []byte(r.svg(c.windows)), 0o644); err != nil {
			return err
		}
	}
	if _, ok := r.values[key("openloop", peero, "p50")]; ok {
		p("## Open-loop relay")
		p("")
		p("The relay's %d pairs and %d-byte offers, at a fixed offered rate instead of a fixed number in flight: %.0f messages/s over all pairs, %s. Every client sends to its partner on a schedule of its own, the schedules interleaved so that one message is due every 1/%.0f s; each message carries its scheduled send time, and its latency runs from that time to its arrival, so that a sender held up counts against the server instead of sending less (no coordinated omission). Against the x/net echo server the first of each pair sends at twice the rate and the server sends each message back to it: the server relays as many messages. Only messages scheduled in the %s after a %s warm-up count; lost are those that had not arrived %s after the last was sent. Server CPU µs/message is its CPU time over the messages that arrived in the measuring period. Sender lag p99 is how late the load generator sent messages after their scheduled time: part of every latency, and the generator's own doing unless the server stopped reading. %s",
			c.pairs, c.size, c.openLoopRate, c.openLoopFrom, c.openLoopRate, c.measure, c.warmup, openLoopWait, othersText)
		p("")
		p("| server | p50 ms | p99 ms | p99.9 ms | server CPU %% | CPU µs/message | lost | sender lag p99 ms | load generator CPU %% | others on the cores %%: server's, load generator's |")
		p("|---|---|---|---|---|---|---|---|---|---|")
		for _, k := range []kind{peero, peerjs, echo} {
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s; %s |", k, r.cell("openloop", k, "p50", "%.2f"), r.cell("openloop", k, "p99", "%.2f"), r.cell("openloop", k, "p99.9", "%.2f"),
				r.cell("openloop", k, "cpu", "%.0f"), r.cell("openloop", k, "us/msg", "%.1f"), r.cell("openloop", k, "lost", "%.0f"), r.cell("openloop", k, "lag", "%.2f"), r.cell("openloop", k, "gen", "%.0f"),
				r.cell("openloop", k, "others", "%.0f"), r.cell("openloop", k, "gen others", "%.0f"))
		}
		p("")
		p("| ratio | p50 | p99 | p99.9 | CPU µs/message |")
		p("|---|---|---|---|---|")
		for _, k := range []kind{peerjs, echo} {
			p("| %s/Peero | %s | %s | %s | %s |", k, r.ratio("openloop", "p50", k, peero), r.ratio("openloop", "p99", k, peero),
				r.ratio("openloop", "p99.9", k, peero), r.ratio("openloop", "us/msg", k, peero))
		}
		p("")
	}
	if _, ok := r.values[key("idle", peero, fmt.Sprint(c.idlePeers[0]))]; ok {
		p("## Idle peers")
		p("")
		p("Server RSS per connected, idle peer: (RSS with the peers − RSS before) / peers, %s after the last connected, and again after a full garbage collection (Peero and the floor: `debug.FreeOSMemory`; PeerJS: `global.gc()` under `node --expose-gc`). Peero's peers are in rooms of two, and Peero runs with `-ping %s` so that the settling time holds at least one round of its pings: what a ping round leaves behind is part of an idle peer's cost. PeerJS's peers send a HEARTBEAT every 5 s, as its client does; the floor never pings. The x/net floor is the least a server on Peero's WebSocket library holds: `websocket.Server` with its defaults under net/http, a peers message sent on connect, then one goroutine per peer blocked in `websocket.Message.Receive` (`bench/floor`).", c.idleSettle, c.idlePing)
		p("")
		p("| peers | measured | Peero KiB/peer | x/net floor KiB/peer | PeerJS KiB/peer | floor/Peero | PeerJS/Peero |")
		p("|---|---|---|---|---|---|---|")
		for _, n := range c.idlePeers {
			m := fmt.Sprint(n)
			for _, sc := range []struct{ scenario, when string }{{"idle", fmt.Sprint(c.idleSettle, " after")}, {"idle-gc", "after a GC"}} {
				p("| %d | %s | %s | %s | %s | %s | %s |", n, sc.when, r.cell(sc.scenario, peero, m, "%.1f"), r.cell(sc.scenario, floor, m, "%.1f"), r.cell(sc.scenario, peerjs, m, "%.1f"),
					r.ratio(sc.scenario, m, floor, peero), r.ratio(sc.scenario, m, peerjs, peero))
			}
		}
		p("")
	}
	_, roomStorm := r.values[key("roomstorm", peero, "cpu s")]
	if _, ok := r.values[key("storm", peero, "seconds")]; ok || roomStorm || len(r.churn) > 0 || len(r.capacity) > 0 {
		p("## Peero alone")
		p("")
		p("PeerJS has no rooms, so these have no PeerJS column.")
		p("")
		p("| scenario | result |")
		p("|---|---|")
		if _, ok := r.values[key("storm", peero, "seconds")]; ok {
			p("| join storm: %d peers join one room, 32 dialing at a time, until each has been told of every later one (%d announces) | all announces in %s s; peak RSS %s MiB |", c.stormPeers,
				c.stormPeers*(c.stormPeers-1)/2, r.cell("storm", peero, "seconds", "%.2f"), r.cell("storm", peero, "peak MiB", "%.0f"))
		}
		if roomStorm {
			limit := "the server's default room limit"
			if len(c.roomStormArgs) > 0 {
				limit = strings.Join(c.roomStormArgs, " ")
			}
			p("| room storm: %d peers try to join one room, %d at a time (%s), while a probe in another room pings every 10 ms | %s let in, %s refused with \"room full\", %s failed otherwise; every announce in %s s, using %s s of server CPU; peak RSS %s MiB; probe round trip p50 %s ms, p99 %s ms, max %s ms (%s pings) |",
				c.roomStormPeers, c.roomStormBatch, limit, r.cell("roomstorm", peero, "accepted", "%.0f"), r.cell("roomstorm", peero, "room full", "%.0f"), r.cell("roomstorm", peero, "failed", "%.0f"),
				r.cell("roomstorm", peero, "seconds", "%.1f"), r.cell("roomstorm", peero, "cpu s", "%.1f"), r.cell("roomstorm", peero, "peak MiB", "%.0f"),
				r.cell("roomstorm", peero, "p50", "%.2f"), r.cell("roomstorm", peero, "p99", "%.1f"), r.cell("roomstorm", peero, "max", "%.1f"), r.cell("roomstorm", peero, "pings", "%.0f"))
		}
		if _, ok := r.values[key("fanout", peero, "ms")]; ok {
			p("| fan-out: one offer broadcast to a room of %d peers | reaches all in %s ms (median of %d broadcasts a round) |", c.fanoutPeers, r.cell("fanout", peero, "ms", "%.1f"), c.fanoutTimes)
		}
		for i, ch := range r.churn {
			p("| churn, round %d: %d join/leave cycles over %d rooms, 64 at a time | %.1f s, %d errors; goroutines %d before, %d after; RSS %d KiB before, %d peak, %d after 5 s idle, %d after a forced GC |",
				i+1, c.churnCycles, c.churnRooms, ch.Seconds, ch.Errors, ch.GoroutinesBefore, ch.After, ch.RSSBeforeKB, ch.PeakKB, ch.RSSAfterKB, ch.RSSAfterGCKB)
		}
		for i, cp := range r.capacity {
			p("| capacity, round %d: %d peers held at once, each pings | %d held, %d answered; RSS %d MiB (%.1f KiB a peer) |",
				i+1, c.capacityPeers, cp.Held, cp.Answered, cp.RSSKB/1024, float64(cp.RSSKB)/float64(max(cp.Held, 1)))
		}
		p("")
	}
	_, flood := r.values[key("flood", peero, "GB")]
	_, stalled := r.values[key("stalled", peero, "p50")]
	if flood || stalled {
		p("## Peero overloaded")
		p("")
		p("Rooms where some peers cannot keep up, against Peero alone (PeerJS has no rooms). Server RSS rise is the server's peak RSS during the scenario (its VmHWM, reset just before with `/proc/PID/clear_refs`) minus its RSS before. A peer counts as dropped when its connection ends before the scenario does: a close frame, EOF or a reset. %s", othersText)
		p("")
	}
	if flood {
		p("**Flood.** %d peers join one room and read all they are sent as fast as they can; one more peer broadcasts offers of %d bytes to the room (type offer, no peerId) for %s, each as soon as its write of the one before returns. Meanwhile a probe in another room pings the server (`{\"type\":\"ping\"}`, waiting for the pong, every 10 ms; a late pong delays the next ping, so a stall counts once). Relayed is the message bytes the readers received during the flood; the scenario ends %s after the flood, so that a reader the server dropped late in the flood still reads to its close frame. The first drop is when the first dropped reader saw its connection end, after the flood began. A flooding peer the server stops reading sends fewer offers instead of having readers dropped.",
			c.floodReaders, c.floodSize, c.floodFor, floodDrain)
		p("")
		p("| flood | Peero |")
		p("|---|---|")
		p("| relayed to the readers | %s GB |", r.cell("flood", peero, "GB", "%.2f"))
		p("| readers dropped | %s of %d; the first after %s s |", r.cell("flood", peero, "dropped", "%.0f"), c.floodReaders, r.cell("flood", peero, "first drop", "%.2f"))
		p("| the flooding peer | sent %s offers; dropped %s |", r.cell("flood", peero, "sent", "%.0f"), r.count("flood", peero, "flooder dropped"))
		p("| server RSS rise | %s MiB |", r.cell("flood", peero, "rss", "%.0f"))
		p("| probe round trip | p50 %s ms, p99 %s ms, max %s ms (%s pings) |", r.cell("flood", peero, "p50", "%.2f"), r.cell("flood", peero, "p99", "%.1f"), r.cell("flood", peero, "max", "%.1f"), r.cell("flood", peero, "pings", "%.0f"))
		p("| %s |", r.usage("flood"))
		p("")
	}
	if stalled {
		p("**Stalled room.** %d peers join one room and never read after their greeting (they keep the system's socket buffer sizes, like a client that stopped reading); %d more join it, read all they are sent, and each broadcasts an offer of %d bytes every %s for %s, open loop: each offer at its scheduled time, which it carries, however late the one before went out. Latency is from that scheduled time to the offer's arrival at each of the other active peers, over the whole run, the stalled peers' drops included; lost are arrivals missing %s after the last offer. A stalled peer never reads, so only the server can tell that it dropped one: it is counted as dropped when the active peers are told it left (remove), and the times are from the first offer to the first and the last of those. Sender lag max is the latest an active peer sent an offer after its scheduled time.",
			c.stalledPeers, c.stalledActive, c.stalledSize, c.stalledEvery, c.stalledFor, stalledWait)
		p("")
		p("| stalled room | Peero |")
		p("|---|---|")
		p("| active peers' offer latency | p50 %s ms, p99 %s ms, max %s ms |", r.cell("stalled", peero, "p50", "%.2f"), r.cell("stalled", peero, "p99", "%.1f"), r.cell("stalled", peero, "max", "%.0f"))
		p("| offers | %s sent; %s arrivals lost; sender lag max %s ms |", r.cell("stalled", peero, "sent", "%.0f"), r.cell("stalled", peero, "lost", "%.0f"), r.cell("stalled", peero, "lag", "%.1f"))
		p("| stalled peers dropped | %s of %d; the first after %s s, the last after %s s |", r.cell("stalled", peero, "gone", "%.0f"), c.stalledPeers,
			r.cell("stalled", peero, "first gone", "%.2f"), r.cell("stalled", peero, "last gone", "%.2f"))
		p("| active peers dropped | %s of %d |", r.cell("stalled", peero, "active dropped", "%.0f"), c.stalledActive)
		p("| server RSS rise | %s MiB |", r.cell("stalled", peero, "rss", "%.0f"))
		p("| %s |", r.usage("stalled"))
		p("")
	}
	return os.WriteFile(c.out, []byte(b.String()), 0o644)
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	cores, _ := exec.Command("nproc", "--all").Output() // runtime.NumCPU counts only the cores this process is pinned to
	return fmt.Sprintf("%s, %s cores, %s GiB, Linux %s", model, strings.TrimSpace(string(cores)), memGiB(), strings.TrimSpace(string(kernel)))
}

func versions() string {
	node, _ := exec.Command("node", "--version").Output()
	peer := "peer (not installed)"
	if b, err := os.ReadFile(peerjsDir + "/node_modules/peer/package.json"); err == nil {
		if i := strings.Index(string(b), `"version": "`); i >= 0 {
			peer = "peer " + strings.SplitN(string(b)[i+12:], `"`, 2)[0]
		}
	}
	return fmt.Sprintf("%s, %s on Node.js %s, golang.org/x/net v0.62.0", runtime.Version(), peer, strings.TrimSpace(string(node)))
}

// svg draws relay latency (p50 dashed, p99 solid) against throughput for each
// server, one point per number of messages in flight.
func (r *results) svg(windows []int) string {
	const w, h, left, bottom, top, right = 760.0, 420.0, 70.0, 50.0, 40.0, 150.0
	type pt struct{ x, p50, p99 float64 }
	series := map[kind][]pt{}
	maxX, minY, maxY := 1.0, math.Inf(1), 0.0
	for _, k := range []kind{peero, peerjs, echo} {
		for _, win := range windows {
			s := fmt.Sprint("relay-", win)
			x, p50, p99 := median(r.values[key(s, k, "msg/s")]), median(r.values[key(s, k, "p50")]), median(r.values[key(s, k, "p99")])
			if math.IsNaN(x) {
				continue
			}
			series[k] = append(series[k], pt{x, p50, p99})
			maxX, minY, maxY = max(maxX, x), min(minY, p50), max(maxY, p99)
		}
	}
	if math.IsInf(minY, 1) {
		minY, maxY = 0.01, 1
	}
	lo, hi := math.Floor(math.Log10(max(minY, 0.001))), math.Ceil(math.Log10(maxY))
	if hi <= lo {
		hi = lo + 1
	}
	maxX = niceCeil(maxX)
	px := func(x float64) float64 { return left + x/maxX*(w-left-right) }
	py := func(y float64) float64 { return h - bottom - (math.Log10(y)-lo)/(hi-lo)*(h-top-bottom) }
	var b strings.Builder
	f := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	f(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`, w, h)
	f(`<rect width="100%%" height="100%%" fill="white"/>`)
	f(`<text x="%.0f" y="22" font-size="15">Relay latency against load (%d pairs, 1 KB offers; points: 1, 4, 16, 64 in flight per pair)</text>`, left, 50)
	for e := lo; e <= hi; e++ {
		y := py(math.Pow(10, e))
		f(`<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%g ms</text>`, left, w-right, y, y, left-6, y+4, math.Pow(10, e))
	}
	for i := 0; i <= 5; i++ {
		x := maxX * float64(i) / 5
		f(`<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="#ddd"/><text x="%.1f" y="%.0f" text-anchor="middle">%.0fk</text>`, px(x), px(x), top, h-bottom, px(x), h-bottom+16, x/1000)
	}
	f(`<text x="%.0f" y="%.0f" text-anchor="middle">messages relayed per second</text>`, left+(w-left-right)/2, h-12)
	colors := map[kind]string{peero: "#0a7", peerjs: "#d50", echo: "#888"}
	for i, k := range []kind{peero, peerjs, echo} {
		pts := series[k]
		if len(pts) == 0 {
			continue
		}
		// In the order of the load offered, not of the throughput reached: past saturation that can fall.
		for _, dash := range []bool{false, true} {
			var d []string
			for _, q := range pts {
				y := q.p99
				if dash {
					y = q.p50
				}
				d = append(d, fmt.Sprintf("%.1f,%.1f", px(q.x), py(max(y, 0.001))))
				f(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, px(q.x), py(max(y, 0.001)), colors[k])
			}
			style := ""
			if dash {
				style = ` stroke-dasharray="5,4"`
			}
			f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`, strings.Join(d, " "), colors[k], style)
		}
		y := top + 20 + float64(i)*20
		f(`<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="%s" stroke-width="2"/><text x="%.0f" y="%.0f">%s</text>`, w-right+10, w-right+30, y, y, colors[k], w-right+36, y+4, k)
	}
	y := top + 90
	f(`<text x="%.0f" y="%.0f">solid: p99</text><text x="%.0f" y="%.0f">dashed: p50</text>`, w-right+10, y, w-right+10, y+16)
	f(`</svg>`)
	return b.String()
}

func niceCeil(x float64) float64 {
	step := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*step >= x {
			return m * step
		}
	}
	return 10 * step
}

// loadAverage returns the machine's load averages over 1, 5 and 15 minutes.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

func memGiB() string {
	b, _ := os.ReadFile("/proc/meminfo")
	var kb int
	fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
	return fmt.Sprintf("%.0f", float64(kb)/(1<<20))
}
