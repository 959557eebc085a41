package router_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
)

// Two linked routers: each holds the other's advertisement at dist 0 over
// the link and its own at dist 0 via local; its own is relayed to the
// other (docs/PROTOCOL.md 4.3), the other's is not relayed back where it came
// from (rule 2). The relay msgid one side shows is the msgid the other
// side holds the span under.
func TestTwoLinkedRoutersHoldEachOtherAtDistZeroAndRelayOnlyThemselves(t *testing.T) {
	tests := []struct {
		name string
		link func(t *testing.T) (a, b *testRouter)
	}{
		{"linked by the shell's span command", func(t *testing.T) (a, b *testRouter) {
			a, b = newRouter(t, "a"), newRouter(t, "b")
			connect(t, a, b)
			return a, b
		}},
		{"linked by a static media target", func(t *testing.T) (a, b *testRouter) {
			b = newRouter(t, "b")
			a = newRouter(t, "a", withTarget(t, b.addr()))
			waitLinked(t, a, b)
			return a, b
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.link(t)
			ta, tb := a.Tree(), b.Tree()
			checkPairView(t, a, b, ta, tb)
			checkPairView(t, b, a, tb, ta)
		})
	}
}

// checkPairView checks x's tree tx against its peer y's tree ty.
func checkPairView(t *testing.T, x, y *testRouter, tx, ty *shell.Tree) {
	t.Helper()
	if tx.Node.Label != x.label || tx.Node.ID != x.nodeID() || tx.Node.Rnss != x.rnss() {
		t.Errorf("%s: tree node = %+v, want label %s id %s rnss %d", x.label, tx.Node, x.label, x.nodeID(), x.rnss())
	}
	via := x.mustLinkTo(y.label)
	if len(tx.Links) != 1 || tx.Links[0].PeerType != "router" {
		t.Errorf("%s: links = %+v, want the one router link to %s", x.label, tx.Links, y.label)
	}
	if len(tx.Clusters) != 1 {
		t.Fatalf("%s: clusters = %+v, want one", x.label, tx.Clusters)
	}
	c := tx.Clusters[0]
	wantClusterID := config.NodeIDFor("default").String()
	if c.PeerType != "router" || c.ID != wantClusterID || c.Label != "default" || len(c.Nodes) != 2 {
		t.Fatalf("%s: cluster = %+v, want router %s (default) with two nodes", x.label, c, wantClusterID)
	}

	self := findNode(tx, "router", x.label)
	if self == nil || len(self.Adverts) != 1 {
		t.Fatalf("%s: own node = %+v, want one link", x.label, self)
	}
	own := self.Adverts[0]
	if own.Dist != 0 || own.Via != span.ViaLocal || own.Rnss != x.rnss() || self.ID != x.nodeID() || self.PfsType != 0 {
		t.Errorf("%s: own advertisement = %+v in %+v, want dist 0 via local rnss %d", x.label, own, self, x.rnss())
	}
	if len(own.Relays) != 1 || own.Relays[0].Via != via {
		t.Errorf("%s: own advertisement relays = %+v, want exactly one via %s", x.label, own.Relays, via)
	}

	other := findNode(tx, "router", y.label)
	if other == nil || len(other.Adverts) != 1 {
		t.Fatalf("%s: node %s = %+v, want one link", x.label, y.label, other)
	}
	got := other.Adverts[0]
	if got.Dist != 0 || got.Via != via || got.Rnss != y.rnss() || other.ID != y.nodeID() {
		t.Errorf("%s: holds %s as %+v (id %s), want dist 0 via %s rnss %d id %s",
			x.label, y.label, got, other.ID, via, y.rnss(), y.nodeID())
	}
	if len(got.Relays) != 0 {
		t.Errorf("%s: relays %s's advertisement back: %+v", x.label, y.label, got.Relays)
	}
	// y's relay of itself is the transaction x holds it under.
	if ys := findNode(ty, "router", y.label); ys != nil && len(ys.Adverts) == 1 && len(ys.Adverts[0].Relays) == 1 {
		if rm := ys.Adverts[0].Relays[0].MsgID; rm != got.MsgID {
			t.Errorf("%s holds %s under msgid %s, but %s relayed it as %s", x.label, y.label, got.MsgID, y.label, rm)
		}
	}
}

// In a line r1-r2-r3-r4 every router holds every other at the distance of
// the path between them: |i-j|-1, since a neighbour's own advertisement
// arrives at dist 0.
func TestRoutersInALineHoldEachOtherAtTheirPathDistance(t *testing.T) {
	rs := line(t, 4)
	for i, r := range rs {
		for j, o := range rs {
			want := uint32(max(i-j, j-i) - 1)
			if i == j {
				want = 0
			}
			eventually(t, fmt.Sprintf("%s holds %s at dist %d", r.label, o.label, want), func() error {
				d, err := r.bestDist(o.label)
				if err == nil && d != want {
					err = fmt.Errorf("dist %d", d)
				}
				return err
			})
		}
	}
}

// A leaf's span advertised on r1 reaches a leaf on r4 with one hop per
// router and every router's rnss added (wrapping), and goes away
// everywhere when the leaf withdraws it or leaves.
func TestALeafSpanCrossesALineOfFourAndIsWithdrawnEverywhere(t *testing.T) {
	const leafRnss = 0xFFFFFFF0 // wraps on the first hop
	tests := []struct {
		name     string
		withdraw func(origin *leaf, adv *endpoint.Advert)
	}{
		{"when the leaf closes its span", func(_ *leaf, adv *endpoint.Advert) { adv.Withdraw() }},
		{"when the leaf disconnects", func(origin *leaf, _ *endpoint.Advert) { origin.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := line(t, 4)
			watcher := dialLeaf(t, rs[3].tcpURL(), leafConfig{Label: "watcher"})
			origin := dialLeaf(t, rs[0].tcpURL(), leafConfig{Label: "origin"})
			adv := origin.advertise(hammer2Span("pfs1", "h2", 1, leafRnss))

			got := watcher.waitSpans("pfs1", 1)[0].Span
			want := uint32(leafRnss)
			for _, r := range rs {
				want += r.rnss()
			}
			if got.Dist != 4 || got.Rnss != want {
				t.Errorf("watcher holds pfs1 at dist %d rnss %#x, want dist 4 rnss %#x", got.Dist, got.Rnss, want)
			}
			if got.PeerType != dmsg.PeerHammer2 || got.ClLabel != "h2" || got.PfsFsid != config.NodeIDFor("pfs1") || got.PfsType != 1 {
				t.Errorf("relayed span fields changed: %+v", got)
			}
			for i, r := range rs {
				n := findNode(r.Tree(), "hammer2", "pfs1")
				if n == nil || len(n.Adverts) != 1 || n.Adverts[0].Dist != uint32(i) {
					t.Errorf("%s holds pfs1 as %+v, want one link at dist %d", r.label, n, i)
				}
			}

			tc.withdraw(origin, adv)
			for _, r := range rs {
				eventually(t, r.label+" drops pfs1", func() error { return r.lacks("pfs1") })
			}
			watcher.waitSpans("pfs1", 0)
		})
	}
}

// The LNK_CONN filters of docs/PROTOCOL.md 4.3, end to end: what a leaf
// receives depends on its peer_mask, pfs_mask and, against spans of its
// own peer type only, its pfs_clid and cl_label.
func TestALeafReceivesOnlyTheSpansItsLNKCONNFiltersLetThrough(t *testing.T) {
	hub := newRouter(t, "hub")
	origin := dialLeaf(t, hub.tcpURL(), leafConfig{Label: "origin"})
	origin.advertise(hammer2Span("x1", "clx", 1, 7)) // pfs_type 1
	origin.advertise(hammer2Span("y2", "cly", 2, 7)) // pfs_type 2
	for _, l := range []string{"x1", "y2"} {
		eventually(t, "hub holds "+l, func() error { return hub.Holds(l) })
	}

	all := ^uint64(0)
	clx := config.NodeIDFor("clx")
	tests := []struct {
		name string
		conn dmsg.Conn
		v2   bool
		want []string
	}{
		{"a HAMMER2-only peer_mask gets HAMMER2 spans and no ROUTER spans",
			dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: 1 << dmsg.PeerHammer2}, false, []string{"x1", "y2"}},
		{"a ROUTER-only peer_mask gets only the routers",
			dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: 1 << dmsg.PeerRouter}, false, []string{"hub"}},
		{"a HAMMER2 peer with a pfs_clid gets only that HAMMER2 cluster",
			dmsg.Conn{PeerType: dmsg.PeerHammer2, PeerMask: all, PfsClid: clx}, false, []string{"hub", "x1"}},
		{"a HAMMER2 peer with a cl_label gets only that HAMMER2 cluster",
			dmsg.Conn{PeerType: dmsg.PeerHammer2, PeerMask: all, ClLabel: "cly"}, false, []string{"hub", "y2"}},
		{"a ROUTER peer with a pfs_clid loses routers of other clusters",
			dmsg.Conn{PeerType: dmsg.PeerRouter, PeerMask: all, PfsClid: clx}, false, []string{"x1", "y2"}},
		{"cluster filters of another peer type do not apply",
			dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: all, PfsClid: clx, ClLabel: "clx"}, false, []string{"hub", "x1", "y2"}},
		{"a pfs_mask keeps only its pfs types",
			dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: all, PfsMask: 1 << 1}, false, []string{"x1"}},
		{"a pfs_mask of 0 means every pfs type",
			dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: all}, false, []string{"hub", "x1", "y2"}},
		{"a libdmsg LNK_CONN has no pfs_mask and gets every pfs type",
			dmsg.Conn{PeerType: dmsg.PeerRouter, PeerMask: all, PfsMask: 1 << 1}, true, []string{"hub", "x1", "y2"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			label := fmt.Sprintf("obs%d", i)
			c := tc.conn
			c.FsLabel, c.ProtoVersion = label, 1
			obs := dialLeaf(t, hub.tcpURL(), leafConfig{Label: label, Conn: &c, V2: tc.v2})
			eventually(t, label+" holds exactly "+fmt.Sprint(tc.want), func() error {
				id, err := hub.LinkTo(label)
				if err != nil {
					return err
				}
				if got := relayedTo(hub.Tree(), id); !slices.Equal(got, tc.want) {
					return fmt.Errorf("hub relays %v to %s", got, id)
				}
				if got := obs.labels(); !slices.Equal(got, tc.want) {
					return fmt.Errorf("%s holds %v", label, got)
				}
				return nil
			})
		})
	}
}

// relayedTo returns the sorted labels of the nodes the tree relays on link
// id.
func relayedTo(t *shell.Tree, id string) []string {
	var out []string
	for _, c := range t.Clusters {
		for _, n := range c.Nodes {
			for _, l := range n.Adverts {
				for _, r := range l.Relays {
					if r.Via == id && !slices.Contains(out, n.Label) {
						out = append(out, n.Label)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// On a diamond a-b, a-c, b-d, c-d, router a holds d over two equal paths:
// with max_relays K it relays exactly K of them to a leaf, and no router
// ever relays more than K links of one node to one link.
func TestNoRouterRelaysMoreThanMaxRelaysLinksOfANodeToALink(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("with max_relays %d", k), func(t *testing.T) {
			rs := map[string]*testRouter{}
			for _, l := range []string{"a", "b", "c", "d"} {
				rs[l] = newRouter(t, l, withMaxRelays(k))
			}
			for _, e := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "d"}, {"c", "d"}} {
				connect(t, rs[e[0]], rs[e[1]])
			}
			// Spans also run around the ring up to maxdist; what the
			// watcher ends up with is a's best K, at dist 2.
			watcher := dialLeaf(t, rs["a"].tcpURL(), leafConfig{Label: "watcher"})
			watcher.waitSpans("d", k, 2)
			eventually(t, "a's best links of d are the two paths at dist 1", func() error {
				n := findNode(rs["a"].Tree(), "router", "d")
				if n == nil || len(n.Adverts) < 2 || n.Adverts[0].Dist != 1 || n.Adverts[1].Dist != 1 ||
					n.Adverts[0].Via == n.Adverts[1].Via {
					return fmt.Errorf("a holds d as %+v", n)
				}
				return nil
			})
			for name, r := range rs {
				for _, c := range r.Tree().Clusters {
					for _, n := range c.Nodes {
						per := map[string]int{}
						for _, l := range n.Adverts {
							for _, rl := range l.Relays {
								per[rl.Via]++
							}
						}
						for via, cnt := range per {
							if cnt > k {
								t.Errorf("%s relays %d links of %s to %s, want at most %d", name, cnt, n.Label, via, k)
							}
						}
					}
				}
			}
			if got := relayCount(rs["a"].Tree(), "d", rs["a"].mustLinkTo("watcher")); got != k {
				t.Errorf("a relays %d links of d to the watcher, want %d", got, k)
			}
		})
	}
}

// relayCount counts the relays of node label on link id.
func relayCount(t *shell.Tree, label, id string) int {
	n := 0
	for _, c := range t.Clusters {
		for _, nd := range c.Nodes {
			if nd.Label != label {
				continue
			}
			for _, l := range nd.Adverts {
				for _, r := range l.Relays {
					if r.Via == id {
						n++
					}
				}
			}
		}
	}
	return n
}

// A router never holds or relays its own node's advertisement received
// from a peer (as happens on any loop through a peer that does not know
// our node id): it refuses it, so the peer stops offering it, keeps its
// own dist-0 advertisement as the only link of its node and relays that.
func TestARouterRefusesItsOwnAdvertisementFromAPeer(t *testing.T) {
	r := newRouter(t, "r", withMaxRelays(1))
	echo := dialLeaf(t, r.tcpURL(), leafConfig{Label: "echo"})
	echo.waitSpans("r", 1, 0)
	mirror := echo.RelaysOf("r")[0].Span
	mirror.Dist, mirror.Rnss = 3, 1 // as if it had come back around a loop
	ad := echo.advertise(mirror)
	eventually(t, "r refuses the echo of itself", func() error {
		if st := ad.State(); st.Acked || !st.Refused || st.Error != dmsg.ErrParam {
			return fmt.Errorf("acked %v refused %v error %s", st.Acked, st.Refused, dmsg.ErrorString(st.Error))
		}
		return nil
	})
	if n := findNode(r.Tree(), "router", "r"); n == nil || len(n.Adverts) != 1 || n.Adverts[0].Via != span.ViaLocal {
		t.Fatalf("r holds itself as %+v, want only its own advertisement via local", n)
	}
	err := testutil.GatherAndCompare(r.Metrics().Registry(), strings.NewReader(`
# HELP dmsgd_spans_refused_total LNK_SPANs refused, by reason: own_node (our own advertisement came back), limit, duplicate, other.
# TYPE dmsgd_spans_refused_total counter
dmsgd_spans_refused_total{reason="own_node"} 1
`), "dmsgd_spans_refused_total")
	if err != nil {
		t.Error(err)
	}

	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	watcher.waitSpans("r", 1)
	if got := watcher.RelaysOf("r")[0].Span.Dist; got != 0 {
		t.Errorf("the watcher holds r at dist %d, want r's own advertisement at dist 0", got)
	}
}

// A peer whose LNK_CONN names its node id is never offered its own
// advertisement, even when the router holds it through another path.
func TestAPeerIsNotOfferedItsOwnAdvertisement(t *testing.T) {
	r := newRouter(t, "r")
	self := hammer2Span("pfs", "h2", 0, 1)
	conn := dmsg.Conn{PfsFsid: self.PfsFsid, PeerType: dmsg.PeerHammer2, PeerMask: ^uint64(0), ProtoVersion: 1}
	home := dialLeaf(t, r.tcpURL(), leafConfig{Label: "pfs", Conn: &conn})
	home.waitAcked()
	other := dialLeaf(t, r.tcpURL(), leafConfig{Label: "other"})
	other.advertise(self) // pfs, as heard elsewhere
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	watcher.waitSpans("pfs", 1)
	// A later span reaching home shows r has sent home everything it
	// meant to about pfs: a link is FIFO.
	other.advertise(hammer2Span("later", "h2", 0, 1))
	home.waitSpans("later", 1)
	if got := home.RelaysOf("pfs"); len(got) != 0 {
		t.Fatalf("pfs was offered its own advertisement: %+v", got)
	}
}

// docs/PROTOCOL.md 4.4: a peer that DELETEs one of our relays gets a DELETE
// back and the next passing link instead; the refused link is offered
// again once the node's link set changes.
func TestAPeerDeletingARelayGetsTheNextLinkUntilTheNodeChanges(t *testing.T) {
	r := newRouter(t, "r", withMaxRelays(1))
	o1 := dialLeaf(t, r.tcpURL(), leafConfig{Label: "o1"})
	o2 := dialLeaf(t, r.tcpURL(), leafConfig{Label: "o2"})
	o1.advertise(hammer2Span("pfs", "h2", 0, 1)) // the best path
	o2.advertise(hammer2Span("pfs", "h2", 0, 2))
	eventually(t, "r holds both paths", func() error {
		if n := findNode(r.Tree(), "hammer2", "pfs"); n == nil || len(n.Adverts) != 2 {
			return fmt.Errorf("r holds pfs as %+v", n)
		}
		return nil
	})
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	rnssOf := func(leafRnss uint32) uint32 { return leafRnss + r.rnss() }
	waitRnss := func(what string, want uint32) {
		t.Helper()
		eventually(t, what, func() error {
			got := watcher.RelaysOf("pfs")
			if len(got) != 1 || got[0].Span.Rnss != want {
				return fmt.Errorf("watcher holds %+v", got)
			}
			return nil
		})
	}
	waitRnss("the watcher holds the best path", rnssOf(1))

	if err := watcher.DropRelay(watcher.RelaysOf("pfs")[0].MsgID); err != nil {
		t.Fatal(err)
	}
	waitRnss("the watcher is offered the next path", rnssOf(2))
	if got := relayCount(r.Tree(), "pfs", r.mustLinkTo("watcher")); got != 1 {
		t.Errorf("r relays %d links of pfs to the watcher after the refusal, want 1", got)
	}

	o3 := dialLeaf(t, r.tcpURL(), leafConfig{Label: "o3"})
	o3.advertise(hammer2Span("pfs", "h2", 0, 3)) // the node's link set changes
	waitRnss("the refused best path is offered again", rnssOf(1))
}
