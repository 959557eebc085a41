package circ

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Per-circuit flow control as a router relays it (docs/PROTOCOL.md 11.2).
//
// Each direction of a circuit is a flow: messages arrive at one end and
// leave at the other. Upstream, on a link with CIRC_WINDOW, the router
// grants the sender a window and grants it again as what it received
// leaves toward the next hop (written to that link's socket), half a
// window at a time; a sender past its window gets the circuit aborted.
// Downstream it forwards only within the credit the next hop granted;
// what does not fit waits in the flow's Hold, so that the arriving link's
// reader never waits for one circuit, and the router never holds more of
// a flow than the window it granted. A flow that holds messages and gets
// no credit for limits.circuit_stall is aborted with IO.
//
// Links without the extension keep the behaviour DMSG had before it: a
// legacy next hop's window is the circuit's queue bound
// (limits.circuit_queue_bytes), credited back as its queue drains; a
// legacy sender is slowed by pausing its own link's reader while the
// flow holds more than that bound.
//
// Who touches what: the arriving link's reader runs forward and owns
// rxUsed, rxLimit and txLimit; txUsed belongs to it while nothing is held
// (holding is 0, and only that reader makes it non-zero) and to whoever
// holds mu otherwise. Credit from the next hop (its link's reader) and
// Written (its link's writer) add to txGranted, then release the hold
// under mu if holding says something waits: holding is stored before
// txGranted is read under mu, so no credit can slip between the two.
type flow struct {
	c        *Circuit
	from, to *end

	// Upstream: window > 0 when from's link has CIRC_WINDOW.
	window    int64
	granted   atomic.Int64 // credit granted upstream, in total
	ungranted atomic.Int64 // written downstream since the last grant
	rxUsed    int64        // bytes received (reader)
	rxLimit   int64        // granted, as the reader last read it

	// A legacy sender's backlog: what the flow holds and has queued
	// toward the next hop, and a waiter for it to drain (waitRoom).
	held atomic.Int64
	wait atomic.Pointer[chan struct{}]

	// Downstream: the next hop's credit in total, or for a legacy next hop
	// the queue bound plus what left its queue.
	legacyOut bool
	txGranted atomic.Int64
	txUsed    int64
	txLimit   int64 // txGranted, as the reader last read it

	holding atomic.Bool // the hold is not empty, for the reader's fast path

	mu       sync.Mutex
	hold     *iocom.Hold
	released int64 // txGranted when the hold was last released
	closed   bool
	progress time.Time   // the hold last moved (or started waiting)
	timer    *time.Timer // the stall check while something is held
}

// linkWindows returns the windows in force on a link: what we grant per
// circuit and what the peer grants, both 0 without CIRC_WINDOW.
func linkWindows(t *Table) (rx, tx int64) {
	r, x, ok := t.conn.CircWindows()
	if !ok {
		return 0, 0
	}
	return int64(r), int64(x)
}

// newFlow sets up the flow from one end to the other.
func newFlow(c *Circuit, from, to *end, queueBytes int64) *flow {
	fl := &flow{c: c, from: from, to: to, hold: iocom.NewHold(to.table.conn)}
	fl.window, _ = linkWindows(from.table)
	fl.granted.Store(fl.window)
	fl.rxLimit = fl.window
	_, tx := linkWindows(to.table)
	if tx == 0 {
		fl.legacyOut, tx = true, queueBytes
	}
	fl.txGranted.Store(tx)
	fl.txLimit = tx
	from.in, to.out = fl, fl
	return fl
}

// reserve is what the flow may make the router hold: the window it grants
// upstream, or the queue bound of a legacy sender.
func (fl *flow) reserve(queueBytes int64) int64 {
	if fl.window > 0 {
		return fl.window
	}
	return queueBytes
}

// forward relays f, which arrived at the flow's upstream end, within the
// next hop's credit, or holds it. It runs on the arriving link's reader
// and waits only for a legacy sender over its bound.
func (fl *flow) forward(f *iocom.Frame) {
	size := int64(f.EncodedSize())
	if fl.window > 0 {
		if fl.rxUsed+size > fl.rxLimit {
			fl.rxLimit = fl.granted.Load()
			if fl.rxUsed+size > fl.rxLimit {
				f.Drop()
				fl.overrun(fl.rxUsed + size - fl.rxLimit)
				return
			}
		}
		fl.rxUsed += size
	} else {
		fl.held.Add(size)
	}
	if !fl.holding.Load() {
		if fl.txUsed+size > fl.txLimit {
			fl.txLimit = fl.txGranted.Load()
		}
		if fl.txUsed+size <= fl.txLimit {
			fl.txUsed += size
			f.RelayTo(fl.to.table.conn, fl.to.key.id, !fl.to.key.local, fl)
			if fl.window == 0 {
				fl.throttle()
			}
			return
		}
	}
	fl.holdFrame(f)
	if fl.window == 0 {
		fl.throttle()
	}
}

// holdFrame keeps f in the flow's hold and sends what the credit allows.
func (fl *flow) holdFrame(f *iocom.Frame) {
	f.Flush(fl.to.table.conn) // may tell Accounters (fl too): not under mu
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		f.Drop()
		return
	}
	if f.HoldIn(fl.hold, fl.to.key.id, !fl.to.key.local, fl) != nil {
		return // the arriving link broke
	}
	if !fl.holding.Load() {
		fl.holding.Store(true)
		fl.progress = time.Now()
	}
	// Only new credit can let anything go: a frame that arrives while the
	// flow waits costs no look at the next hop's queue. (Credit added
	// after this load finds holding set and releases by itself.)
	if fl.txGranted.Load() != fl.released || fl.hold.Len() == 1 {
		fl.releaseLocked()
	}
	if fl.hold.Len() > 0 && fl.timer == nil {
		fl.timer = time.AfterFunc(time.Duration(fl.c.r.limits.stall.Load()), fl.checkStall)
	}
}

// releaseLocked queues what the hold keeps within the next hop's credit.
// Called with mu held.
func (fl *flow) releaseLocked() {
	if fl.closed || fl.hold.Len() == 0 {
		return
	}
	granted := fl.txGranted.Load()
	fl.released = granted
	avail := max(granted-fl.txUsed, 0)
	used := fl.hold.Release(int(min(avail, math.MaxInt32)))
	fl.txUsed += int64(used)
	if used > 0 {
		fl.progress = time.Now()
	}
	if fl.hold.Len() == 0 {
		fl.holding.Store(false)
	}
}

// credit adds what the next hop granted (a LNK_CREDIT, or a legacy queue
// drained) and sends what now fits.
func (fl *flow) credit(n int64) {
	for {
		old := fl.txGranted.Load()
		add := min(n, math.MaxInt64/2-old)
		if add <= 0 || fl.txGranted.CompareAndSwap(old, old+add) {
			break
		}
	}
	if !fl.holding.Load() {
		return
	}
	fl.mu.Lock()
	fl.releaseLocked()
	empty := fl.hold.Len() == 0
	fl.mu.Unlock()
	if empty {
		fl.c.freeIfDone() // a held DELETE may have been the last thing
	}
}

// Written is told by the next hop's link that relayed messages left its
// queue: the circuit counts them, the sender gets its credit back half a
// window at a time (or, a legacy sender, is let go on once half its
// bound is left), and a legacy next hop's window grows back.
func (fl *flow) Written(msgs, n int) {
	c := fl.c
	c.msgs.Add(uint64(msgs))
	c.bytes.Add(uint64(n))
	if fl.window > 0 {
		if fl.ungranted.Add(int64(n)) >= fl.window/2 {
			fl.grant()
		}
	} else if fl.held.Add(-int64(n)) <= c.r.limits.queueBytes.Load()/2 {
		if ch := fl.wait.Swap(nil); ch != nil {
			close(*ch)
		}
	}
	if fl.legacyOut {
		fl.credit(int64(n))
	}
}

// grant sends the sender the credit written downstream since the last
// grant.
func (fl *flow) grant() {
	g := fl.ungranted.Swap(0)
	if g <= 0 {
		return
	}
	fl.granted.Add(g)
	if fl.from.gone.Load() {
		return // the circuit is gone: nothing more may flow
	}
	e := fl.from
	e.table.conn.SendCredit(e.key.id, !e.key.local, int(g))
}

// overrun aborts a circuit whose sender went past the window it was
// granted: only that circuit, not the link it arrived on.
func (fl *flow) overrun(by int64) {
	r := fl.c.r
	e := fl.from
	r.metrics.ProtocolError("circuit_window_overrun")
	r.events.Warn("circuit_window_overrun", "circuit aborted: the peer sent past the window it was granted",
		zap.String("link", e.table.name), zap.String("peer", e.table.conn.RemoteAddr()),
		zap.Uint64("circuit", fl.c.id), zap.Int64("bytes_over", by))
	r.abort(fl.c, dmsg.ErrParam)
}

// checkStall runs limits.circuit_stall after the hold started waiting,
// and again as long as it moves: a flow whose hold has not moved for that
// long is aborted with IO at both ends.
func (fl *flow) checkStall() {
	stall := time.Duration(fl.c.r.limits.stall.Load())
	fl.mu.Lock()
	if fl.closed || fl.hold.Len() == 0 {
		fl.timer = nil
		fl.mu.Unlock()
		return
	}
	if idle := time.Since(fl.progress); idle < stall {
		fl.timer.Reset(stall - idle)
		fl.mu.Unlock()
		return
	}
	fl.timer = nil
	held := fl.hold.Bytes()
	fl.mu.Unlock()
	r := fl.c.r
	msg := "circuit stalled: the next hop granted no credit for limits.circuit_stall; aborting it"
	if fl.legacyOut {
		msg = "circuit stalled: its queue toward the next hop did not drain for limits.circuit_stall; aborting it"
	}
	r.metrics.LimitHit("circuit_stall")
	r.log.Warn(msg, append(fl.c.fields(), zap.String("toward", fl.to.table.name), zap.Int("held_bytes", held),
		zap.Duration("circuit_stall", stall))...)
	r.abort(fl.c, dmsg.ErrIO)
}

// close drops what the flow holds once the circuit is out of the tables.
func (fl *flow) close() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.closed = true
	fl.hold.Drop()
	if fl.timer != nil {
		fl.timer.Stop()
		fl.timer = nil
	}
}

// throttle pauses a legacy sender's link while the flow holds more than
// the circuit's queue bound, until half of it is left; a flow stuck that
// way for longer than the stall limit is aborted with IO, so that one
// dead consumer cannot block a legacy link forever.
func (fl *flow) throttle() {
	c := fl.c
	bound := c.r.limits.queueBytes.Load()
	if fl.held.Load() <= bound {
		return
	}
	// Register as a waiter before looking again, so that the writer
	// cannot drain the queue unseen between the two.
	ch := make(chan struct{})
	fl.wait.Store(&ch)
	if fl.held.Load() <= bound/2 {
		return
	}
	in := fl.from.table.conn
	in.Pausing()
	timer := time.NewTimer(time.Duration(c.r.limits.stall.Load()))
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		c.r.metrics.LimitHit("circuit_stall")
		c.r.log.Warn("circuit stalled: its queue stayed full for limits.circuit_stall; aborting it", c.fields()...)
		c.r.abort(c, dmsg.ErrIO)
	case <-c.done:
	case <-in.Done():
	case <-fl.to.table.conn.Done():
	}
}
