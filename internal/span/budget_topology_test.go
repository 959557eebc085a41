package span

import (
	"strings"
	"testing"
)

// checkUnderBudget is the invariant of a quiet network whose routers may
// be short of budget: each router's state is consistent with the wire and
// with its charges, a relay held back waits for budget (checkSelection),
// no router holds what its budgets forbid, and none holds a node that is
// out of reach (a budget may make a router miss a node, never keep a
// stale one).
func (n *network) checkUnderBudget(when string) {
	n.tb.Helper()
	var v violations
	if len(n.active) != 0 {
		v.add("network not quiet: %d directions with messages", len(n.active))
	}
	for _, h := range n.hosts {
		if h.isRouter() {
			n.checkRouter(h, &v)
			checkWithinBudget(h, &v)
		}
	}
	n.checkNoStale(&v)
	if len(v) > 0 {
		n.tb.Fatalf("invariant broken %s:\n  %s", when, strings.Join(v, "\n  "))
	}
}

func checkWithinBudget(h *host, v *violations) {
	e := h.eng
	lim := e.budget.limits()
	over := func(what string, n, max int) {
		if max > 0 && n > max {
			v.add("%s holds %d %s, budget %d", h.name, n, what, max)
		}
	}
	over("nodes", len(e.nodes), lim.MaxNodes)
	over("received spans", int(e.budget.spans.Load()), lim.MaxSpans)
	over("relays besides its own advertisement's", chargedRelays(e), lim.MaxRelays)
}

// chargedRelays counts the open relays of received spans (our own
// advertisement's are never held back, so the budget does not bind them).
func chargedRelays(e *Engine) int {
	n := 0
	for _, c := range e.conns {
		for _, r := range c.sent {
			if r.link.conn != nil {
				n++
			}
		}
	}
	return n
}

// checkNoStale checks that every node a router holds is an origin in
// reach, and that no link claims a shorter path than the real one.
func (n *network) checkNoStale(v *violations) {
	hopsTo := make(map[nodeKey][]int)
	for _, o := range n.hosts {
		if !o.down {
			_, nk := originKeys(o)
			hopsTo[nk] = n.bfs(o)
		}
	}
	for _, r := range n.hosts {
		if !r.isRouter() {
			continue
		}
		for _, nd := range r.eng.nodes {
			hops, ok := hopsTo[nd.key]
			switch {
			case !ok:
				v.add("%s holds %s, which is no live origin", r.name, nd.key.label)
			case hops[r.idx] < 0 || hops[r.idx] > maxHops:
				v.add("%s holds %s, %d hops away (stale)", r.name, nd.key.label, hops[r.idx])
			case hops[r.idx] > 0 && nd.links[0].conn != nil && int(nd.links[0].span.Dist) < hops[r.idx]-1:
				v.add("%s holds %s at dist %d, shorter than the %d hops there are", r.name, nd.key.label, nd.links[0].span.Dist, hops[r.idx])
			}
		}
	}
}

// reconfigureAll applies cfg (with each router's own rnss and self) to
// every router, as a reload does.
func (n *network) reconfigureAll(cfg Config) {
	n.tb.Helper()
	for _, h := range n.hosts {
		if !h.isRouter() {
			continue
		}
		c := cfg
		c.Rnss = h.eng.Rnss()
		self := routerSpan(h.name)
		c.Self = &self
		if err := h.eng.Reconfigure(c); err != nil {
			n.tb.Fatal(err)
		}
	}
}

// Relays held back by a tight relay budget are only delayed: lifting the
// budget lets every router converge to what a breadth-first search says,
// with nothing refused on the wire on the way.
func TestARelayBudgetDelaysRelaysAndLiftingItConverges(t *testing.T) {
	cases := []struct {
		name  string
		build func(t *testing.T, cfg Config) *network
	}{
		{"a random graph of 30 routers with leaves", func(t *testing.T, cfg Config) *network {
			n := randomNet(t, 30, 3, 11, cfg)
			for i := range 8 {
				n.addLeaf(i * 3)
			}
			return n
		}},
		{"a 5x5 grid", func(t *testing.T, cfg Config) *network { return gridNet(t, 5, 5, 12, cfg) }},
		{"a star of 20 routers", func(t *testing.T, cfg Config) *network { return starNet(t, 20, 13, cfg) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tight := Config{Budget: Budget{MaxRelays: 24}}
			n := tc.build(t, tight)
			n.run()
			n.checkUnderBudget("after convergence under a relay budget of 24")
			starved := 0
			for _, h := range n.hosts {
				if h.isRouter() {
					starved += h.eng.Stats().Starved
				}
			}
			if starved == 0 {
				t.Fatal("no router was short of relay budget: the test proves nothing")
			}
			// Flap a few links while short of budget.
			edges := n.routerEdges()
			for i := 0; i < len(edges) && i < 6; i += 2 {
				n.unlink(edges[i][0], edges[i][1])
				n.run()
				n.checkUnderBudget("after a link went down under budget")
				n.link(edges[i][0], edges[i][1])
				n.run()
				n.checkUnderBudget("after it came back under budget")
			}
			n.reconfigureAll(Config{})
			n.run()
			n.check("after the relay budget was lifted")
			n.shutdown()
			n.checkZero()
		})
	}
}

// Tight node and span budgets refuse spans on the wire; whatever is held
// stays consistent and within budget, and everything is released when the
// links go.
func TestNodeAndSpanBudgetsKeepEveryRouterConsistent(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"max_nodes 12", Config{Budget: Budget{MaxNodes: 12}}},
		{"max_spans 20", Config{Budget: Budget{MaxSpans: 20}}},
		{"max_spans_per_node 1 and K 3", Config{MaxRelays: 3, Budget: Budget{MaxSpansPerNode: 1}}},
		{"every budget tight at once", Config{Budget: Budget{MaxNodes: 15, MaxSpans: 25, MaxRelays: 30, MaxSpansPerNode: 2}}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := randomNet(t, 25, 3, uint64(20+i), tc.cfg)
			for j := range 6 {
				n.addLeaf(j * 4)
			}
			n.run()
			n.checkUnderBudget("after convergence under " + tc.name)
			if n.refused == 0 {
				t.Fatal("no span was refused: the test proves nothing")
			}
			edges := n.routerEdges()
			for j := 0; j < len(edges) && j < 4; j++ {
				n.unlink(edges[j][0], edges[j][1])
				n.run()
				n.checkUnderBudget("after a link went down under " + tc.name)
			}
			n.shutdown()
			n.checkZero()
		})
	}
}
