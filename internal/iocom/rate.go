package iocom

import (
	"sync/atomic"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Fairness: the work one peer makes the router do is metered per link
// (Config.WorkRate, Config.WorkBurst). Every message the reader hands to
// the state machine costs one unit, replies excepted (meterWork), and handlers add what the message cost them
// beyond that (Link.Spend: a span relayed to every other link, a refusal).
// When the link has spent its burst, its own reader waits for the bucket
// to refill before reading on, so only that peer is slowed: the other
// links' readers never wait for it, and nothing is refused. Circuit
// traffic a router relays is not metered here; circuits have their own
// flow control.
//
// The reader settles its bill only every settleEvery units, so the common
// case costs an increment, not a clock read.

// settleEvery is how many units the reader runs up before it settles.
const settleEvery = 64

// workMeter is a link's token bucket. Only the reader goroutine touches
// it, except extra.
type workMeter struct {
	rate   float64 // units per second; <= 0 meters nothing
	burst  float64
	tokens float64
	last   time.Time    // when tokens was last refilled
	owed   int          // spent since then
	extra  atomic.Int64 // spent from other goroutines (Spend), not yet owed
}

func (w *workMeter) init(rate float64, burst int) {
	if burst <= 0 {
		burst = int(rate)
	}
	w.rate, w.burst, w.tokens = rate, float64(burst), float64(burst)
}

// spend charges n units, and what Spend added meanwhile; the reader pays
// at its next settle.
func (w *workMeter) spend(n int) {
	w.owed += n
	if w.extra.Load() != 0 {
		w.owed += int(w.extra.Swap(0))
	}
}

// due reports whether the reader should settle now.
func (w *workMeter) due() bool { return w.rate > 0 && w.owed >= settleEvery }

// settle refills the bucket, pays what is owed and returns how long the
// reader must wait before reading on (0: not at all).
func (w *workMeter) settle(now time.Time) time.Duration {
	if w.last.IsZero() {
		w.last = now
	}
	w.tokens = min(w.burst, w.tokens+now.Sub(w.last).Seconds()*w.rate)
	w.last = now
	w.tokens -= float64(w.owed)
	w.owed = 0
	if w.tokens >= 0 {
		return 0
	}
	return time.Duration(-w.tokens / w.rate * float64(time.Second))
}

// Spend charges the link's peer n more units of work for what one of its
// messages cost (Config.WorkRate): the reader pays before it reads on. It
// may be called from any goroutine.
func (c *Link) Spend(n int) { c.work.extra.Add(int64(n)) }

// meterWork charges the message the reader is about to handle and, when
// the peer has spent its burst, holds the reader until the bucket has
// refilled (or the link closes). Replies are free: the peer answers what
// we sent it (span relays, keepalives), so their number is ours to bound,
// and charging them would let a flood relayed to a peer spend that
// peer's budget.
func (c *Link) meterWork(h *dmsg.Header) {
	if h.Cmd&dmsg.FlagReply != 0 {
		return
	}
	c.work.spend(1)
	if !c.work.due() {
		return
	}
	wait := c.work.settle(time.Now())
	if wait <= 0 {
		return
	}
	// What we relayed must not wait for our peer's penalty.
	c.wakeRelayed(false)
	c.cfg.Metrics.ReaderPaused("link_rate")
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closing:
	}
}
