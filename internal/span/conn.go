package span

import (
	"slices"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Peer is the engine's handle on one neighbor with an open LNK_CONN. The
// daemon implements it over a link; tests over an in-memory network. Its
// methods are called with the engine's mutex held: they must not block and
// must not call back into the engine. Peer values are map keys, so they
// must be comparable (use a pointer type).
type Peer interface {
	// ID is the link id, e.g. "L3", used in logs and in Snapshot.
	ID() string
	// OpenSpan sends a LNK_SPAN CREATE carrying s (a copy the callee may
	// keep). The daemon later reports r via Engine.RelayClosed if the peer
	// DELETEs it. An error means the link is dying: the engine forgets the
	// relay, opens no more on this neighbor, and expects ConnDown.
	OpenSpan(s *dmsg.Span, r *Relay) (SpanTx, error)
}

// SpanTx is one relay transaction as the daemon sees it.
type SpanTx interface {
	MsgID() uint64 // the relay transaction's msgid on that link
	Close()        // send our DELETE; idempotent; must not block
}

// Neighbor is one neighbor with an open LNK_CONN from the peer: the filters
// it asked for, the spans received on it and the relays sent on it.
type Neighbor struct {
	peer  Peer
	info  dmsg.Conn
	seq   uint64             // arrival order, for stable Snapshot ordering
	idx   int                // position in Engine.conns
	slot  int                // index of this conn's state in every node.conns
	links map[uint64]*Advert // received spans by msgid
	sent  map[uint64]*Relay  // relays sent on this conn, by their msgid
	dying bool               // OpenSpan failed: open nothing more, ConnDown follows
	down  bool

	charge connCharge // what it is charged for against the Budget
	bill   workBill   // the work done for it, until the daemon takes it (steps.go)
}

// Peer is the handle the neighbor was registered with.
func (c *Neighbor) Peer() Peer { return c.peer }

// Info is the peer's LNK_CONN as received.
func (c *Neighbor) Info() dmsg.Conn { return c.info }

// ConnUp registers the peer's LNK_CONN (its filters: PeerMask, PfsMask
// with 0 = all, PfsClid, ClLabel, PeerType) and relays every passing
// node's best K to it, including our own advertisement. A second ConnUp
// for the same Peer supersedes the first (as if ConnDown had been called).
//
// Relaying the table works in steps (steps.go): other calls may run
// between them, and changes they make reach c as they reach any
// neighbor. The work is billed to c.
func (e *Engine) ConnUp(p Peer, info dmsg.Conn) *Neighbor {
	e.mu.Lock()
	st := stepper{e: e, mark: e.cost()}
	if old := e.byPeer[p]; old != nil {
		e.log.Warn("span: LNK_CONN replaced without ConnDown", zap.String("link", p.ID()))
		e.connDown(old, &stepper{})
	}
	c := &Neighbor{
		peer:  p,
		info:  info,
		seq:   e.nextSeq(),
		idx:   len(e.conns),
		slot:  e.allocSlot(),
		links: make(map[uint64]*Advert),
		sent:  make(map[uint64]*Relay),
	}
	st.c = c
	defer func() { e.unlockFor(c, st.mark) }()
	e.conns = append(e.conns, c)
	e.byPeer[p] = c
	e.offerAll(c, &st)
	e.logConn(p, "span: conn up", zap.String("link", p.ID()),
		zap.String("peer_label", info.FsLabel), zap.Uint8("peer_type", info.PeerType),
		zap.Uint64("peer_mask", info.PeerMask), zap.Uint64("pfs_mask", info.PfsMask),
		zap.Int("relays", len(c.sent)), zap.Bool("dying", c.dying))
	return c
}

// offerAll selects every node for a new neighbor c. A table larger than
// one step is walked from a copy of the node list, as nodes leaving
// between steps reorder it; a node gone meanwhile is skipped, and one
// added meanwhile was offered to c when it arrived.
func (e *Engine) offerAll(c *Neighbor, st *stepper) {
	nodes := e.nodes
	if len(nodes) > holdWork {
		nodes = slices.Clone(nodes)
	}
	for _, n := range nodes {
		if c.dying || c.down {
			break
		}
		if n.idx >= len(e.nodes) || e.nodes[n.idx] != n {
			continue
		}
		e.reconcile(n, c)
		st.step()
	}
}

// ConnDown is called when the LNK_CONN closed or the link was lost: every
// span received on c is withdrawn (cascading to relays elsewhere) and every
// relay out of c is closed (SpanTx.Close) and forgotten. Calling it twice,
// or after the Engine already superseded c, is a no-op.
//
// It works in steps (steps.go), billed to c: c leaves the neighbor list
// at once, so nothing more is offered to it, and its relays and spans go
// a step at a time while other calls run in between.
func (e *Engine) ConnDown(c *Neighbor) {
	if c == nil {
		return
	}
	e.mu.Lock()
	st := stepper{e: e, c: c, mark: e.cost()}
	defer func() { e.unlockFor(c, st.mark) }()
	e.connDown(c, &st)
}

func (e *Engine) connDown(c *Neighbor, st *stepper) {
	if c.down {
		return
	}
	c.down = true
	e.removeConn(c)
	closed := e.closeAllSent(c, st)
	withdrawn := e.withdrawAllReceived(c, st)
	e.freeSlot(c)
	// Taken last: until its spans were all withdrawn, a node could be
	// held back on c's list again.
	e.rehomeStarved(e.takeStarved(c))
	e.logConn(c.peer, "span: conn down", zap.String("link", c.peer.ID()),
		zap.Int("withdrawn", withdrawn), zap.Int("relays_closed", closed))
}

// removeConn takes c out of the conn list first, so that re-selection
// triggered by the withdrawals below never offers anything to it.
func (e *Engine) removeConn(c *Neighbor) {
	last := e.conns[len(e.conns)-1]
	e.conns[c.idx] = last
	last.idx = c.idx
	e.conns[len(e.conns)-1] = nil
	e.conns = e.conns[:len(e.conns)-1]
	if e.byPeer[c.peer] == c {
		delete(e.byPeer, c.peer)
	}
}

// closeAllSent closes every relay out of c, in msgid order so that runs are
// reproducible. c is already out of the neighbor list, so no selection
// touches its relays meanwhile.
func (e *Engine) closeAllSent(c *Neighbor, st *stepper) int {
	ids := sortedKeys(c.sent)
	for _, id := range ids {
		if r := c.sent[id]; r != nil {
			e.closeRelay(r)
		}
		st.step()
	}
	return len(ids)
}

// freeSlot forgets c's state in every node, once nothing of c is left
// there but closed relays, and hands its slot back: one pass over the
// nodes for that one neighbor, with no selection in it.
func (e *Engine) freeSlot(c *Neighbor) {
	for _, n := range e.nodes {
		if nc := n.stateFor(c); nc != nil {
			*nc = nodeConn{}
			n.tidy(c)
		}
	}
	e.freeSlots = append(e.freeSlots, c.slot)
}

// allocSlot hands out the lowest free slot, so slots stay as small as the
// number of neighbors.
func (e *Engine) allocSlot() int {
	if len(e.freeSlots) == 0 {
		e.slots++
		return e.slots - 1
	}
	i := slices.Index(e.freeSlots, slices.Min(e.freeSlots))
	s := e.freeSlots[i]
	e.freeSlots = slices.Delete(e.freeSlots, i, i+1)
	return s
}

// withdrawAllReceived removes every link received on c, in msgid order,
// each one as SpanWithdrawn would; a node that holds several links from c
// is re-selected once its last one from c is gone.
func (e *Engine) withdrawAllReceived(c *Neighbor, st *stepper) int {
	ids := sortedKeys(c.links)
	for _, id := range ids {
		l := c.links[id]
		delete(c.links, id)
		if l == nil || l.dead {
			continue
		}
		e.detachLink(l)
		if l.node.heldBy(c) == 0 {
			e.nodeChanged(l.node)
		}
		st.step()
	}
	c.links = nil
	return len(ids)
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
