package deploy

import (
	"net/url"
	"slices"
	"testing"
	"time"
)

// TestInstanceKilledKeepsIds: when an instance dies, its peers reconnect
// through nginx with their resume tokens and land on a surviving instance.
// With $PEERO_SECRET shared by the instances, that instance accepts the
// tokens: each peer gets its id back and finds its room-mate under its old
// id. The control: instances without it (each has a random secret) give the
// same reconnects new ids.
func TestInstanceKilledKeepsIds(t *testing.T) {
	t.Run("shared secret", func(t *testing.T) { testInstanceKilledResume(t, "one secret for every instance", true) })
	t.Run("no secret", func(t *testing.T) { testInstanceKilledResume(t, "", false) })
}

func testInstanceKilledResume(t *testing.T, secret string, keep bool) {
	t.Setenv("PEERO_SECRET", secret) // the instances inherit the environment
	proxy, instances := cluster(t, 3, shortTimeouts)
	const rooms = 12
	pairs := joinPairs(t, proxy, instances, rooms)
	victim := busiest(instances)
	var hit []int
	for i := range pairs {
		if instanceOf(instances, roomName(i)) == victim {
			hit = append(hit, i)
		}
	}
	t.Logf("killing %s, which serves %d of %d rooms", victim.addr, len(hit), rooms)
	victim.cmd.Process.Kill()
	for _, i := range hit {
		for _, c := range pairs[i] {
			select {
			case <-c.done:
			case <-time.After(5 * time.Second):
				t.Fatalf("room %d: connection still open 5 s after its instance died", i)
			}
		}
	}

	survivors := slices.DeleteFunc(slices.Clone(instances), func(in *instance) bool { return in == victim })
	for _, i := range hit {
		old := pairs[i]
		first := reconnect(t, proxy, roomName(i)+"?resume="+url.QueryEscape(old[0].resume))
		second := reconnect(t, proxy, roomName(i)+"?resume="+url.QueryEscape(old[1].resume))
		if !slices.Equal(second.peers, []string{first.id}) {
			t.Errorf("room %d after reconnecting: peers %v; want the room-mate %s", i, second.peers, first.id)
		}
		first.expect("announce", second.id)
		kept := first.id == old[0].id && second.id == old[1].id
		switch {
		case keep && !kept:
			t.Errorf("room %d: ids %s and %s after reconnecting with tokens; want their own, %s and %s",
				i, first.id, second.id, old[0].id, old[1].id)
		case !keep && (first.id == old[0].id || second.id == old[1].id):
			t.Errorf("room %d: an id came back on an instance with another secret; want new ids", i)
		}
		if in := instanceOf(survivors, roomName(i)); in == nil {
			t.Errorf("room %d: no surviving instance logged the rejoin", i)
		}
	}
}
