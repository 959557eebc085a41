package span

import (
	"fmt"
	"testing"
)

// stepSlack is what one item of a stepped call (a node offered, a relay
// closed, a span withdrawn from a node relayed to a few neighbors) may
// add to a step after it reached holdWork.
const stepSlack = 32

// bigTable returns an engine holding nodes spans received on src and
// relayed to others more neighbors.
func bigTable(t *testing.T, nodes, others int) (*fixture, *Neighbor) {
	f := newFixture(t, Config{})
	_, src := f.conn("src", allOf)
	for i := range others {
		f.conn(fmt.Sprint("dst", i), allOf)
	}
	for i := range nodes {
		f.recv(src, rspan(fmt.Sprint("n", i), 0, 0))
	}
	return f, src
}

// A neighbor coming up or going down touches every node; the engine
// does it a step at a time so that other links' calls get the mutex in
// between, and no hold does much more than holdWork.
func TestConnectionsComingAndGoingReleaseTheEngineBetweenSteps(t *testing.T) {
	const nodes = 2000
	cases := []struct {
		name  string
		event func(f *fixture, src *Neighbor)
		check func(t *testing.T, f *fixture)
	}{
		{"a connection coming up is offered the table in steps", func(f *fixture, _ *Neighbor) {
			p, _ := f.conn("new", allOf)
			if p.opened != nodes {
				f.t.Fatalf("the new connection got %d relays, want %d", p.opened, nodes)
			}
		}, nil},
		{"a connection going down withdraws its spans in steps", func(f *fixture, src *Neighbor) {
			f.e.ConnDown(src)
		}, func(t *testing.T, f *fixture) {
			f.wantStats(Stats{Conns: 3})
		}},
		{"a connection going down closes its relays in steps", func(f *fixture, _ *Neighbor) {
			_, c := f.conn("new", allOf)
			f.e.holds, f.e.longest = 0, 0
			f.e.ConnDown(c)
		}, func(t *testing.T, f *fixture) {
			f.wantStats(Stats{Clusters: 1, Nodes: nodes, Links: nodes, Relays: 3 * nodes, Conns: 4})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, src := bigTable(t, nodes, 3)
			f.e.holds, f.e.longest = 0, 0
			tc.event(f, src)
			if f.e.holds < nodes/holdWork {
				t.Errorf("the mutex was released %d times midway, want at least %d", f.e.holds, nodes/holdWork)
			}
			if f.e.longest > holdWork+stepSlack {
				t.Errorf("one hold did %d units of work, want at most %d", f.e.longest, holdWork+stepSlack)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

// The work a call does is billed to the neighbor that caused it, for
// the daemon to charge that peer's budget (limits.link_rate).
func TestTheWorkOfACallIsBilledToTheConnectionThatCausedIt(t *testing.T) {
	f, src := bigTable(t, 100, 3)
	src.TakeWork()
	f.recv(src, rspan("fanned", 0, 0))
	// One selection per neighbor (src's own included) and a relay on
	// each of the three others.
	if got := src.TakeWork(); got != 4+3 {
		t.Errorf("a span relayed to three connections billed %d units, want 7", got)
	}
	if got := src.TakeWork(); got != 0 {
		t.Errorf("a second TakeWork returned %d, want 0", got)
	}
	_, c := f.conn("new", allOf)
	// One selection and one relay per node.
	if got := c.TakeWork(); got != 2*101 {
		t.Errorf("a connection offered 101 nodes billed %d units, want 202", got)
	}
	f.e.ConnDown(c)
	if got := c.TakeWork(); got != 101 {
		t.Errorf("a connection going down with 101 relays billed %d units, want 101", got)
	}
	if got := src.TakeWork(); got != 0 {
		t.Errorf("another connection's work billed %d units to src", got)
	}
}

// churnOnce brings a neighbor up, has it advertise spans and takes it
// down again. Its peer is only touched under the engine's mutex.
func churnOnce(e *Engine, id string, spans int) {
	p := newPeer(id)
	c := e.ConnUp(p, allOf)
	for j := range spans {
		if _, err := e.SpanReceived(c, uint64(j+1), rspan(fmt.Sprintf("%s-%d", id, j), 0, 0)); err != nil {
			panic(err)
		}
	}
	e.ConnDown(c)
}

// Neighbors churning side by side, each going up, sending spans and
// going down while the others' stepped calls run between their steps,
// leave nothing behind.
func TestConnectionsChurningConcurrentlyLeaveNothingBehind(t *testing.T) {
	f, src := bigTable(t, 3*holdWork, 2)
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 20 {
				churnOnce(f.e, fmt.Sprintf("w%d.%d", w, i), 40)
			}
		}()
	}
	for range 4 {
		<-done
	}
	f.e.ConnDown(src)
	f.wantStats(Stats{Conns: 2})
	if f.e.holds == 0 {
		t.Errorf("no stepped call released the mutex midway")
	}
}
