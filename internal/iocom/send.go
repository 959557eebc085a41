package iocom

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// writeBufferSize is the writer's batch buffer: large enough that a burst
// of small messages leaves in few syscalls.
const writeBufferSize = 64 << 10

// outMsg is one queued message and, for relayed circuit traffic, who to
// tell once it has left the queue.
type outMsg struct {
	m       *dmsg.Msg
	acct    Accounter
	release bool // recycle m once written (relayed messages)
}

// Accounter is told when a relayed message has been written out of a
// link's queue, so a circuit can bound what it holds queued.
type Accounter interface {
	Written(bytes int)
}

// enqueueLocked appends m to the outbound queue. Called with c.mu held; it
// never blocks.
func (c *Conn) enqueueLocked(m *dmsg.Msg) {
	c.q = append(c.q, outMsg{m: m})
	c.qBytes += m.EncodedSize()
	if len(c.q) == 1 {
		c.kick()
	}
}

// kick wakes the writer without blocking.
func (c *Conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// SendOneWay sends a one-way message (no transaction: msgid 0, neither
// CREATE nor DELETE) on circuit 0. m belongs to the link from now on.
func (c *Conn) SendOneWay(m *dmsg.Msg) error {
	m.MsgID = 0
	m.Circuit = 0
	m.Cmd &^= dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagRevTrans | dmsg.FlagRevCirc
	if err := checkSend(m); err != nil {
		return err
	}
	return c.sendOneWay(m)
}

func (c *Conn) sendOneWay(m *dmsg.Msg) error {
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
func (c *Conn) WaitRoom(ctx context.Context) error {
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
func (c *Conn) QueuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.qBytes
}

// writeLoop is the writer goroutine: it takes the whole queue at once,
// encodes it into one buffer and flushes only when the queue is empty, so
// a busy link sends many messages per syscall.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	defer c.recoverPanic("writer")
	bw := bufio.NewWriterSize(c.nc, writeBufferSize)
	enc := dmsg.NewEncoder(bw)
	ka := newKeepalive(&c.cfg)
	defer ka.stop()
	var batch []outMsg
	for {
		c.mu.Lock()
		batch, c.q = c.q, batch[:0]
		c.mu.Unlock()
		if len(batch) == 0 {
			if err := c.idle(bw, ka); err != nil {
				c.fail(writeError(err))
				return
			}
			if c.isClosing() {
				return
			}
			continue
		}
		if err := c.writeBatch(enc, batch); err != nil {
			c.fail(writeError(err))
			return
		}
		ka.sent()
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

func (c *Conn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// writeBatch encodes batch into the buffer and releases its bytes from the
// queue accounting.
func (c *Conn) writeBatch(enc *dmsg.Encoder, batch []outMsg) error {
	n := 0
	debug := c.log.Core().Enabled(zapcore.DebugLevel)
	for i, o := range batch {
		if debug {
			c.log.Debug("tx", msgFields(o.m)...)
		}
		if err := enc.Encode(o.m); err != nil {
			return err
		}
		size := o.m.EncodedSize()
		n += size
		if o.acct != nil {
			o.acct.Written(size)
		}
		if o.release {
			o.m.Release()
		}
		batch[i] = outMsg{}
	}
	c.txMsgs.Add(uint64(len(batch)))
	c.txBytes.Add(uint64(n))
	c.mu.Lock()
	c.qBytes -= n
	if c.room != nil && c.qBytes < c.cfg.queueBytes() {
		close(c.room)
		c.room = nil
	}
	c.mu.Unlock()
	return nil
}

// idle flushes what is buffered, reports a drained queue, then waits for
// more work, the keepalive tick or the end of the link.
func (c *Conn) idle(bw *bufio.Writer, ka *keepalive) error {
	if bw.Buffered() > 0 {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if c.drained != nil && len(c.q) == 0 {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
	c.mu.Unlock()
	select {
	case <-c.wake:
	case <-c.closing:
	case now := <-ka.tick():
		return ka.check(c, now)
	}
	return nil
}

// keepalive implements the sending half of PROTOCOL.md 3.2 from the writer
// goroutine: a LNK_PING after an idle interval. The dead-link check is the
// reader's (rxStream).
type keepalive struct {
	interval time.Duration
	ticker   *time.Ticker
	lastSend time.Time
}

func newKeepalive(cfg *Config) *keepalive {
	ka := &keepalive{interval: cfg.keepaliveInterval(), lastSend: time.Now()}
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

func (ka *keepalive) sent() {
	if ka.ticker != nil {
		ka.lastSend = time.Now()
	}
}

// check pings a link this side has not sent anything on for an interval.
func (ka *keepalive) check(c *Conn, now time.Time) error {
	if now.Sub(ka.lastSend) >= ka.interval {
		c.sendOneWay(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
	}
	return nil
}

// DeadLinkError reports a link closed by the keepalive check.
type DeadLinkError struct{ Silent time.Duration }

func (e *DeadLinkError) Error() string {
	return "keepalive timeout: nothing received for " + e.Silent.String()
}
