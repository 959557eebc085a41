package span

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// maxHops is the farthest an origin is seen: its neighbours hold it at
// dist 0, so a router h hops away holds dist h-1, and dist MaxDist is the
// last one relayed to.
const maxHops = MaxDist + 1

// violations collects invariant failures, keeping the first few.
type violations []string

func (v *violations) add(format string, args ...any) {
	if len(*v) < 25 {
		*v = append(*v, fmt.Sprintf(format, args...))
	}
}

// check fails the test unless the settled network satisfies the span
// invariant (see violations).
func (n *network) check(when string) {
	n.tb.Helper()
	if v := n.violations(); len(v) > 0 {
		n.tb.Fatalf("invariant broken %s:\n  %s", when, strings.Join(v, "\n  "))
	}
}

// violations checks a quiet network: per router, its state is internally
// consistent, matches a from-scratch selection and matches both peers'
// view of every transaction on the wire; per origin, every router holds it
// iff a breadth-first search puts it within maxHops, at the right dist,
// learnt from a neighbour on a shortest path.
func (n *network) violations() violations {
	var v violations
	if len(n.active) != 0 {
		v.add("network not quiet: %d directions with messages", len(n.active))
	}
	for _, h := range n.hosts {
		if h.isRouter() {
			n.checkRouter(h, &v)
		}
	}
	n.checkOrigins(&v)
	return v
}

func (n *network) checkRouter(h *host, v *violations) {
	e := h.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	conns := 0
	for _, x := range h.ends {
		if x.conn == nil || x.conn.down || x.conn != e.byPeer[Peer(x)] {
			v.add("%s %s: no live Conn for the end", h.name, x.id)
			continue
		}
		conns++
		checkWire(h, x, v)
	}
	if conns != len(e.conns) {
		v.add("%s: engine has %d conns, harness %d", h.name, len(e.conns), conns)
	}
	checkTree(h, v)
	checkCharges(h, v)
}

// checkCharges recounts what each neighbor is charged for from the
// engine's state: spans, owned nodes, relays of its spans, per-node span
// counts and the starved lists.
func checkCharges(h *host, v *violations) {
	e := h.eng
	spans, nodes, relays := map[*Neighbor]int{}, map[*Neighbor]int{}, map[*Neighbor]int{}
	total, starved := 0, 0
	for _, c := range e.conns {
		for _, r := range c.sent {
			if r.link.conn != nil {
				relays[r.link.conn]++
			}
		}
		for n := c.charge.starved.head; n != nil; n = n.budget.next {
			starved++
			if n.budget.starvedOn != c {
				v.add("%s: node %s on the starved list of %s says %v", h.name, n.key.label, c.peer.ID(), n.budget.starvedOn)
			}
		}
	}
	for _, nd := range e.nodes {
		held := map[*Neighbor]int{}
		for _, l := range nd.links {
			if l.conn != nil {
				held[l.conn]++
				spans[l.conn]++
				total++
			}
		}
		for c, n := range held {
			if got := nd.heldBy(c); got != n {
				v.add("%s: node %s counts %d spans of %s, holds %d", h.name, nd.key.label, got, c.peer.ID(), n)
			}
		}
		if o := nd.budget.owner; o != nil {
			nodes[o]++
			if held[o] == 0 {
				v.add("%s: node %s is charged to %s, which holds no span of it", h.name, nd.key.label, o.peer.ID())
			}
		} else if len(held) > 0 && nd.links[0].conn != nil {
			v.add("%s: node %s is charged to nobody", h.name, nd.key.label)
		}
	}
	for _, c := range e.conns {
		if c.charge.spans.Load() != int64(spans[c]) || c.charge.nodes != nodes[c] || c.charge.relays != relays[c] {
			v.add("%s %s: charged %d spans %d nodes %d relays, holds %d %d %d", h.name, c.peer.ID(),
				c.charge.spans.Load(), c.charge.nodes, c.charge.relays, spans[c], nodes[c], relays[c])
		}
	}
	if e.budget.spans.Load() != int64(total) || e.budget.starved != starved {
		v.add("%s: budget counts %d spans %d starved, holds %d %d", h.name, e.budget.spans.Load(), e.budget.starved, total, starved)
	}
}

// checkWire matches the engine's view of one neighbor with what each
// side of the wire holds open: every relay is an open transaction that the
// peer holds with the span we meant to send, every received advertisement is an
// open transaction of the peer (and, for a router peer, a live relay), and
// nothing else is open.
func checkWire(h *host, x *end, v *violations) {
	e, c := h.eng, x.conn
	for id, r := range c.sent {
		tx, rx := x.sent[id], x.peer.recv[id]
		switch {
		case r.dead || r.link.dead:
			v.add("%s %s: relay %d is dead or of a dead link", h.name, x.id, id)
		case tx == nil || tx.closed || tx.relay != r:
			v.add("%s %s: relay %d has no open transaction", h.name, x.id, id)
		case rx == nil || rx.refused || heldSpan(rx) != sentSpan(e, r):
			v.add("%s %s: relay %d not held by the peer as sent", h.name, x.id, id)
		}
	}
	if len(x.sent) != len(c.sent) || len(x.peer.recv) != len(c.sent) {
		v.add("%s %s: %d relays, %d open on our side, %d held by the peer",
			h.name, x.id, len(c.sent), len(x.sent), len(x.peer.recv))
	}
	for id, l := range c.links {
		checkReceived(h, x, id, l, v)
	}
	if len(x.recv) != len(c.links) || len(x.peer.sent) != len(c.links) {
		v.add("%s %s: %d links, %d received, %d open at the peer",
			h.name, x.id, len(c.links), len(x.recv), len(x.peer.sent))
	}
}

func checkReceived(h *host, x *end, id uint64, l *Advert, v *violations) {
	rx, ptx := x.recv[id], x.peer.sent[id]
	switch {
	case l.dead || l.conn != x.conn || l.msgid != id:
		v.add("%s %s: link %d is dead or misfiled", h.name, x.id, id)
	case rx == nil || rx.link != l:
		v.add("%s %s: link %d not received here", h.name, x.id, id)
	case ptx == nil || ptx.closed:
		v.add("%s %s: link %d has no open transaction at the peer (stale)", h.name, x.id, id)
	case x.peer.owner.isRouter() && (ptx.relay == nil || ptx.relay.dead || ptx.relay.link.dead):
		v.add("%s %s: link %d is a relay the peer no longer has (stale)", h.name, x.id, id)
	case x.peer.owner.isRouter() && sentSpan(x.peer.owner.eng, ptx.relay) != l.span:
		v.add("%s %s: link %d differs from the relay the peer sent", h.name, x.id, id)
	case !x.peer.owner.isRouter() && *x.peer.owner.ad != l.span:
		v.add("%s %s: link %d differs from the leaf's advertisement", h.name, x.id, id)
	}
}

// sentSpan states docs/PROTOCOL.md 4.3 independently of the engine: a relay
// carries dist+1 and rnss plus the router's (wrapping); our own
// advertisement goes out as held (dist 0, our rnss).
func sentSpan(e *Engine, r *Relay) dmsg.Span {
	s := r.link.span
	if r.link.conn != nil {
		s.Dist, s.Rnss = s.Dist+1, s.Rnss+e.rnss
	}
	return s
}

func heldSpan(rx *hrx) dmsg.Span {
	if rx.link != nil {
		return rx.link.span
	}
	return *rx.span
}

// checkTree checks the engine's model: counts, sort order, and that the
// relays of every (node, conn) are exactly the reference selection.
func checkTree(h *host, v *violations) {
	e := h.eng
	links, relays := 0, 0
	for _, c := range e.conns {
		relays += len(c.sent)
	}
	for i, nd := range e.nodes {
		links += len(nd.links)
		if nd.idx != i || len(nd.links) == 0 || e.clusters[nd.cluster.key] != nd.cluster || nd.cluster.nodes[nd.key] != nd {
			v.add("%s: node %s misfiled or empty", h.name, nd.key.label)
			continue
		}
		if !slices.Equal(nd.links, refSorted(nd.links)) {
			v.add("%s: node %s links out of order", h.name, nd.key.label)
		}
		for _, c := range e.conns {
			checkSelection(h, nd, c, v)
		}
		checkConnStates(h, nd, v)
	}
	if links != e.links || relays != e.relays {
		v.add("%s: counted %d links %d relays, engine says %d %d", h.name, links, relays, e.links, e.relays)
	}
}

// checkConnStates checks that a node keeps state only for neighbors
// that are up and that hold something of it, one entry each, by slot.
func checkConnStates(h *host, nd *node, v *violations) {
	live := map[int32]bool{}
	for _, c := range h.eng.conns {
		live[int32(c.slot)] = true
	}
	for i := range nd.conns {
		nc := &nd.conns[i]
		switch {
		case i > 0 && nd.conns[i-1].slot >= nc.slot:
			v.add("%s: node %s: states out of slot order", h.name, nd.key.label)
		case nc.idle():
			v.add("%s: node %s keeps an idle state for slot %d", h.name, nd.key.label, nc.slot)
		case !live[nc.slot]:
			v.add("%s: node %s keeps a state for slot %d, which no connection has", h.name, nd.key.label, nc.slot)
		}
	}
}

func checkSelection(h *host, nd *node, c *Neighbor, v *violations) {
	e := h.eng
	nc := nd.stateFor(c)
	var got, refused []*Advert
	if nc != nil {
		for _, x := range nc.relays {
			if x.r.link != x.link || x.r.conn != c || x.r.dead {
				v.add("%s: node %s on %s: relay bookkeeping broken", h.name, nd.key.label, c.peer.ID())
			}
			got = append(got, x.link)
		}
		refused = nc.refused
	}
	want := refSelect(refSorted(nd.links), nd.cluster.key, c, e.maxRelays, e.symmetric, refused)
	if !sameLinks(got, want) && e.budget.limits().MaxRelays > 0 {
		checkHeldBack(h, nd, c, got, want, refused, v)
		return
	}
	if !sameLinks(got, want) {
		v.add("%s: node %s on %s relays %s, want %s", h.name, nd.key.label, c.peer.ID(), linkList(got), linkList(want))
	}
	if !e.symmetric && len(got) > e.maxRelays {
		v.add("%s: node %s on %s has %d relays > K", h.name, nd.key.label, c.peer.ID(), len(got))
	}
}

// checkHeldBack is the selection invariant under a relay budget: a pair
// may have fewer relays than its selection, or a stand-in for a missing
// one, but only while its node waits for budget, and never a relay of a
// link it should not carry.
func checkHeldBack(h *host, nd *node, c *Neighbor, got, want, refused []*Advert, v *violations) {
	where := fmt.Sprintf("%s: node %s on %s", h.name, nd.key.label, c.peer.ID())
	if nd.budget.starvedOn == nil {
		v.add("%s relays %s, want %s, and the node does not wait for budget", where, linkList(got), linkList(want))
	}
	if len(got) > len(want) {
		v.add("%s has %d relays for a selection of %d", where, len(got), len(want))
	}
	for _, l := range got {
		if l.dead || !slices.Contains(nd.links, l) || !refPasses(l, nd.cluster.key, c) || slices.Contains(refused, l) {
			v.add("%s relays %s, which it must not carry", where, linkList([]*Advert{l}))
		}
	}
}

// refSorted is an independent statement of docs/PROTOCOL.md 4.2's link order,
// with 11.3's preference for verified links of the newest sequence.
func refSorted(ls []*Advert) []*Advert {
	out := slices.Clone(ls)
	trusted := refTrusted(ls)
	slices.SortStableFunc(out, func(a, b *Advert) int {
		ka := [5]uint64{1, 1, uint64(a.span.Dist), uint64(a.span.Rnss), a.seq}
		kb := [5]uint64{1, 1, uint64(b.span.Dist), uint64(b.span.Rnss), b.seq}
		if a.conn == nil {
			ka[0] = 0
		}
		if b.conn == nil {
			kb[0] = 0
		}
		if trusted[a] {
			ka[1] = 0
		}
		if trusted[b] {
			kb[1] = 0
		}
		return slices.Compare(ka[:], kb[:])
	})
	return out
}

// refTrusted states docs/PROTOCOL.md 11.3's trust: verified, and of the newest
// sequence number among the node's verified links.
func refTrusted(ls []*Advert) map[*Advert]bool {
	var newest uint64
	for _, l := range ls {
		if l.proof.Verified {
			newest = max(newest, l.proof.Seq)
		}
	}
	out := make(map[*Advert]bool)
	for _, l := range ls {
		out[l] = l.proof.Verified && l.proof.Seq == newest
	}
	return out
}

// refSelect is an independent statement of docs/PROTOCOL.md 4.3's selection,
// with 11.3's rule: a node with a trusted received advertisement relays only
// trusted ones.
func refSelect(sorted []*Advert, k clusterKey, c *Neighbor, K int, sym bool, refused []*Advert) []*Advert {
	var out []*Advert
	trusted := refTrusted(sorted)
	anyTrusted := false
	for _, l := range sorted {
		anyTrusted = anyTrusted || trusted[l] && l.conn != nil
	}
	for _, l := range sorted {
		if anyTrusted && l.conn != nil && !trusted[l] {
			continue
		}
		if !refPasses(l, k, c) || slices.Contains(refused, l) {
			continue
		}
		if len(out) >= K {
			last := out[K-1]
			if !sym || l.span.Dist != last.span.Dist || l.span.Rnss != last.span.Rnss {
				break
			}
		}
		out = append(out, l)
	}
	return out
}

func refPasses(l *Advert, k clusterKey, conn *Neighbor) bool {
	s, c := l.span, conn.info
	rule1 := s.Dist < 16
	rule2 := l.conn != conn
	rule3 := k.peerType < 64 && c.PeerMask>>k.peerType&1 == 1 &&
		s.PfsType < 64 && (c.PfsMask == 0 || c.PfsMask>>s.PfsType&1 == 1)
	rule4 := c.PeerType != k.peerType ||
		((c.PfsClid == uuid.Nil || c.PfsClid == k.clid) && (c.ClLabel == "" || c.ClLabel == k.label))
	rule5 := c.PfsFsid == uuid.Nil || c.PfsFsid != s.PfsFsid
	return rule1 && rule2 && rule3 && rule4 && rule5
}

func sameLinks(a, b []*Advert) bool {
	if len(a) != len(b) {
		return false
	}
	for _, l := range a {
		if !slices.Contains(b, l) {
			return false
		}
	}
	return true
}

func linkList(ls []*Advert) string {
	var parts []string
	for _, l := range ls {
		via := ViaLocal
		if l.conn != nil {
			via = l.conn.peer.ID()
		}
		parts = append(parts, fmt.Sprintf("{dist %d rnss %d via %s}", l.span.Dist, l.span.Rnss, via))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkOrigins runs a breadth-first search from every origin (a router
// advertising itself, or a live leaf) and checks every router's view of it.
func (n *network) checkOrigins(v *violations) {
	held := make(map[*host]int) // nodes each router should hold
	for _, o := range n.hosts {
		if o.down || o.forger {
			continue // a forger's advertisement is of another node
		}
		hops := n.bfs(o)
		key, nk := originKeys(o)
		for _, r := range n.hosts {
			if !r.isRouter() {
				continue
			}
			h := hops[r.idx]
			if h >= 0 && h <= maxHops {
				held[r]++
			}
			n.checkView(o, r, h, hops, key, nk, v)
		}
	}
	for _, r := range n.hosts {
		if r.isRouter() && len(r.eng.nodes) != held[r] {
			v.add("%s holds %d nodes, %d origins are in reach (stale nodes)", r.name, len(r.eng.nodes), held[r])
		}
	}
}

func originKeys(o *host) (clusterKey, nodeKey) {
	s := routerSpan(o.name)
	if o.ad != nil {
		s = *o.ad
	}
	return clusterKey{s.PeerType, s.PfsClid, s.ClLabel}, nodeKey{s.FsLabel, s.PfsFsid}
}

// checkView checks router r's node for origin o, h hops away (-1 when
// unreachable).
func (n *network) checkView(o, r *host, h int, hops []int, key clusterKey, nk nodeKey, v *violations) {
	var nd *node
	if cl := r.eng.clusters[key]; cl != nil {
		nd = cl.nodes[nk]
	}
	switch {
	case h < 0 || h > maxHops:
		if nd != nil {
			v.add("%s holds %s, %d hops away (want absent)", r.name, o.name, h)
		}
	case nd == nil:
		v.add("%s lacks %s, %d hops away", r.name, o.name, h)
	case h == 0:
		if nd.links[0].conn != nil {
			v.add("%s: own advertisement is not its best link", r.name)
		}
		if len(nd.links) != 1 {
			v.add("%s holds its own node's advertisement from a peer: %s", r.name, linkList(nd.links))
		}
	default:
		best := nd.links[0]
		if n.signed && o.isRouter() && !best.trusted() {
			v.add("%s holds %s best %s, which is not verified", r.name, o.name, linkList(nd.links[:1]))
		}
		if best.conn == nil || best.span.Dist != uint32(h-1) {
			v.add("%s holds %s best %s, want dist %d", r.name, o.name, linkList(nd.links[:1]), h-1)
			return
		}
		if via := best.conn.peer.(*end).peer.owner; hops[via.idx] != h-1 {
			v.add("%s holds %s best via %s, which is %d hops from it, want %d", r.name, o.name, via.name, hops[via.idx], h-1)
		}
	}
}

// bfs returns the hop count from o to every host (-1 when unreachable).
// Only routers relay, so the search expands from o and from routers.
func (n *network) bfs(o *host) []int {
	hops := make([]int, len(n.hosts))
	for i := range hops {
		hops[i] = -1
	}
	hops[o.idx] = 0
	queue := []*host{o}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if u != o && !u.isRouter() {
			continue
		}
		for _, x := range u.ends {
			w := x.peer.owner
			if hops[w.idx] < 0 {
				hops[w.idx] = hops[u.idx] + 1
				queue = append(queue, w)
			}
		}
	}
	return hops
}

// checkZero fails unless every engine is empty and nothing is in flight.
func (n *network) checkZero() {
	n.tb.Helper()
	if len(n.active) != 0 {
		n.tb.Fatalf("%d directions still hold messages", len(n.active))
	}
	for _, h := range n.hosts {
		if h.isRouter() {
			if st := h.eng.Stats(); st != (Stats{}) {
				n.tb.Fatalf("%s not empty after shutdown: %+v", h.name, st)
			}
		}
		if len(h.ends) != 0 {
			n.tb.Fatalf("%s still has %d links", h.name, len(h.ends))
		}
	}
}
