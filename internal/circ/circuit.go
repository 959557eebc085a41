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

	// queued counts the bytes relayed toward this end still in its link's
	// outbound queue; waiters block while it is over the circuit's bound.
	queued atomic.Int64
	wait   atomic.Pointer[chan struct{}]
}

// Written is told by the link's writer that relayed messages left the
// queue: the circuit counts them there, once per run rather than per
// message.
func (e *end) Written(msgs, n int) {
	e.c.msgs.Add(uint64(msgs))
	e.c.bytes.Add(uint64(n))
	if e.queued.Add(-int64(n)) > e.c.r.limits.queueBytes.Load()/2 {
		return
	}
	if ch := e.wait.Swap(nil); ch != nil {
		close(*ch)
	}
}

// Circuit is one circuit relayed by this router: a, the side it arrived
// on, and b, the side toward its target.
type Circuit struct {
	r      *Relay
	id     uint64
	a, b   *end
	target string
	since  time.Time

	msgs, bytes atomic.Uint64 // carried, counted as they leave toward either end

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

// forward relays f, which arrived at end in, to the opposite end, then
// waits while that end's queue is over the bound.
func (c *Circuit) forward(in *end, f *iocom.Frame) {
	out := c.other(in)
	size := int64(f.EncodedSize())
	full := out.queued.Add(size) > c.r.limits.queueBytes.Load()
	var room *chan struct{}
	if full {
		// Register as a waiter before queueing, so the writer cannot
		// drain the queue unseen between the two.
		ch := make(chan struct{})
		room = &ch
		out.wait.Store(room)
	}
	if err := f.RelayTo(out.table.conn, out.key.id, !out.key.local, out); err != nil {
		out.queued.Add(-size)
		return
	}
	if full {
		c.waitRoom(in, out, *room)
	}
}

// waitRoom pauses the arriving link's reader until the queue toward out
// drains below half its bound; a circuit stuck full for longer than the
// stall limit is aborted with IO so one dead consumer cannot block a link
// forever.
func (c *Circuit) waitRoom(in, out *end, ch chan struct{}) {
	if out.queued.Load() <= c.r.limits.queueBytes.Load()/2 {
		return
	}
	in.table.conn.Stall(true)
	defer in.table.conn.Stall(false)
	timer := time.NewTimer(time.Duration(c.r.limits.stall.Load()))
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		c.r.log.Warn("circuit stalled; aborting it", c.fields()...)
		c.r.abort(c, dmsg.ErrIO)
	case <-c.done:
	case <-in.table.conn.Done():
	case <-out.table.conn.Done():
	}
}
