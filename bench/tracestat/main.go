// Command tracestat summarizes a Go execution trace (runtime/trace, or a
// server's /debug/pprof/trace) in the figures that explain a latency tail:
// how often goroutines are woken, how long a runnable goroutine waits for the
// processor (scheduler latency), how long it keeps the processor once it has
// it (a turn: until it blocks or is preempted), how many are runnable at
// once, and what the garbage collector costs (stop-the-world pauses, mark
// assists). profile.sh runs it on each trace.
//
//	go run ./tracestat [-by FUNCPREFIX] TRACE
//
// Goroutines are grouped by the function they start with, or else by the
// innermost function with the prefix (default "main.") in the stacks where
// they block, so that a server's reader and writer goroutines get their own
// lines. It is its own module so that the
// benchmark does not depend on golang.org/x/exp.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// durations is a list of durations to summarize.
type durations []time.Duration

func (d durations) String() string {
	if len(d) == 0 {
		return "none"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("n=%d total=%v mean=%v p50=%v p90=%v p99=%v p99.9=%v max=%v",
		len(s), round(sum), round(sum/time.Duration(len(s))), round(q(0.5)), round(q(0.9)), round(q(0.99)), round(q(0.999)), round(s[len(s)-1]))
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}

// group is what is known of one kind of goroutine.
type group struct {
	goroutines map[trace.GoID]bool
	wakeups    int
	waits      durations // runnable to running
	runs       durations // turns: running until blocked, preempted or gone
}

func main() {
	by := flag.String("by", "main.", "group goroutines by the innermost function with this prefix in their start or blocking stacks")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: tracestat [-by FUNCPREFIX] TRACE")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	r, err := trace.NewReader(f)
	if err != nil {
		log.Fatal(err)
	}

	var (
		first, last  trace.Time
		kindOf       = map[trace.GoID]string{} // group name, once the goroutine has blocked with such a frame
		runnableAt   = map[trace.GoID]trace.Time{}
		runningAt    = map[trace.GoID]trace.Time{}
		pendingWait  = map[trace.GoID][]time.Duration{} // before the goroutine's group is known
		pendingRun   = map[trace.GoID][]time.Duration{}
		pendingWake  = map[trace.GoID]int{}
		groups       = map[string]*group{}
		runnable     int // goroutines runnable, not running
		runnableArea float64
		maxRunnable  int
		lastChange   trace.Time
		syscalls     int
		created      int // goroutines
		blockedAt    = map[trace.GoID]trace.Time{}
		blockReason  = map[trace.GoID]string{}
		blocked      = map[string]durations{} // by reason: waiting until runnable again
		wokenNoProc  int                      // wake-ups by a thread without a P: sysmon's network poll
		rangeStart   = map[string]trace.Time{}
		ranges       = map[string]durations{}
		gcs          int
	)
	groupOf := func(name string) *group {
		g := groups[name]
		if g == nil {
			g = &group{goroutines: map[trace.GoID]bool{}}
			groups[name] = g
		}
		return g
	}
	setRunnable := func(t trace.Time, delta int) {
		if lastChange != 0 {
			runnableArea += float64(runnable) * float64(t.Sub(lastChange))
		}
		lastChange = t
		runnable = max(0, runnable+delta)
		maxRunnable = max(maxRunnable, runnable)
	}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		t := ev.Time()
		if first == 0 {
			first = t
		}
		last = t
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if from == trace.GoRunning && to == trace.GoSyscall {
				syscalls++
			}
			// A turn ends when the goroutine blocks, is preempted or exits; a
			// system call it returns from without waiting is part of it.
			if (from == trace.GoRunning || from == trace.GoSyscall) && (to == trace.GoWaiting || to == trace.GoRunnable || to == trace.GoNotExist) {
				if at, ok := runningAt[id]; ok {
					d := t.Sub(at)
					if k, ok := kindOf[id]; ok {
						groupOf(k).runs = append(groupOf(k).runs, d)
					} else {
						pendingRun[id] = append(pendingRun[id], d)
					}
					delete(runningAt, id)
				}
				if to == trace.GoWaiting {
					blockedAt[id], blockReason[id] = t, st.Reason
					if _, ok := kindOf[id]; !ok {
						if k := classify(st.Stack, *by); k != "" {
							kindOf[id] = k
							g := groupOf(k)
							g.goroutines[id] = true
							g.waits = append(g.waits, pendingWait[id]...)
							g.runs = append(g.runs, pendingRun[id]...)
							g.wakeups += pendingWake[id]
							delete(pendingWait, id)
							delete(pendingRun, id)
							delete(pendingWake, id)
						}
					}
				}
			}
			if from == trace.GoNotExist && to == trace.GoRunnable {
				created++
				// A goroutine created here is named by the function it starts with.
				if _, ok := kindOf[id]; !ok {
					if k := classify(st.Stack, *by); k != "" {
						kindOf[id] = k
						groupOf(k).goroutines[id] = true
					}
				}
			}
			if to == trace.GoRunnable && from != trace.GoRunnable {
				runnableAt[id] = t
				setRunnable(t, +1)
				if from == trace.GoWaiting {
					if at, ok := blockedAt[id]; ok {
						blocked[blockReason[id]] = append(blocked[blockReason[id]], t.Sub(at))
						delete(blockedAt, id)
					}
					if ev.Proc() == trace.NoProc {
						wokenNoProc++
					}
					if k, ok := kindOf[id]; ok {
						groupOf(k).wakeups++
					} else {
						pendingWake[id]++
					}
				}
			}
			if from == trace.GoRunnable && to != trace.GoRunnable {
				setRunnable(t, -1)
				if at, ok := runnableAt[id]; ok && to == trace.GoRunning {
					d := t.Sub(at)
					if k, ok := kindOf[id]; ok {
						groupOf(k).waits = append(groupOf(k).waits, d)
					} else {
						pendingWait[id] = append(pendingWait[id], d)
					}
				}
				delete(runnableAt, id)
			}
			if to == trace.GoRunning && from != trace.GoSyscall {
				runningAt[id] = t
			}
		case trace.EventRangeBegin, trace.EventRangeActive:
			rg := ev.Range()
			rangeStart[rg.Name+"\x00"+rg.Scope.String()] = t
			if rg.Name == "GC concurrent mark phase" && ev.Kind() == trace.EventRangeBegin {
				gcs++
			}
		case trace.EventRangeEnd:
			rg := ev.Range()
			k := rg.Name + "\x00" + rg.Scope.String()
			if at, ok := rangeStart[k]; ok {
				ranges[rg.Name] = append(ranges[rg.Name], t.Sub(at))
				delete(rangeStart, k)
			}
		}
	}
	// Goroutines that never blocked in a frame with the prefix.
	other := groupOf("(other)")
	for id, w := range pendingWait {
		other.waits = append(other.waits, w...)
		other.goroutines[id] = true
	}
	for id, rs := range pendingRun {
		other.runs = append(other.runs, rs...)
		other.goroutines[id] = true
	}
	for _, n := range pendingWake {
		other.wakeups += n
	}
	span := last.Sub(first)
	fmt.Printf("trace: %v; %d GC cycles (%.1f/s); %d system calls (%.0f/s); %d goroutines created (%.0f/s); runnable goroutines waiting for the processor: mean %.1f, max %d\n",
		round(span), gcs, float64(gcs)/span.Seconds(), syscalls, float64(syscalls)/span.Seconds(), created, float64(created)/span.Seconds(), runnableArea/float64(span), maxRunnable)
	names := make([]string, 0, len(groups))
	var all group
	for name, g := range groups {
		names = append(names, name)
		all.wakeups += g.wakeups
		all.waits = append(all.waits, g.waits...)
		all.runs = append(all.runs, g.runs...)
	}
	sort.Slice(names, func(i, j int) bool { return len(groups[names[i]].waits) > len(groups[names[j]].waits) })
	fmt.Printf("all goroutines: %d wake-ups (%.0f/s)\n  scheduler latency (runnable to running): %v\n  turn (running until it blocks or is preempted, system calls included): %v\n",
		all.wakeups, float64(all.wakeups)/span.Seconds(), all.waits, all.runs)
	for _, name := range names {
		g := groups[name]
		if len(g.waits) == 0 && len(g.runs) == 0 {
			continue
		}
		fmt.Printf("%s (%d goroutines): %d wake-ups (%.0f/s)\n  scheduler latency: %v\n  turn: %v\n",
			name, len(g.goroutines), g.wakeups, float64(g.wakeups)/span.Seconds(), g.waits, g.runs)
	}
	fmt.Printf("wake-ups by a thread without a processor (sysmon's network poll): %d (%.0f/s)\n", wokenNoProc, float64(wokenNoProc)/span.Seconds())
	reasons := make([]string, 0, len(blocked))
	for reason := range blocked {
		reasons = append(reasons, reason)
	}
	sort.Slice(reasons, func(i, j int) bool { return len(blocked[reasons[i]]) > len(blocked[reasons[j]]) })
	for _, reason := range reasons {
		fmt.Printf("blocked for %q, until runnable: %v\n", reason, blocked[reason])
	}
	rnames := make([]string, 0, len(ranges))
	for name := range ranges {
		rnames = append(rnames, name)
	}
	sort.Strings(rnames)
	for _, name := range rnames {
		fmt.Printf("range %q: %v\n", name, ranges[name])
	}
}

// classify names a goroutine by the innermost frame of stk whose function
// starts with prefix.
func classify(stk trace.Stack, prefix string) string {
	for f := range stk.Frames() {
		if strings.HasPrefix(f.Func, prefix) {
			return f.Func
		}
	}
	return ""
}
