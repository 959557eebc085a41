package span

import (
	"fmt"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestEveryRouterSeesWhatABreadthFirstSearchSees(t *testing.T) {
	randomN := 100
	if testing.Short() {
		randomN = 40
	}
	cases := []struct {
		name  string
		loops bool // has cycles short enough to bring an advertisement back
		build func(t *testing.T) *network
	}{
		{"a line of 20 routers", false, func(t *testing.T) *network { return lineNet(t, 20, 1, Config{}) }},
		{"a ring of 20 routers", false, func(t *testing.T) *network { return ringNet(t, 20, 2, Config{}) }},
		{"a 5x5 grid", true, func(t *testing.T) *network { return gridNet(t, 5, 5, 3, Config{}) }},
		{"a star of 30 routers", false, func(t *testing.T) *network { return starNet(t, 30, 4, Config{}) }},
		{"a random graph of degree 3", true, func(t *testing.T) *network { return randomNet(t, randomN, 3, 5, Config{}) }},
		{"a random graph relaying one path (K=1)", true, func(t *testing.T) *network {
			return randomNet(t, randomN/2, 3, 6, Config{MaxRelays: 1})
		}},
		{"a symmetric grid with equal rnss everywhere", true, func(t *testing.T) *network {
			n := gridNet(t, 4, 4, 7, Config{Symmetric: true})
			sameRnss(n)
			return n
		}},
		{"a random graph of degree 3 with leaves", true, func(t *testing.T) *network {
			n := randomNet(t, randomN/2, 3, 8, Config{MaxRelays: 3})
			for i := range 6 {
				n.addLeaf(i * 7 % (randomN / 2))
			}
			return n
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := tc.build(t)
			n.run()
			n.check("after convergence")
			if n.ownRefused == 0 && tc.loops {
				// A cycle shorter than the dist limit brings a router's
				// own advertisement back to it from a peer that did not
				// know better.
				t.Error("no router refused its own node's advertisement: the refusal went untested")
			}
			n.shutdown()
			n.checkZero()
		})
	}
}

// sameRnss gives every router the same rnss so that equal-length paths tie
// exactly, which is what the symmetric option is about.
func sameRnss(n *network) {
	for _, h := range n.hosts {
		cfg := n.cfg
		cfg.Rnss = 7
		self := routerSpan(h.name)
		cfg.Self = &self
		h.eng = New(cfg)
	}
}

func TestALineLongerThanTheDistLimitEndsAt17Hops(t *testing.T) {
	n := lineNet(t, 25, 9, Config{})
	n.run()
	n.check("after convergence")
	key, nk := originKeys(n.router(0))
	for r, want := range map[int]bool{16: true, 17: true, 18: false, 24: false} {
		nd := n.router(r).eng.clusters[key].nodes[nk]
		if (nd != nil) != want {
			t.Fatalf("r%d holds r0: %v, want %v", r, nd != nil, want)
		}
		if nd != nil && nd.links[0].span.Dist != uint32(r-1) {
			t.Fatalf("r%d holds r0 at dist %d, want %d", r, nd.links[0].span.Dist, r-1)
		}
	}
	n.shutdown()
	n.checkZero()
}

// TestFlapsAndRestartsAlwaysSettleToTheInvariant flaps links, restarts
// routers and moves leaves at random (seeded), checking the whole invariant
// after every settle.
func TestFlapsAndRestartsAlwaysSettleToTheInvariant(t *testing.T) {
	t.Parallel()
	events, size := 500, 30
	if testing.Short() {
		events, size = 150, 20
	}
	n := randomNet(t, size, 3, 42, Config{})
	edges := n.routerEdges()
	leaves := []*host{n.addLeaf(0), n.addLeaf(size / 2)}
	n.run()
	n.check("after convergence")
	for i := range events {
		what := n.flap(edges, leaves)
		n.run()
		n.check(fmt.Sprintf("after event %d (%s)", i, what))
	}
	n.shutdown()
	n.checkZero()
}

// flap applies one random event and says what it was.
func (n *network) flap(edges [][2]int, leaves []*host) string {
	switch x := n.rng.IntN(10); {
	case x < 6:
		k := edges[n.rng.IntN(len(edges))]
		if n.edges[k] != nil {
			n.unlink(k[0], k[1])
			return fmt.Sprintf("cut r%d-r%d", k[0], k[1])
		}
		n.link(k[0], k[1])
		return fmt.Sprintf("link r%d-r%d", k[0], k[1])
	case x < 8:
		r := n.rng.IntN(n.routerCount())
		n.restart(r)
		return fmt.Sprintf("restart r%d", r)
	default:
		i := n.rng.IntN(len(leaves))
		n.removeLeaf(leaves[i])
		r := n.rng.IntN(n.routerCount())
		leaves[i] = n.addLeaf(r)
		return fmt.Sprintf("leaf moved to r%d", r)
	}
}

func (n *network) routerCount() int {
	c := 0
	for _, h := range n.hosts {
		if h.isRouter() {
			c++
		}
	}
	return c
}

// TestRefusingRoutersSettleWithoutLooping gives every router a tiny span
// limit, so relays are refused all over the network: it must still settle,
// with every refusal honoured, and clean up completely.
func TestRefusingRoutersSettleWithoutLooping(t *testing.T) {
	n := randomNet(t, 20, 3, 11, Config{MaxSpansPerConn: 5})
	n.maxSteps = 1_000_000
	n.run()
	var v violations
	refused := 0
	for _, h := range n.hosts {
		n.checkRouter(h, &v)
		for _, nd := range h.eng.nodes {
			for _, nc := range nd.conns {
				refused += len(nc.refused)
			}
		}
	}
	if len(v) > 0 {
		t.Fatalf("inconsistent after refusals: %v", v)
	}
	if refused == 0 {
		t.Fatalf("no relay was refused: the limit did not bite")
	}
	for _, h := range n.hosts {
		for _, x := range h.ends {
			if len(x.conn.links) > 5 {
				t.Fatalf("%s %s holds %d spans over the limit", h.name, x.id, len(x.conn.links))
			}
		}
	}
	n.shutdown()
	n.checkZero()
}

func TestEveryLeafGetsTheOtherLeavesOfItsPeerType(t *testing.T) {
	n := ringNet(t, 6, 12, Config{})
	a, b := n.addLeaf(0), n.addLeaf(3)
	n.run()
	n.check("after convergence")
	for _, l := range []*host{a, b} {
		got := map[string]bool{}
		for _, rx := range l.ends[0].recv {
			if rx.span.PeerType != dmsg.PeerHammer2 {
				t.Fatalf("%s got a %d span despite its peer_mask", l.name, rx.span.PeerType)
			}
			got[rx.span.FsLabel] = true
		}
		other := map[*host]*host{a: b, b: a}[l]
		if !got[other.name] {
			t.Fatalf("%s did not get %s: %v", l.name, other.name, got)
		}
	}
	n.shutdown()
	n.checkZero()
}
