package span

// nodeConn is the selection state of one (node, neighbor) pair.
type nodeConn struct {
	relays  []relayRef // open relays, one per selected link
	refused []*Advert  // links the peer DELETEd: not offered again (docs/PROTOCOL.md 4.4)
	held    int32      // links of the node received on the neighbor (Budget.MaxSpansPerNode)
}

// idle reports whether the pair has nothing to remember: such a state is
// not kept.
func (nc *nodeConn) idle() bool {
	return len(nc.relays) == 0 && len(nc.refused) == 0 && nc.held == 0
}

// connState is the state of one (node, neighbor) pair under the
// neighbor's Neighbor.slot.
type connState struct {
	slot int32
	nodeConn
}

// connStates is a node's selection state per neighbor, sorted by slot,
// with an entry only for the neighbors that hold a relay, a refusal or
// a span of the node. A dense array indexed by slot costs every node an
// entry for every neighbor slot ever in use at once, which a router
// with many links and many nodes pays in hundreds of megabytes; most
// nodes are relayed on a few neighbors and received on one.
//
// A *nodeConn points into the array: it stays valid until an entry is
// added to or removed from the same node.
type connStates []connState

// find returns the index of slot's entry, or where it would go.
func (cs connStates) find(slot int32) (int, bool) {
	lo, hi := 0, len(cs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cs[m].slot < slot {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(cs) && cs[lo].slot == slot
}

// stateFor returns the state of (n, c), nil when there is none.
func (n *node) stateFor(c *Neighbor) *nodeConn {
	if i, ok := n.conns.find(int32(c.slot)); ok {
		return &n.conns[i].nodeConn
	}
	return nil
}

// grow returns the state of (n, c), adding an empty one when there is
// none; the caller fills it, or calls tidy.
func (n *node) grow(c *Neighbor) *nodeConn {
	slot := int32(c.slot)
	i, ok := n.conns.find(slot)
	if !ok {
		n.conns = n.conns.insert(i, connState{slot: slot})
	}
	return &n.conns[i].nodeConn
}

// exactUpTo is the length up to which connStates grow one entry at a
// time: most nodes are relayed on a few neighbors, and doubling would
// leave them a quarter empty on average.
const exactUpTo = 8

// insert puts x at i.
func (cs connStates) insert(i int, x connState) connStates {
	if len(cs) == cap(cs) && len(cs) < exactUpTo {
		grown := make(connStates, len(cs)+1)
		copy(grown, cs[:i])
		copy(grown[i+1:], cs[i:])
		grown[i] = x
		return grown
	}
	cs = append(cs, connState{})
	copy(cs[i+1:], cs[i:])
	cs[i] = x
	return cs
}

// tidy drops the state of (n, c) once it holds nothing, so that a node
// keeps entries only for the neighbors it is relayed on or received
// from. It invalidates pointers into n.conns.
func (n *node) tidy(c *Neighbor) {
	i, ok := n.conns.find(int32(c.slot))
	if !ok || !n.conns[i].idle() {
		return
	}
	copy(n.conns[i:], n.conns[i+1:])
	n.conns[len(n.conns)-1] = connState{} // let the GC have what it pointed to
	n.conns = n.conns[:len(n.conns)-1]
	if len(n.conns) == 0 {
		n.conns = nil
	} else if cap(n.conns) >= 8 && len(n.conns) <= cap(n.conns)/4 {
		n.conns = append(connStates(nil), n.conns...) // a hub's burst passed
	}
}
