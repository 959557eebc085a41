package span

// Fairness between neighbors. Every engine call runs under the cluster
// mutex, and the daemon calls the engine from each link's reader, so the
// time one call holds the mutex is time every other link's reader may
// wait: for its own span change, and so for the pings queued behind it.
// Two rules keep that wait short and charged to whoever caused it:
//
//   - A neighbor coming up or going down touches every node (ConnUp
//     relays the whole table to it, ConnDown closes those relays and
//     withdraws its spans). Those calls work in steps of at most holdWork
//     units and release the mutex between steps, so another link's call
//     waits for one step, not for the whole table. Between steps the
//     engine is consistent: a neighbor coming up is already in the
//     neighbor list (a change to a node it has not yet been offered
//     reaches it as any change does), and one going down is already out
//     of it (nothing new is offered to it, RelayClosed ignores it) while
//     its received spans leave one by one like ordinary withdrawals. Its
//     slot is freed only once every node forgot it.
//
//   - The work of every call is billed to the neighbor that caused it
//     (a span's fan-out to every other neighbor, the table sent to a
//     new neighbor, the withdrawal of a departed one's spans), and the
//     daemon takes the bill with Neighbor.TakeWork to charge the peer's work
//     budget (limits.link_rate), so that a churning peer is the one that
//     is slowed.
//
// A unit is one (node, neighbor) selection, one relay opened or one
// relay closed: each costs about what handling one message does.

import (
	"runtime"
	"sync/atomic"
)

// holdWork is the most work a stepped call does per hold of the mutex.
// At a few microseconds a unit it keeps a hold well under a millisecond.
const holdWork = 256

// workBill is what a neighbor's calls cost and the daemon has not taken
// yet. It is the only Neighbor state read without the mutex.
type workBill struct{ units atomic.Int64 }

// TakeWork returns the work units the engine did for c's sake since the
// last TakeWork (see steps.go), and resets the count. It may be called
// from any goroutine, without the engine's mutex.
func (c *Neighbor) TakeWork() int { return int(c.bill.units.Swap(0)) }

// cost is the engine's work counter: units done so far.
func (e *Engine) cost() uint64 { return e.work + e.budget.opened + e.closed }

// unlockFor ends a call made for c (nil for none) that began with the work
// counter at mark: the waiting relays are opened (unlock), and everything
// done since mark is billed to c.
func (e *Engine) unlockFor(c *Neighbor, mark uint64) {
	e.resume()
	done := e.cost() - mark
	e.longest = max(e.longest, done)
	if c != nil {
		c.bill.units.Add(int64(done))
	}
	e.mu.Unlock()
}

// stepper lets a call made for c release the mutex every holdWork units.
// The zero stepper (from a call already inside another one, or a test
// that wants one hold) never releases it.
type stepper struct {
	e    *Engine
	c    *Neighbor
	mark uint64 // work counter when the current hold began
}

// step releases the mutex and takes it again when the current hold has
// done holdWork units, billing them to s.c. Go's mutex hands itself to a
// goroutine that has waited over a millisecond, so the links waiting get
// their turn before the stepped call goes on; the stepped call also yields
// the processor in between, as a busy reader does (iocom's yieldEvery),
// so that the goroutines of quiet links (a ping to answer) are not queued
// behind whole tables either.
func (s *stepper) step() {
	if s.e == nil || s.e.cost()-s.mark < holdWork {
		return
	}
	s.e.unlockFor(s.c, s.mark)
	runtime.Gosched()
	s.e.mu.Lock()
	s.mark = s.e.cost()
	s.e.holds++
}
