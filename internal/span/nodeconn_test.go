package span

import (
	"math/rand/v2"
	"testing"
)

// TestConnStatesBehaveLikeAMapOfNonIdleStates drives one node's states
// with random grows, changes and tidies and compares them after every
// step with a map holding what was set and not idle.
func TestConnStatesBehaveLikeAMapOfNonIdleStates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	conns := make([]*Neighbor, 40)
	for i := range conns {
		conns[i] = &Neighbor{slot: i * 3} // sparse slots, as after links left
	}
	n := &node{}
	model := map[int]int32{} // slot -> held
	for step := range 20_000 {
		c := conns[rng.IntN(len(conns))]
		switch rng.IntN(3) {
		case 0:
			n.grow(c).held++
			model[c.slot]++
		case 1:
			if nc := n.stateFor(c); nc != nil {
				nc.held--
				model[c.slot]--
			}
		case 2:
			n.tidy(c)
			if model[c.slot] == 0 {
				delete(model, c.slot)
			}
		}
		checkStatesAgainst(t, step, n, conns, model)
	}
}

func checkStatesAgainst(t *testing.T, step int, n *node, conns []*Neighbor, model map[int]int32) {
	t.Helper()
	if len(n.conns) != len(model) {
		t.Fatalf("step %d: %d states, want %d", step, len(n.conns), len(model))
	}
	for i := 1; i < len(n.conns); i++ {
		if n.conns[i-1].slot >= n.conns[i].slot {
			t.Fatalf("step %d: states out of slot order at %d", step, i)
		}
	}
	for _, c := range conns {
		held, ok := model[c.slot]
		nc := n.stateFor(c)
		switch {
		case ok != (nc != nil):
			t.Fatalf("step %d: slot %d has state %v, want %v", step, c.slot, nc != nil, ok)
		case nc != nil && nc.held != held:
			t.Fatalf("step %d: slot %d state %+v, want held %d", step, c.slot, *nc, held)
		}
	}
}

// TestConnStatesKeepOnlyWhatANodeHolds checks that tidy drops an idle
// state and only an idle one, and that a node relayed nowhere keeps no
// array at all.
func TestConnStatesKeepOnlyWhatANodeHolds(t *testing.T) {
	a, b := &Neighbor{slot: 7}, &Neighbor{slot: 2}
	n := &node{}
	n.grow(a).refused = []*Advert{{}}
	n.grow(b).relays = []relayRef{{}}
	n.tidy(a)
	n.tidy(b)
	if len(n.conns) != 2 || n.conns[0].slot != 2 || n.conns[1].slot != 7 {
		t.Fatalf("busy states dropped or out of order: %+v", n.conns)
	}
	n.stateFor(a).refused = nil
	n.tidy(a)
	if n.stateFor(a) != nil || n.stateFor(b) == nil {
		t.Fatalf("tidy of an idle state: %+v", n.conns)
	}
	n.stateFor(b).relays = nil
	n.tidy(b)
	if n.conns != nil {
		t.Fatalf("a node relayed nowhere keeps %v", n.conns)
	}
}

// TestConnStatesShrinkAfterAHubsBurst checks that a node once relayed on
// many neighbors gives the array back when few remain.
func TestConnStatesShrinkAfterAHubsBurst(t *testing.T) {
	n := &node{}
	conns := make([]*Neighbor, 64)
	for i := range conns {
		conns[i] = &Neighbor{slot: i}
		n.grow(conns[i]).held = 1
	}
	for _, c := range conns[1:] {
		n.stateFor(c).held = 0
		n.tidy(c)
	}
	if len(n.conns) != 1 || cap(n.conns) > 16 {
		t.Fatalf("after the burst: len %d cap %d", len(n.conns), cap(n.conns))
	}
}

// TestConnStatesOfAFewConnectionsTakeNoSpareRoom checks that a node on a
// few neighbors holds an array of exactly that many entries.
func TestConnStatesOfAFewConnectionsTakeNoSpareRoom(t *testing.T) {
	n := &node{}
	for i, slot := range []int{5, 1, 3} {
		n.grow(&Neighbor{slot: slot}).held = 1
		if len(n.conns) != i+1 || cap(n.conns) != i+1 {
			t.Fatalf("after %d grows: len %d cap %d", i+1, len(n.conns), cap(n.conns))
		}
	}
	if n.conns[0].slot != 1 || n.conns[1].slot != 3 || n.conns[2].slot != 5 {
		t.Fatalf("out of slot order: %+v", n.conns)
	}
}
