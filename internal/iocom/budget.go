package iocom

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The outbound queue budget (Config.QueueBytes) and the slow-consumer
// policy.
//
// Everything queued on a link is charged to it as it is queued: control
// messages, replies, keepalives and relayed circuit frames alike. Queueing
// never blocks and never fails for lack of budget: the router must not
// wait for one peer, and most of what it queues is state it owes the peer
// (span relays, withdrawals) whose loss would corrupt the peer's view.
// Instead the budget acts on the peer in two ways.
//
//   - Replies. What the link queues in answer to the peer's own messages
//     carries the REPLY flag: keepalive answers, shell output, the answers
//     in transactions the peer opened. While those replies alone exceed the
//     budget, the link's reader stops reading (waitReplyRoom), so a peer
//     that sends requests and does not read the answers (a ping flood, a
//     loop of `tree --format json`) cannot grow its queue further.
//
//     Pausing on the whole queue instead would deadlock two routers that
//     dump large span tables to each other at link-up: each queue is over
//     budget with relays the other has not read yet, and neither would
//     read the other again. Replies never grow that way: each span
//     received costs a 64-byte answer, so replies stay far below what the
//     peer itself sent and reads.
//
//   - Slow consumers. A link whose queue is over the budget must drain,
//     as NATS closes a client that does not keep up. While the queue is
//     over budget it is checked at the end of every grace period
//     (Config.SlowConsumerGrace): the peer is a slow consumer, and the link
//     is closed, if it took nothing from the socket during the period, or
//     if its backlog grew during this period and the one before (it reads,
//     but slower than the router queues for it, so the queue would grow
//     without end). A peer reading at any steady pace survives a
//     legitimate burst of any size (a new link receiving the whole span
//     table): the burst makes its backlog grow once, then it shrinks. The
//     bytes taken are counted as the socket takes them (outBuf.written),
//     so progress inside one large write batch counts; a peer must take
//     at least one write (up to the write buffer plus lent chunks, some
//     hundreds of KiB) per grace period.

// DefaultSlowConsumerGrace is Config.SlowConsumerGrace's default.
const DefaultSlowConsumerGrace = 5 * time.Second

// queueBudget is the accounting of a Link's outbound queue, guarded by the
// Link's mutex (Link.qBytes is the total queued).
type queueBudget struct {
	replies int    // queued bytes of replies to the peer's own messages
	charged uint64 // bytes ever queued: with outBuf.written, the backlog

	// replyRoom is closed when replies fall back within the budget
	// (Link.repliesOver says they are over, for the reader's check
	// without the mutex).
	replyRoom chan struct{}

	// The slow-consumer check: armed while the queue is over budget.
	slow    *time.Timer
	slowGen uint64 // invalidates a timer that fired while being stopped
	mark    uint64 // the backlog when the current grace period began
	taken   uint64 // outBuf.written then
	grew    bool   // the backlog grew during the previous grace period
}

// isReply reports whether a message the link queues answers the peer.
func isReply(m *dmsg.Msg) bool { return m.Cmd&dmsg.FlagReply != 0 }

// chargeLocked accounts n bytes queued on the link; reply says they answer
// the peer's own messages. Called with c.mu held wherever the queue grows.
func (c *Link) chargeLocked(n int, reply bool) {
	c.qBytes += n
	c.qb.charged += uint64(n)
	limit := c.cfg.queueBytes()
	if reply {
		c.qb.replies += n
		if c.qb.replies > limit {
			c.repliesOver.Store(true)
		}
	}
	if c.qBytes > limit && c.qb.slow == nil && !c.dead {
		c.armSlowCheckLocked()
	}
}

// releaseLocked accounts n bytes, replies of them replies, that left the
// queue. Called with c.mu held wherever the queue shrinks.
func (c *Link) releaseLocked(n, replies int) {
	c.qBytes -= n
	c.qb.replies -= replies
	limit := c.cfg.queueBytes()
	if c.room != nil && c.qBytes < limit {
		close(c.room)
		c.room = nil
	}
	if c.qb.replies <= limit && c.repliesOver.Load() {
		c.repliesOver.Store(false)
		if c.qb.replyRoom != nil {
			close(c.qb.replyRoom)
			c.qb.replyRoom = nil
		}
	}
	if c.qBytes <= limit {
		c.stopSlowCheckLocked()
	}
}

// isReply reports whether a queue entry was charged as a reply: a
// message of this link's own, not a relayed one.
func (o *outMsg) isReply() bool {
	return o.m != nil && !o.release && isReply(o.m)
}

// stopSlowCheckLocked stops the slow-consumer check: the queue is back
// within budget, or the link is going down. Called with c.mu held.
func (c *Link) stopSlowCheckLocked() {
	if c.qb.slow != nil {
		c.qb.slow.Stop()
		c.qb.slow = nil
		c.qb.slowGen++
	}
}

// backlogLocked returns the bytes queued that the socket has not taken.
func (c *Link) backlogLocked() uint64 {
	w := c.out.written.Load()
	if w >= c.qb.charged {
		return 0
	}
	return c.qb.charged - w
}

// armSlowCheckLocked starts a grace period: the queue just went over
// budget.
func (c *Link) armSlowCheckLocked() {
	grace := c.cfg.slowConsumerGrace()
	if grace <= 0 {
		return
	}
	c.qb.mark, c.qb.taken, c.qb.grew = c.backlogLocked(), c.out.written.Load(), false
	gen := c.qb.slowGen
	c.qb.slow = time.AfterFunc(grace, func() { c.checkSlowConsumer(gen) })
}

// checkSlowConsumer ends a grace period of a queue still over budget: the
// peer must have taken something from it, and not fallen further behind
// for two periods in a row, or the link is closed.
func (c *Link) checkSlowConsumer(gen uint64) {
	c.mu.Lock()
	if c.dead || c.qb.slowGen != gen || c.qb.slow == nil {
		c.mu.Unlock()
		return
	}
	backlog, taken := c.backlogLocked(), c.out.written.Load()
	growing := backlog > c.qb.mark
	if taken != c.qb.taken && !(growing && c.qb.grew) {
		c.qb.mark, c.qb.taken, c.qb.grew = backlog, taken, growing
		c.qb.slow.Reset(c.cfg.slowConsumerGrace())
		c.mu.Unlock()
		return
	}
	c.qb.slow = nil
	c.qb.slowGen++
	queued := c.qBytes
	c.mu.Unlock()
	err := &SlowConsumerError{Queued: queued, Limit: c.cfg.queueBytes(), Grace: c.cfg.slowConsumerGrace()}
	c.cfg.Metrics.LimitHit("queue_bytes_per_link")
	c.cfg.Events.Warn("slow_consumer", "link closed: slow consumer",
		zap.String("link", c.cfg.ID), zap.String("peer", c.remote), zap.Error(err))
	c.fail(err)
}

// SlowConsumerError reports a link closed because its peer did not take
// what was queued for it.
type SlowConsumerError struct {
	Queued, Limit int
	Grace         time.Duration
}

func (e *SlowConsumerError) Error() string {
	return fmt.Sprintf("slow consumer: %d bytes queued, over the %d-byte budget, and the peer does not keep up (grace %v)",
		e.Queued, e.Limit, e.Grace)
}

// waitReplyRoom holds the reader while the replies queued for the peer
// exceed the budget. The reader calls it before each message, so the
// fast path is one atomic load.
func (c *Link) waitReplyRoom() {
	if c.repliesOver.Load() {
		c.awaitReplyRoom(true)
	}
}

// WaitReplyRoom blocks while the replies queued on the link exceed its
// budget, or until the link closes. A sender producing a large answer in
// pieces (shell output) calls it between pieces, so that one request of a
// peer that does not read cannot queue much more than the budget. It may
// be called from any goroutine, the link's handlers included.
func (c *Link) WaitReplyRoom() error {
	if c.repliesOver.Load() {
		c.awaitReplyRoom(false)
	}
	if c.isClosing() {
		return ErrClosed
	}
	return nil
}

// awaitReplyRoom waits until the replies are within budget or the link
// closes; reader says the caller is the link's reader goroutine, whose
// staged relays must not wait for our peer.
func (c *Link) awaitReplyRoom(reader bool) {
	c.mu.Lock()
	if c.dead || c.qb.replies <= c.cfg.queueBytes() {
		c.mu.Unlock()
		return
	}
	if c.qb.replyRoom == nil {
		c.qb.replyRoom = make(chan struct{})
	}
	ch := c.qb.replyRoom
	c.mu.Unlock()
	if reader {
		c.wakeRelayed(false)
	}
	c.cfg.Metrics.ReaderPaused("queue_bytes_per_link")
	select {
	case <-ch:
	case <-c.closing:
	}
}
