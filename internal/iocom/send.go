package iocom

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// writeBufferSize is the writer's batch buffer: large enough that a burst
// of small messages leaves in few syscalls.
const writeBufferSize = 64 << 10

// outMsg is one queued message, or a run of relayed frames in a chunk,
// and, for relayed circuit traffic, who to tell once it has left the
// queue.
type outMsg struct {
	m       *dmsg.Msg
	acct    Accounter
	release bool            // recycle m once written (relayed messages)
	finish  func(*dmsg.Msg) // completes m just before it is encoded (OpenFinished)

	raw   []byte // relayed frames, back to back, in chunk
	chunk *chunk
}

// Accounter is told when relayed messages have been written out of a
// link's queue (or dropped with it), so a circuit can bound what it holds
// queued and count what it carried. A run of messages is told at once.
type Accounter interface {
	Written(msgs, bytes int)
}

// enqueueLocked appends m, a one-way message, to the outbound queue in its
// class (queue.go). Called with c.mu held; it never blocks.
func (c *Link) enqueueLocked(m *dmsg.Msg) { c.enqueueClassLocked(m, isControl(m)) }

// enqueueClassLocked appends m to the control class or to the data class.
// Called with c.mu held; it never blocks.
func (c *Link) enqueueClassLocked(m *dmsg.Msg, control bool) {
	c.enqueueOutLocked(outMsg{m: m}, control)
}

// enqueueOutLocked charges and appends o, an entry holding one message.
// Called with c.mu held; it never blocks.
func (c *Link) enqueueOutLocked(o outMsg, control bool) {
	c.chargeLocked(o.m.EncodedSize(), isReply(o.m))
	if o.finish != nil {
		c.finishing++
	}
	if c.pushLocked(o, control) {
		c.kick()
	}
}

// kick wakes the writer without blocking.
func (c *Link) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// SendOneWay sends a one-way message (no transaction: msgid 0, neither
// CREATE nor DELETE) on circuit 0. m belongs to the link from now on.
func (c *Link) SendOneWay(m *dmsg.Msg) error {
	m.MsgID = 0
	m.Circuit = 0
	m.Cmd &^= dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagRevTrans | dmsg.FlagRevCirc
	if err := checkSend(m); err != nil {
		return err
	}
	return c.sendOneWay(m)
}

func (c *Link) sendOneWay(m *dmsg.Msg) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return ErrClosed
	}
	c.enqueueLocked(m)
	return nil
}

// WaitRoom blocks until the outbound queue holds less than the configured
// QueueBytes, the link closes, or ctx ends. Bulk senders call it before
// each send so a slow peer slows them down instead of growing memory.
func (c *Link) WaitRoom(ctx context.Context) error {
	limit := c.cfg.queueBytes()
	for {
		c.mu.Lock()
		if c.dead {
			c.mu.Unlock()
			return ErrClosed
		}
		if c.qBytes < limit {
			c.mu.Unlock()
			return nil
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		ch := c.room
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.closing:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// QueuedBytes returns the bytes queued or being written.
func (c *Link) QueuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.qBytes
}

// writeLoop is the writer goroutine: it takes the whole queue at once,
// encodes it into one buffer and flushes only when the queue is empty, so
// a busy link sends many messages per syscall.
func (c *Link) writeLoop() {
	defer close(c.writerDone)
	defer c.recoverPanic("writer")
	ka := newKeepalive(&c.cfg)
	defer ka.stop()
	for {
		c.wmu.Lock()
		err := c.drainLocked(false)
		c.wmu.Unlock()
		if err != nil {
			c.fail(writeError(err))
			return
		}
		c.markDrained()
		if c.isClosing() {
			return
		}
		select {
		case <-c.wake:
		case <-c.closing:
		case now := <-ka.tick():
			ka.check(c, now)
		}
	}
}

// drainLocked writes everything queued, batch by batch (control first,
// see takeBatchLocked), and flushes once the queue is empty. With try
// (writeNow) it writes one batch, the one writeNow sized, with tryFlush;
// whoever queues more after it finds the queue empty and wakes the
// writer. The caller holds c.wmu, which owns the write side of the
// socket: the writer goroutine, or a relaying reader.
func (c *Link) drainLocked(try bool) error {
	for {
		c.mu.Lock()
		c.wbatch = c.takeBatchLocked(c.wbatch[:0])
		c.mu.Unlock()
		if len(c.wbatch) == 0 {
			break
		}
		if err := c.writeBatch(c.enc, c.wbatch); err != nil {
			return err
		}
		c.lastSend.Store(time.Now().UnixNano())
		if try {
			break
		}
	}
	if try {
		return c.out.tryFlush()
	}
	return c.out.flush()
}

// directWriteMax bounds what a relaying reader writes itself: no more than
// the write buffer holds, so that it never waits for the socket to take a
// full buffer (only the writer goroutine waits).
const directWriteMax = writeBufferSize

// writeNow sends what is queued from the calling goroutine when the link's
// write side is free and the queue is small, saving the writer goroutine's
// wake-up on every hop of a relayed request; otherwise it wakes the
// writer. A queue holding a message to finish (OpenFinished) is the
// writer's too: the relaying reader, another link's, must not spend its
// time on this link's work.
func (c *Link) writeNow() {
	if c.out.noDeadline || c.isClosing() || !c.wmu.TryLock() {
		c.kick()
		return
	}
	c.mu.Lock()
	small := c.qBytes <= directWriteMax && c.finishing == 0
	c.mu.Unlock()
	if !small || c.out.pending() { // a slow peer's leftovers are the writer's
		c.wmu.Unlock()
		c.kick()
		return
	}
	err := c.drainLocked(true)
	c.wmu.Unlock()
	switch {
	case errors.Is(err, errSlowPeer):
		c.kick() // the writer finishes the flush, without a deadline
	case err != nil:
		c.fail(writeError(err))
	}
}

// markDrained reports an empty queue to a waiting Shutdown.
func (c *Link) markDrained() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained != nil && c.queueEmptyLocked() && c.qBytes == 0 {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
}

// ErrPeerClosed reports a link whose peer closed the connection while we
// were writing to it: an ordinary end, which the reader would have seen
// as end of stream a moment later.
var ErrPeerClosed = errors.New("peer closed the connection")

// writeError names why the writer stopped. A broken pipe or a reset is the
// peer going away, not a fault of the link.
func writeError(err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return ErrPeerClosed
	}
	return fmt.Errorf("write: %w", err)
}

func (c *Link) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// writeBatch encodes batch into the buffer and releases its bytes from the
// queue accounting.
func (c *Link) writeBatch(enc *dmsg.Encoder, batch []outMsg) error {
	n, msgs, replies, finished := 0, 0, 0, 0
	debug := c.log.Core().Enabled(zapcore.DebugLevel)
	for i, o := range batch {
		reply := o.isReply() // before writeOne may recycle the message
		if o.finish != nil {
			finished++
		}
		size, frames, err := c.writeOne(enc, &o, debug)
		if err != nil {
			return err
		}
		n += size
		if reply {
			replies += size
		}
		msgs += frames
		if o.acct != nil {
			o.acct.Written(frames, size)
		}
		batch[i] = outMsg{}
	}
	c.txMsgs.Add(uint64(msgs))
	c.txBytes.Add(uint64(n))
	c.mu.Lock()
	c.releaseLocked(n, replies)
	c.finishing -= finished
	c.mu.Unlock()
	return nil
}

// writeOne encodes one queue entry and returns its size and how many
// messages it held.
func (c *Link) writeOne(enc *dmsg.Encoder, o *outMsg, debug bool) (int, int, error) {
	if o.raw != nil {
		// The frames go out from their chunk, not copied; the buffer
		// takes over the entry's reference to it.
		frames, err := enc.SealFrames(o.raw)
		if err != nil {
			o.chunk.unref()
			return 0, 0, err
		}
		err = c.out.lend(o.raw, o.chunk)
		if debug {
			c.log.Debug("tx relayed frames", zap.Int("messages", frames), zap.Int("bytes", len(o.raw)))
		}
		return len(o.raw), frames, err
	}
	if o.finish != nil {
		o.finish(o.m)
	}
	if debug {
		c.log.Debug("tx", msgFields(o.m)...)
	}
	if err := enc.Encode(o.m); err != nil {
		return 0, 0, err
	}
	size := o.m.EncodedSize()
	if o.release {
		o.m.Release()
	}
	return size, 1, nil
}

// keepalive implements the sending half of docs/PROTOCOL.md 3.2 from the writer
// goroutine: a LNK_PING after an idle interval. The dead-link check is the
// reader's (rxStream).
type keepalive struct {
	interval time.Duration
	ticker   *time.Ticker
}

func newKeepalive(cfg *Config) *keepalive {
	ka := &keepalive{interval: cfg.keepaliveInterval()}
	if ka.interval > 0 {
		ka.ticker = time.NewTicker(max(ka.interval/4, 5*time.Millisecond))
	}
	return ka
}

func (ka *keepalive) tick() <-chan time.Time {
	if ka.ticker == nil {
		return nil
	}
	return ka.ticker.C
}

func (ka *keepalive) stop() {
	if ka.ticker != nil {
		ka.ticker.Stop()
	}
}

// check pings a link this side has not sent anything on for an interval.
func (ka *keepalive) check(c *Link, now time.Time) {
	if now.Sub(time.Unix(0, c.lastSend.Load())) >= ka.interval {
		c.sendOneWay(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
	}
}

// DeadLinkError reports a link closed by the keepalive check.
type DeadLinkError struct{ Silent time.Duration }

func (e *DeadLinkError) Error() string {
	return "keepalive timeout: nothing received for " + e.Silent.String()
}
