package span

import (
	"slices"
	"sort"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// clusterKey identifies a cluster (docs/PROTOCOL.md 4.2).
type clusterKey struct {
	peerType uint8
	clid     uuid.UUID
	label    string
}

type cluster struct {
	key   clusterKey
	nodes map[nodeKey]*node
}

// nodeKey identifies a node within its cluster.
type nodeKey struct {
	label string
	fsid  uuid.UUID
}

// node holds every link received for one node, best first. It exists
// while it holds at least one link.
type node struct {
	cluster *cluster
	key     nodeKey
	links   []*Advert  // sorted by Advert.before
	conns   connStates // selection state per neighbor (nodeconn.go)
	idx     int        // position in Engine.nodes, for O(1) removal
	budget  nodeBudget
	maxSeq  uint64 // the newest Seq of its verified links (verify.go)
}

// Advert is one advertisement of a node that we hold: a LNK_SPAN received on
// a neighbor, or our own advertisement (Conn() == nil, "via local").
// Its span never changes, so MsgID, Span and Neighbor may be read without the
// engine's mutex.
type Advert struct {
	node  *node
	conn  *Neighbor // nil: our own advertisement
	msgid uint64
	span  dmsg.Span
	seq   uint64 // arrival order: the stable tie-breaker
	dead  bool   // withdrawn; later calls naming it are no-ops
	proof Proof  // what its signature showed (verify.go)
}

// MsgID is the msgid of the LNK_SPAN transaction on its neighbor (0 for
// our own advertisement).
func (l *Advert) MsgID() uint64 { return l.msgid }

// Span is the span as received (dist and rnss as the sender sent them).
func (l *Advert) Span() dmsg.Span { return l.span }

// Neighbor is the neighbor the span arrived on, nil for our own.
func (l *Advert) Neighbor() *Neighbor { return l.conn }

// before is the node's sort order: our own advertisement first (it always
// counts as best), then trusted links (verify.go), then (dist, rnss) as
// unsigned integers, then arrival.
func (l *Advert) before(o *Advert) bool {
	if (l.conn == nil) != (o.conn == nil) {
		return l.conn == nil
	}
	if lt, ot := l.trusted(), o.trusted(); lt != ot {
		return lt
	}
	if l.span.Dist != o.span.Dist {
		return l.span.Dist < o.span.Dist
	}
	if l.span.Rnss != o.span.Rnss {
		return l.span.Rnss < o.span.Rnss
	}
	return l.seq < o.seq
}

// sameRank reports whether two links tie on (dist, rnss), which is what the
// symmetric option relays beyond K.
func sameRank(a, b *Advert) bool {
	return a.span.Dist == b.span.Dist && a.span.Rnss == b.span.Rnss
}

// attachLink files l under its cluster and node, creating them as needed.
// The caller re-selects the node afterwards (nodeChanged).
func (e *Engine) attachLink(l *Advert) {
	ck, nk := spanKeys(&l.span)
	cl := e.clusters[ck]
	if cl == nil {
		cl = &cluster{key: ck, nodes: make(map[nodeKey]*node)}
		e.clusters[ck] = cl
	}
	n := cl.nodes[nk]
	created := n == nil
	if created {
		n = &node{cluster: cl, key: nk, idx: len(e.nodes)}
		cl.nodes[nk] = n
		e.nodes = append(e.nodes, n)
	}
	l.node = n // before() needs it
	i := sort.Search(len(n.links), func(i int) bool { return l.before(n.links[i]) })
	n.links = append(n.links, nil)
	copy(n.links[i+1:], n.links[i:])
	n.links[i] = l
	if l.proof.Verified {
		n.refreshTrust() // a newer Seq demotes the others
	}
	e.links++
	e.chargeLink(l, created)
}

// spanKeys are the keys of the cluster and node a span is filed under.
func spanKeys(s *dmsg.Span) (clusterKey, nodeKey) {
	return clusterKey{s.PeerType, s.PfsClid, s.ClLabel}, nodeKey{s.FsLabel, s.PfsFsid}
}

// detachLink removes l from its node (and marks it dead) but leaves the
// node in place even when empty: nodeChanged closes its relays and then
// drops it.
func (e *Engine) detachLink(l *Advert) {
	n := l.node
	if i := slices.Index(n.links, l); i >= 0 {
		copy(n.links[i:], n.links[i+1:])
		n.links[len(n.links)-1] = nil // let the GC have it
		n.links = n.links[:len(n.links)-1]
	}
	if l.proof.Verified && l.proof.Seq == n.maxSeq {
		n.refreshTrust() // the older ones may be the newest again
	}
	l.dead = true
	e.links--
	e.unchargeLink(l)
}

// nodeChanged is called after the link set of n changed: it re-selects n
// on every neighbor and forgets n (and its cluster) once it is empty.
func (e *Engine) nodeChanged(n *node) {
	e.updateNode(n)
	if len(n.links) == 0 {
		e.removeNode(n)
	}
}

func (e *Engine) removeNode(n *node) {
	e.unstarve(n)
	last := e.nodes[len(e.nodes)-1]
	e.nodes[n.idx] = last
	last.idx = n.idx
	e.nodes[len(e.nodes)-1] = nil
	e.nodes = e.nodes[:len(e.nodes)-1]
	cl := n.cluster
	delete(cl.nodes, n.key)
	if len(cl.nodes) == 0 {
		delete(e.clusters, cl.key)
	}
}
