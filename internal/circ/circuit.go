package circ

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// end is one side of a relayed circuit: the link it runs on, its circuit
// id there, and the LNK_CIRC transaction that carries it.
type end struct {
	c     *Circuit
	table *Table
	key   key
	tx    *iocom.Tx
	span  uint64      // the span msgid the circuit was built on, on this link
	gone  atomic.Bool // removed from its table

	in  *flow // what arrives at this end, toward the other
	out *flow // what leaves through this end
}

// Circuit is one circuit relayed by this router: a, the side it arrived
// on, and b, the side toward its target.
type Circuit struct {
	r      *Switch
	id     uint64
	a, b   *end
	target string
	since  time.Time

	msgs, bytes atomic.Uint64 // carried, counted as they leave toward either end
	reserved    int64         // charged to limits.circuit_memory (flow.reserve)

	done chan struct{} // closed when the circuit leaves the tables

	mu     sync.Mutex
	open   bool // the target accepted
	closed bool // out of the tables: nothing more is forwarded
}

// other returns the end opposite e.
func (c *Circuit) other(e *end) *end {
	if e == c.a {
		return c.b
	}
	return c.a
}

// fromA handles the opener side's LNK_CIRC messages.
func (c *Circuit) fromA(m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return
	}
	c.pass(c.b, m)
}

// fromB handles the target side's answers: its acceptance goes back to the
// opener, its DELETE too.
func (c *Circuit) fromB(m *dmsg.Msg) {
	// Taking c.mu also waits until setup has filled in b and registered
	// the circuit (setup holds it until then).
	accepted := m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagDelete == 0
	c.mu.Lock()
	if accepted {
		c.open = true
	}
	c.mu.Unlock()
	if accepted {
		c.a.tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError, Error: m.Error}})
		return
	}
	if m.Cmd&dmsg.FlagDelete != 0 {
		c.pass(c.a, m)
	}
}

// pass carries a DELETE from one side to the other. An abort (a link lost
// under one side arrives as ABORT|DELETE LOSTLINK) takes the circuit out
// of the tables at once and answers the side it came from; an orderly
// close follows the data still held for the other side, and frees the
// circuit once both LNK_CIRC transactions are finished and nothing is
// held, so data may still flow in the direction not yet closed.
func (c *Circuit) pass(to *end, m *dmsg.Msg) {
	from := c.other(to)
	if m.Cmd&dmsg.FlagAbort != 0 {
		if c.r.unregister(c, abortReason(m.Error)) {
			to.tx.Abort(m.Error)
		}
		// The side that aborted has had its DELETE: finish its
		// transaction (nothing is sent if we aborted it already).
		from.tx.Close()
		return
	}
	fl := to.out
	fl.mu.Lock()
	if c.isClosed() {
		// Aborted meanwhile (the DELETE may answer our own abort, which
		// is sent once the circuit is out of the tables): the other side
		// gets that abort, never a plain DELETE first.
		fl.mu.Unlock()
		return
	}
	to.tx.CloseBehind(fl.hold, m.Error)
	fl.mu.Unlock()
	c.freeIfDone()
}

// isClosed reports whether c is out of the tables.
func (c *Circuit) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// freeIfDone takes an orderly closed circuit out of the tables once both
// LNK_CIRC transactions are finished and no held message (a DELETE
// among them) is still to be sent.
func (c *Circuit) freeIfDone() {
	if !c.a.tx.Done() || !c.b.tx.Done() {
		return
	}
	for _, fl := range []*flow{c.a.in, c.b.in} {
		if fl.holding.Load() {
			return
		}
	}
	c.r.unregister(c, "closed")
}

// abort tears c down at once with code sent to both sides. Of all the
// paths that may abort a circuit at once (its span withdrawn on either
// side, a link lost, a stall, a window overrun), only the first sends
// anything: each side gets exactly one ABORT|DELETE, and no plain DELETE
// before it (pass sees the flows closed by unregister).
// It reports whether this call aborted it.
func (r *Switch) abort(c *Circuit, code uint32) bool {
	if !r.unregister(c, abortReason(code)) {
		return false
	}
	c.a.tx.Abort(code)
	c.b.tx.Abort(code)
	return true
}
