package e2e

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
)

// TestServerRestart: the server crashes (SIGKILL) under two connected tabs.
// Their channel keeps working while it is away. When it is back on the same
// port (without $PEERO_SECRET, so with a new secret: their resume tokens do
// not work), both tabs rejoin by themselves with new ids, connect to each
// other again, close their old connection, and talk.
func TestServerRestart(t *testing.T) {
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	b := newBrowser(t, ctx, pages)
	a, aID := b.clientTab("a", pages, server.url, "/restart")
	c, cID := b.clientTab("c", pages, server.url, "/restart")
	a.waitOpen(cID)
	c.waitOpen(aID)
	a.send(cID, "before")
	c.waitMessage(aID, "before")

	server.kill()
	for _, tb := range []*tab{a, c} {
		tb.waitFor("a reconnecting event", `events.some((e) => e.type === "reconnecting")`)
	}
	a.send(cID, "while the server is away")
	c.waitMessage(aID, "while the server is away")

	server.restart()
	aNew, cNew := a.waitRejoin(aID), c.waitRejoin(cID)
	a.waitOpen(cNew)
	c.waitOpen(aNew)
	c.send(aNew, "after")
	a.waitMessage(cNew, "after")
	a.send(cNew, "after, back")
	c.waitMessage(aNew, "after, back")

	// One connection per peer: the old one is closed now that the new one is
	// up, and its leave says who the peer is now.
	for _, x := range []struct {
		tb           *tab
		oldID, newID string
	}{{a, cID, cNew}, {c, aID, aNew}} {
		x.tb.waitFor("the old connection's leave", fmt.Sprintf(
			`events.some((e) => e.type === "leave" && e.id === %q && e.rejoinedAs === %q)`, x.oldID, x.newID))
		if peers := eval[[]string](x.tb, `room.peers`); !slices.Equal(peers, []string{x.newID}) {
			t.Errorf("tab %s: peers = %v; want [%s]", x.tb.name, peers, x.newID)
		}
		if n := eval[int](x.tb, `events.filter((e) => e.type === "ready").length`); n != 2 {
			t.Errorf("tab %s: %d ready events; want 2", x.tb.name, n)
		}
	}
}

// reconnecting is a reconnecting event as the test page records it.
type reconnecting struct {
	Delay   float64 `json:"delay"`
	Attempt int     `json:"attempt"`
	Reason  string  `json:"reason"`
	T       float64 `json:"t"` // ms since the page loaded
}

// TestReconnectBackoff: while the server stays down, the client tries again
// and again; the delays double from the first one, each a random time between
// half and all of its ceiling, and never exceed the cap. Tries are as far
// apart as the delays say. After a rejoin the delays start over.
func TestReconnectBackoff(t *testing.T) {
	const first, max, tries = 100, 800, 7
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	b := newBrowser(t, ctx, pages)
	tb, id := b.clientTabWith("tab", pages, server.url, "/backoff",
		fmt.Sprintf(`{"reconnect":{"first":%d,"max":%d}}`, first, max))

	server.kill()
	tb.waitFor(fmt.Sprint(tries, " tries"), fmt.Sprintf(
		`events.filter((e) => e.type === "reconnecting").length >= %d`, tries))
	server.restart()
	newID := tb.waitRejoin(id)

	got := eval[[]reconnecting](tb, `events.filter((e) => e.type === "reconnecting")`)
	ready := eval[float64](tb, `events.findLast((e) => e.type === "ready").t`)
	delays := make([]float64, len(got))
	for i, r := range got {
		delays[i] = r.Delay
	}
	t.Logf("delays (ms): %v", delays)
	for i, r := range got {
		ceiling := float64(min(first<<i, max))
		if r.Attempt != i+1 {
			t.Errorf("try %d: attempt = %d; want %d", i+1, r.Attempt, i+1)
		}
		if r.Delay < ceiling/2 || r.Delay > ceiling {
			t.Errorf("try %d: delay = %v ms; want between %v and %v", i+1, r.Delay, ceiling/2, ceiling)
		}
		next := ready // the try after the last delay succeeded
		if i+1 < len(got) {
			next = got[i+1].T
		}
		// Timers never fire early; 2 ms allows for rounding the delay.
		if gap := next - r.T; gap < r.Delay-2 {
			t.Errorf("try %d came %.0f ms after the previous one failed; want at least its delay, %v ms", i+1, gap, r.Delay)
		}
	}
	if got[0].Reason != "the connection to the server closed" {
		t.Errorf("reason = %q; want %q", got[0].Reason, "the connection to the server closed")
	}

	server.kill()
	tb.waitFor("a try after the second loss", fmt.Sprintf(
		`events.filter((e) => e.type === "reconnecting").length > %d`, len(got)))
	again := eval[reconnecting](tb, `events.findLast((e) => e.type === "reconnecting")`)
	if again.Attempt != 1 || again.Delay > first {
		t.Errorf("after rejoining as %s and losing the server again: attempt %d, delay %v ms; want attempt 1, at most %d ms",
			newID, again.Attempt, again.Delay, first)
	}
}

// TestServerFrozen: a server that stops answering (SIGSTOP) but keeps its
// connections open is noticed by an unanswered ping; tries to reach it give
// up when it does not let the client join in time; when it runs again the
// client rejoins, with its resume token: as itself.
func TestServerFrozen(t *testing.T) {
	ctx := setup(t)
	server, pages := runServer(t, nil), servePages(t)
	b := newBrowser(t, ctx, pages)
	tb, id := b.clientTabWith("tab", pages, server.url, "/frozen",
		`{"pingInterval":300,"reconnect":{"first":100,"max":200}}`)

	server.signal(syscall.SIGSTOP)
	tb.waitFor("the unanswered ping", `events.some((e) => e.type === "reconnecting" && e.reason === "the server did not answer a ping")`)
	tb.waitFor("a try that timed out", `events.some((e) => e.type === "reconnecting" && e.reason === "the server did not let us join in time")`)
	server.signal(syscall.SIGCONT)
	tb.waitResumed(2, id)
	// A try of its own that the server took late may have replaced the tab's
	// connection (and the tab reconnected): that error is expected.
	tb.forgetReplaced()
}
