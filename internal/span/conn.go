package span

import (
	"slices"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Peer is the engine's handle on one connection with an open LNK_CONN. The
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
	// relay, opens no more on this connection, and expects ConnDown.
	OpenSpan(s *dmsg.Span, r *Relay) (SpanTx, error)
}

// SpanTx is one relay transaction as the daemon sees it.
type SpanTx interface {
	MsgID() uint64 // the relay transaction's msgid on that link
	Close()        // send our DELETE; idempotent; must not block
}

// Conn is one connection with an open LNK_CONN from the peer: the filters
// it asked for, the spans received on it and the relays sent on it.
type Conn struct {
	peer  Peer
	info  dmsg.Conn
	seq   uint64            // arrival order, for stable Snapshot ordering
	idx   int               // position in Engine.conns
	slot  int               // index of this conn's state in every node.conns
	links map[uint64]*Link  // received spans by msgid
	sent  map[uint64]*Relay // relays sent on this conn, by their msgid
	dying bool              // OpenSpan failed: open nothing more, ConnDown follows
	down  bool

	charge connCharge // what it is charged for against the Budget
}

// Peer is the handle the connection was registered with.
func (c *Conn) Peer() Peer { return c.peer }

// Info is the peer's LNK_CONN as received.
func (c *Conn) Info() dmsg.Conn { return c.info }

// ConnUp registers the peer's LNK_CONN (its filters: PeerMask, PfsMask
// with 0 = all, PfsClid, ClLabel, PeerType) and relays every passing
// node's best K to it, including our own advertisement. A second ConnUp
// for the same Peer supersedes the first (as if ConnDown had been called).
func (e *Engine) ConnUp(p Peer, info dmsg.Conn) *Conn {
	e.mu.Lock()
	defer e.unlock()
	if old := e.byPeer[p]; old != nil {
		e.log.Warn("span: LNK_CONN replaced without ConnDown", zap.String("link", p.ID()))
		e.connDown(old)
	}
	c := &Conn{
		peer:  p,
		info:  info,
		seq:   e.nextSeq(),
		idx:   len(e.conns),
		slot:  e.allocSlot(),
		links: make(map[uint64]*Link),
		sent:  make(map[uint64]*Relay),
	}
	e.conns = append(e.conns, c)
	e.byPeer[p] = c
	for _, n := range e.nodes {
		if c.dying {
			break
		}
		e.reconcile(n, c)
	}
	e.logConn(p, "span: conn up", zap.String("link", p.ID()),
		zap.String("peer_label", info.FsLabel), zap.Uint8("peer_type", info.PeerType),
		zap.Uint64("peer_mask", info.PeerMask), zap.Uint64("pfs_mask", info.PfsMask),
		zap.Int("relays", len(c.sent)), zap.Bool("dying", c.dying))
	return c
}

// ConnDown is called when the LNK_CONN closed or the link was lost: every
// span received on c is withdrawn (cascading to relays elsewhere) and every
// relay out of c is closed (SpanTx.Close) and forgotten. Calling it twice,
// or after the Engine already superseded c, is a no-op.
func (e *Engine) ConnDown(c *Conn) {
	if c == nil {
		return
	}
	e.mu.Lock()
	defer e.unlock()
	e.connDown(c)
}

func (e *Engine) connDown(c *Conn) {
	if c.down {
		return
	}
	c.down = true
	e.removeConn(c)
	starved := e.takeStarved(c)
	closed := e.closeAllSent(c)
	withdrawn := e.withdrawAllReceived(c)
	e.rehomeStarved(starved)
	e.logConn(c.peer, "span: conn down", zap.String("link", c.peer.ID()),
		zap.Int("withdrawn", withdrawn), zap.Int("relays_closed", closed))
}

// removeConn takes c out of the conn list first, so that re-selection
// triggered by the withdrawals below never offers anything to it.
func (e *Engine) removeConn(c *Conn) {
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
// reproducible, and frees c's slot in every node: like ConnUp, this is one
// pass over the nodes for that one connection.
func (e *Engine) closeAllSent(c *Conn) int {
	ids := sortedKeys(c.sent)
	for _, id := range ids {
		e.closeRelay(c.sent[id])
	}
	for _, n := range e.nodes {
		if nc := n.stateFor(c); nc != nil {
			*nc = nodeConn{held: nc.held} // withdrawAllReceived counts it down
		}
	}
	e.freeSlots = append(e.freeSlots, c.slot)
	return len(ids)
}

// allocSlot hands out the lowest free slot, so node.conns stay as short as
// the number of connections.
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

// withdrawAllReceived removes every link received on c and then re-selects
// each affected node once (a node may hold several links from c).
func (e *Engine) withdrawAllReceived(c *Conn) int {
	ids := sortedKeys(c.links)
	var touched []*node
	seen := make(map[*node]bool)
	for _, id := range ids {
		l := c.links[id]
		e.detachLink(l)
		if !seen[l.node] {
			seen[l.node] = true
			touched = append(touched, l.node)
		}
	}
	c.links = nil
	for _, n := range touched {
		e.nodeChanged(n)
	}
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
