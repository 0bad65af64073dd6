package deploy

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// cluster starts n Peero instances with args and nginx in front of them.
func cluster(t *testing.T, n int, timeouts proxyTimeouts, args ...string) (string, []*instance) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	var instances []*instance
	var upstreams []string
	for range n {
		in := startInstance(t, args...)
		instances = append(instances, in)
		upstreams = append(upstreams, in.addr)
	}
	return startNginx(t, upstreams, timeouts), instances
}

var shortTimeouts = proxyTimeouts{connect: time.Second, read: 3 * time.Second}

// TestRoomMeetsOnOneInstance: the peers of one room meet on one instance,
// whatever query strings they use, and every message works through nginx.
// Twenty peers come with twenty query strings: were nginx to hash the query
// string with the path ($request_uri), all twenty would land on one of the
// three instances about once in 3^19 runs, where three would once in nine.
func TestRoomMeetsOnOneInstance(t *testing.T) {
	proxy, instances := cluster(t, 3, shortTimeouts)
	a := mustDial(t, proxy, "/meet?user=a")
	b := mustDial(t, proxy, "/meet?user=b&x=1")
	c := mustDial(t, proxy, "/meet")
	if !slices.Equal(b.peers, []string{a.id}) || len(c.peers) != 2 {
		t.Fatalf("peers lists %v and %v; want b to find a, and c both", b.peers, c.peers)
	}
	a.expect("announce", b.id)
	a.expect("announce", c.id)
	b.expect("announce", c.id)

	sdp := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)
	b.send(msg{Type: "offer", PeerID: a.id, Signal: sdp})
	if m := a.expect("offer", b.id); string(m.Signal) != string(sdp) {
		t.Errorf("offer signal %s; want %s", m.Signal, sdp)
	}
	a.send(msg{Type: "answer", PeerID: b.id, Signal: json.RawMessage(`{"type":"answer","sdp":"v=0\r\n"}`)})
	b.expect("answer", a.id)
	a.send(msg{Type: "candidate", PeerID: b.id, Signal: json.RawMessage(`{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}`)})
	b.expect("candidate", a.id)
	c.send(msg{Type: "offer", Signal: sdp}) // to the whole room
	a.expect("offer", c.id)
	b.expect("offer", c.id)

	c.conn.Close()
	a.expect("remove", c.id)
	b.expect("remove", c.id)
	a.quiet()
	b.quiet()

	const more = 17 // with a, b and c, twenty query strings
	in := []string{a.id, b.id}
	for i := range more {
		d := mustDial(t, proxy, fmt.Sprintf("/meet?n=%d", i))
		if !sameSet(d.peers, in) {
			t.Fatalf("peer %d with its own query string joined with peers %v; want %v, the peers in the room", i, d.peers, in)
		}
		a.expect("announce", d.id)
		in = append(in, d.id)
	}
	a.quiet()
	waitLogged(t, instances, 3+more)

	var on []string
	for _, in := range instances {
		if in.rooms()["/meet"] > 0 {
			on = append(on, in.addr)
		}
	}
	if len(on) != 1 {
		t.Errorf("room /meet joined on instances %v; want exactly one", on)
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// TestRoomsSpread: 60 rooms spread over every instance.
func TestRoomsSpread(t *testing.T) {
	proxy, instances := cluster(t, 3, shortTimeouts)
	const rooms = 60
	for i := range rooms {
		mustDial(t, proxy, roomName(i)+"?n="+fmt.Sprint(i))
	}
	waitLogged(t, instances, rooms)
	for _, in := range instances {
		n := len(in.rooms())
		t.Logf("instance %s serves %d of %d rooms", in.addr, n, rooms)
		if n == 0 {
			t.Errorf("instance %s serves no room; want every instance to serve some", in.addr)
		}
	}
}

// TestInstanceKilled: when an instance dies, its peers' connections end
// without a close frame; reconnecting through nginx with backoff, they land on
// a surviving instance and find their room-mates again. Rooms on the other
// instances are undisturbed: no remove, and messages keep flowing.
func TestInstanceKilled(t *testing.T) {
	proxy, instances := cluster(t, 3, shortTimeouts)
	const rooms = 24
	pairs := joinPairs(t, proxy, instances, rooms)
	victim := busiest(instances)
	var hit, spared []int
	for i := range pairs {
		if instanceOf(instances, roomName(i)) == victim {
			hit = append(hit, i)
		} else {
			spared = append(spared, i)
		}
	}
	t.Logf("killing %s, which serves %d of %d rooms", victim.addr, len(hit), rooms)
	if len(hit) == 0 || len(spared) == 0 {
		t.Fatalf("rooms hit %v, spared %v; want some of each", hit, spared)
	}
	victim.cmd.Process.Kill()

	for _, i := range hit {
		for _, c := range pairs[i] {
			select {
			case <-c.done:
				if c.gotClose {
					t.Errorf("room %d: a close frame came; want the connection to just end", i)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("room %d: connection still open 5 s after its instance died", i)
			}
		}
	}

	for _, i := range spared { // undisturbed: messages flow, and nothing else came
		a, b := pairs[i][0], pairs[i][1]
		a.send(msg{Type: "offer", PeerID: b.id, Signal: json.RawMessage(`"after the kill"`)})
		b.expect("offer", a.id)
		b.send(msg{Type: "answer", PeerID: a.id, Signal: json.RawMessage(`"still here"`)})
		a.expect("answer", b.id)
	}

	survivors := slices.DeleteFunc(slices.Clone(instances), func(in *instance) bool { return in == victim })
	for _, i := range hit {
		first := reconnect(t, proxy, roomName(i))
		second := reconnect(t, proxy, roomName(i))
		if !slices.Equal(second.peers, []string{first.id}) {
			t.Errorf("room %d after reconnecting: peers %v; want the room-mate %s", i, second.peers, first.id)
		}
		first.expect("announce", second.id)
		for _, old := range pairs[i] {
			if first.id == old.id || second.id == old.id {
				t.Errorf("room %d: an id came back after reconnecting; want new ids", i)
			}
		}
		if in := instanceOf(survivors, roomName(i)); in == nil {
			t.Errorf("room %d: no surviving instance logged the rejoin", i)
		}
	}
}

// reconnect dials through nginx until it gets in, backing off as a client should.
func reconnect(t *testing.T, proxy, path string) *client {
	t.Helper()
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := dial(t, proxy, path)
		if err == nil {
			return c
		}
		if attempt == 8 {
			t.Fatalf("reconnect to %s: %v", path, err)
		}
		time.Sleep(backoff) // backoff between attempts is the behaviour under test
		backoff *= 2
	}
}

// TestIdlePeerStays: an idle peer stays connected through nginx for several
// times proxy_read_timeout, because Peero's pings keep nginx's read timer
// fresh. As a control, the same proxy in front of an instance that never pings
// cuts an idle connection at proxy_read_timeout: a timeout in the wrong place,
// or pings that do not count, would fail here.
func TestIdlePeerStays(t *testing.T) {
	const readTimeout = time.Second
	timeouts := proxyTimeouts{connect: time.Second, read: readTimeout}
	proxy, _ := cluster(t, 3, timeouts, "-ping", "400ms") // about 2.5 pings per timeout
	quietProxy, _ := cluster(t, 1, timeouts, "-ping", "1h")

	idle := mustDial(t, proxy, "/idle")
	control := mustDial(t, quietProxy, "/idle")
	start := time.Now()
	select {
	case <-control.done:
	case <-time.After(5 * readTimeout):
		t.Fatalf("control: an idle connection to a silent instance is still open after %v; want it cut at proxy_read_timeout (%v)", 5*readTimeout, readTimeout)
	}
	if cut := time.Since(start); cut < readTimeout*8/10 || cut > 3*readTimeout {
		t.Errorf("control: cut after %v; want about proxy_read_timeout, %v", cut, readTimeout)
	}
	select {
	case <-idle.done:
		t.Fatalf("the idle peer was cut after %v; want it kept alive by pings", time.Since(start))
	case <-time.After(4 * readTimeout): // well past the timeout
	}
	idle.quiet()
}
