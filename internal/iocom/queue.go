package iocom

import "github.com/dmsgd/dmsgd/internal/dmsg"

// The outbound queue has two classes, so that the link itself never waits
// behind circuit data:
//
//   - control: everything on circuit 0 (LNK_CONN, spans, pings, shell
//     output, the LNK_CIRC transactions' opening messages and replies)
//     and LNK_CREDIT, which carries no data and must never wait for it;
//   - data: every message inside a circuit, relayed or our own, and the
//     LNK_CIRC messages that carry DELETE, which must not overtake the
//     data of the circuit they close (docs/PROTOCOL.md 11.2).
//
// Each class is kept in order. The writer takes all control messages
// first, then data up to dataBatchMax bytes per batch (takeBatchLocked),
// so control that arrives while a large backlog of data is being written
// waits for one batch, not for the backlog. Circuit data in the queue is
// bounded by the windows the link's peer granted its circuits, so the data
// class never grows without bound on a link with flow control.

// dataBatchMax bounds the circuit data the writer commits to before it
// looks at the control class again: about one writev (lendMax).
const dataBatchMax = lendMax

// isControl reports whether m, sent outside any transaction's rules (a
// one-way message, a LNK_CREDIT), goes to the control class.
func isControl(m *dmsg.Msg) bool {
	return m.Circuit == 0 || dmsg.Base(m.Cmd) == dmsg.LnkCredit
}

// isControl reports whether m, a message of tx, goes to the control
// class: one on circuit 0, unless it closes a LNK_CIRC.
func (tx *Tx) isControl(m *dmsg.Msg) bool {
	return tx.scope.key == rootKey && (tx.cmd != dmsg.LnkCirc || m.Cmd&dmsg.FlagDelete == 0)
}

// queueEmptyLocked reports whether nothing waits in either class. Called
// with c.mu held.
func (c *Link) queueEmptyLocked() bool {
	return len(c.ctl) == 0 && c.qHead == len(c.q)
}

// pushLocked appends o to its class. It reports whether the queue was
// empty before, so that the writer must be woken. Called with c.mu held.
func (c *Link) pushLocked(o outMsg, control bool) bool {
	first := c.queueEmptyLocked()
	if control {
		c.ctl = append(c.ctl, o)
	} else {
		c.q = append(c.q, o)
	}
	return first
}

// takeBatchLocked appends to batch every control message and then data
// up to dataBatchMax bytes (at least one entry when there is any), and
// removes them from the queue. Called with c.mu held.
func (c *Link) takeBatchLocked(batch []outMsg) []outMsg {
	batch = append(batch, c.ctl...)
	clear(c.ctl)
	c.ctl = c.ctl[:0]
	n := 0
	k := c.qHead
	for k < len(c.q) && (n < dataBatchMax || k == c.qHead) {
		n += c.q[k].size()
		k++
	}
	batch = append(batch, c.q[c.qHead:k]...)
	clear(c.q[c.qHead:k])
	c.qHead = k
	switch {
	case c.qHead == len(c.q):
		c.q, c.qHead = c.q[:0], 0
	case c.qHead >= 1024 && 2*c.qHead >= len(c.q):
		// A queue that never empties keeps its head moving: move what is
		// left to the front before the slice grows without bound.
		left := copy(c.q, c.q[c.qHead:])
		clear(c.q[left:])
		c.q, c.qHead = c.q[:left], 0
	}
	return batch
}

// size is the entry's encoded size.
func (o *outMsg) size() int {
	if o.raw != nil {
		return len(o.raw)
	}
	return o.m.EncodedSize()
}
