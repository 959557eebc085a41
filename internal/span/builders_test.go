package span

import (
	"slices"
	"testing"
)

// Topology builders. Each returns a network whose links are up but not yet
// settled: call run.

func lineNet(tb testing.TB, count int, seed uint64, cfg Config) *network {
	n := newNetwork(tb, seed, cfg)
	n.addRouters(count)
	for i := 1; i < count; i++ {
		n.link(i-1, i)
	}
	return n
}

func ringNet(tb testing.TB, count int, seed uint64, cfg Config) *network {
	n := lineNet(tb, count, seed, cfg)
	n.link(count-1, 0)
	return n
}

func starNet(tb testing.TB, count int, seed uint64, cfg Config) *network {
	n := newNetwork(tb, seed, cfg)
	n.addRouters(count)
	for i := 1; i < count; i++ {
		n.link(0, i)
	}
	return n
}

func gridNet(tb testing.TB, w, h int, seed uint64, cfg Config) *network {
	n := newNetwork(tb, seed, cfg)
	n.addRouters(w * h)
	for y := range h {
		for x := range w {
			if x > 0 {
				n.link(y*w+x-1, y*w+x)
			}
			if y > 0 {
				n.link((y-1)*w+x, y*w+x)
			}
		}
	}
	return n
}

// randomNet is a connected random graph: a random spanning tree plus random
// extra links up to an average degree of degree.
func randomNet(tb testing.TB, count, degree int, seed uint64, cfg Config) *network {
	n := newNetwork(tb, seed, cfg)
	n.addRouters(count)
	for i := 1; i < count; i++ {
		n.link(n.rng.IntN(i), i)
	}
	want := count * degree / 2
	for tries := 0; len(n.edges) < want && tries < 100*want; tries++ {
		a, b := n.rng.IntN(count), n.rng.IntN(count)
		if a != b && n.edges[edgeKey(a, b)] == nil {
			n.link(a, b)
		}
	}
	return n
}

// routerEdges lists the links between routers, sorted, for picking flaps.
func (n *network) routerEdges() [][2]int {
	return n.sortedEdges(func(k [2]int) bool { return n.hosts[k[0]].isRouter() && n.hosts[k[1]].isRouter() })
}

// sortedEdges lists the live links that keep accepts, in a reproducible
// order (map order is random).
func (n *network) sortedEdges(keep func([2]int) bool) [][2]int {
	var out [][2]int
	for k := range n.edges {
		if keep(k) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b [2]int) int { return slices.Compare(a[:], b[:]) })
	return out
}

// shutdown cuts every link, settles, checks that each router holds only
// its own advertisement, and stops every router advertising.
func (n *network) shutdown() {
	for _, k := range n.sortedEdges(func([2]int) bool { return true }) {
		n.unlink(k[0], k[1])
	}
	n.run()
	onlySelf := Stats{Clusters: 1, Nodes: 1, Links: 1}
	for _, h := range n.hosts {
		if !h.isRouter() {
			continue
		}
		if st := h.eng.Stats(); st != onlySelf {
			n.tb.Fatalf("%s holds %+v with every link cut, want only its own advertisement", h.name, st)
		}
		h.eng.SetSelf(nil)
	}
}
