package iocom

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// readLoop is the reader goroutine: decode, run the state machine, call
// handlers; on any error take the link down and terminate its states.
func (c *Link) readLoop() {
	defer c.finish()
	defer c.recoverPanic("reader")
	c.dec = dmsg.NewDecoder(&rxStream{c: c, timeout: c.cfg.keepaliveTimeout()})
	for {
		if err := c.readOne(); err != nil {
			c.fail(readError(err))
			return
		}
	}
}

// readOne reads one message and relays or handles it; an error ends the
// link.
func (c *Link) readOne() error {
	c.waitReplyRoom()
	h, err := c.dec.Next()
	if err != nil {
		return err
	}
	c.rx.msgs++
	if c.rxDebug {
		c.log.Debug("rx", headerFields(h)...)
	}
	if h.Circuit != 0 && c.cfg.Forward != nil {
		f := &c.frame
		*f = Frame{Header: h, c: c}
		claimed := c.cfg.Forward(c, f)
		if f.used {
			c.rx.bytes += uint64(f.EncodedSize())
			return f.err
		}
		if claimed {
			return errors.New("internal error: Forward claimed a message it did not relay")
		}
	}
	// What this message makes us send must not overtake what we relayed
	// before it, and its handler may take a while: what we relayed goes
	// out now.
	c.wakeRelayed(true)
	c.meterWork(h)
	m, err := c.dec.Msg()
	if err != nil {
		return err
	}
	c.rx.bytes += uint64(m.EncodedSize())
	return c.receive(m)
}

// rxStream is what the reader decodes from. With a keepalive timeout it
// implements the dead-link check of docs/PROTOCOL.md 3.2: a link on which no
// whole message arrives for that long fails with a *DeadLinkError. Bytes
// alone do not count, so a peer that trickles a byte now and then, never
// finishing a message, cannot hold the link (and its slot) forever.
//
// Only the time the reader spends waiting for the socket is silence: while
// a handler holds it, or it pauses because the peer is over a budget,
// what the peer sends waits unread and the clock stops. The check lives on
// the reader because only it knows when messages arrive; the writer can
// sit blocked in a write for as long as a stuck peer does not read.
type rxStream struct {
	c        *Link
	timeout  time.Duration // <= 0: no dead-link check
	deadline time.Time     // the read deadline currently set
	quiet    time.Time     // silence since then: the last whole message, plus time away
	returned time.Time     // when the last read returned
	msgs     uint64        // c.rx.msgs at the last read
	busy     time.Time     // since when the reader has run without waiting
	full     bool          // the last read filled what it was given
}

// Read is called by the decoder's buffer when it needs more bytes than it
// holds: the moment this link's input is drained, when what the reader
// relayed is queued and the writers it relayed to are woken (relay.go).
// After a read that filled the buffer more input is likely waiting: the
// reader leaves the writing to the writers then, so that reading and
// writing a busy link run side by side.
func (r *rxStream) Read(p []byte) (int, error) {
	n, err := r.read(p)
	r.full = n == len(p)
	return n, err
}

func (r *rxStream) read(p []byte) (int, error) {
	r.c.wakeRelayed(!r.full)
	r.c.publishRxStats()
	// The log level is looked up once per read, not per message.
	r.c.rxDebug = r.c.log.Core().Enabled(zapcore.DebugLevel)
	now := time.Now()
	r.yield(now)
	if r.timeout <= 0 {
		n, err := r.c.nc.Read(p)
		r.returned = r.waited(now)
		return n, err
	}
	switch {
	case r.quiet.IsZero(), r.c.rx.msgs != r.msgs:
		// The reader starts, or a message header arrived since the last
		// read (the decoder counts a message once its header is in).
		r.quiet = now
		r.msgs = r.c.rx.msgs
	default:
		// Still inside one message: only the time spent in reads counts.
		r.quiet = r.quiet.Add(now.Sub(r.returned))
	}
	// Re-arm only when the deadline falls short of a full timeout of
	// silence, and then an eighth further, so a busy link does not reset
	// it on every read; tripping it still takes at least one timeout.
	if due := r.quiet.Add(r.timeout); r.deadline.Before(due) {
		r.deadline = due.Add(r.timeout / 8)
		if err := r.c.nc.SetReadDeadline(r.deadline); errors.Is(err, net.ErrClosed) {
			return 0, err
		} else if err != nil {
			r.c.log.Warn("read deadline not supported; dead-link check disabled", zap.Error(err))
			r.timeout = 0
		}
	}
	n, err := r.c.nc.Read(p)
	r.returned = r.waited(now)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &DeadLinkError{Silent: r.returned.Sub(r.quiet).Round(time.Millisecond)}
	}
	return n, err
}

// A reader whose peer floods it always finds input and never blocks; the
// scheduler would then let it run for whole time slices while the
// goroutines of quiet links, woken by the network, queue behind it. So a
// reader that has run for yieldEvery without waiting for its socket
// yields the processor before its next read (every 64 KiB of input at
// most): fairness between links at the level of the processor, next to
// the work budget of rate.go. A read that took longer than readWaited is
// taken to have waited for the peer.
const (
	yieldEvery = time.Millisecond
	readWaited = 20 * time.Microsecond
)

// yield lets other goroutines run if the reader has been busy for
// yieldEvery.
func (r *rxStream) yield(now time.Time) {
	if r.busy.IsZero() {
		r.busy = now
	}
	if now.Sub(r.busy) >= yieldEvery {
		runtime.Gosched()
		r.busy = time.Now()
	}
}

// waited notes the end of a read begun at start and returns the time.
func (r *rxStream) waited(start time.Time) time.Time {
	now := time.Now()
	if now.Sub(start) > readWaited {
		r.busy = now // it waited: the reader's busy stretch starts again
	}
	return now
}

// readError classifies the error that ended the read loop; nil means an
// orderly end (EOF at a message boundary, or our own Close).
func readError(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("stream ended inside a message: %w", err)
	}
	return err
}

func (c *Link) recoverPanic(where string) {
	if r := recover(); r != nil {
		panics.Add(1)
		c.log.Error("panic in link code; closing the link",
			zap.String("goroutine", where), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		c.fail(errPanic)
	}
}

// receive handles one decoded message.
func (c *Link) receive(m *dmsg.Msg) error {
	c.mu.Lock()
	// A message inside a circuit counts against the window its end
	// granted (window.go), before anything else is done with it.
	var in *Scope
	var n int64
	var err error
	if m.Circuit != 0 {
		if in = c.scopes[keyOf(m)]; in != nil && in.flow != nil {
			n = cost(m)
			err = in.receivedLocked(m, n)
		}
	}
	var kind rxKind
	var tx *Tx
	if err == nil {
		kind, tx, err = c.classify(m)
	}
	var s *Scope
	if kind == rxOneWay || err != nil {
		s = c.scopes[keyOf(m)]
	}
	c.mu.Unlock()
	if err != nil {
		if m.Circuit != 0 && s != nil {
			// The far end of a circuit broke the rules inside it: the
			// routers relayed its frames as they were. Only that circuit
			// is at fault, not the link it runs over.
			c.reportPeerFault(err, m.Circuit)
			c.failScope(s, err)
			return nil
		}
		return err
	}
	switch kind {
	case rxOneWay:
		c.oneWay(s, m)
	case rxAccept:
		c.accept(tx, m)
	case rxRefuse:
		limit, _ := tx.charge.overBudget()
		c.refuseOverBudget(tx, m, limit)
	case rxDeliver:
		c.deliver(tx, m)
	case rxDrop:
		c.log.Debug("dropped message for no open state", msgFields(m)...)
	}
	if in != nil && n > 0 {
		c.handled(in, n)
	}
	return nil
}

// ScopeFailer is implemented by a circuit scope's Handler that wants to
// hear when its circuit was closed for a protocol violation inside it, to
// abort the circuit's LNK_CIRC.
type ScopeFailer interface {
	ScopeFailed(s *Scope, err error)
}

// failScope closes a circuit scope whose far end violated the protocol:
// its transactions end with PARAM and its owner is told.
func (c *Link) failScope(s *Scope, err error) {
	c.log.Debug("circuit closed: its far end violated the protocol", zap.Uint64("circuit", s.key.id), zap.Error(err))
	s.Close(dmsg.ErrParam)
	if f, ok := s.handler.(ScopeFailer); ok {
		f.ScopeFailed(s, err)
	}
}

func (c *Link) oneWay(s *Scope, m *dmsg.Msg) {
	switch dmsg.Base(m.Cmd) {
	case dmsg.LnkPad:
		return
	case dmsg.LnkPing:
		if m.Cmd&dmsg.FlagReply != 0 {
			break
		}
		reply := &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}}
		if m.Circuit == 0 {
			c.sendOneWay(reply)
		} else if s != nil {
			s.SendOneWay(reply) // inside the circuit, within its window
		}
		return
	case dmsg.LnkCredit:
		if s != nil && s.key != rootKey {
			c.mu.Lock()
			s.creditLocked(creditOf(m))
			c.mu.Unlock()
		}
		return
	}
	if s == nil {
		c.log.Debug("dropped one-way message on an unknown circuit", msgFields(m)...)
		return
	}
	s.handler.OneWay(c, m)
}

func (c *Link) accept(tx *Tx, m *dmsg.Msg) {
	h := tx.scope.handler.Accept(tx, m)
	tx.handler = h
	if h == nil {
		c.refuse(tx)
	}
}

// refuse answers a transaction nobody accepted with NOSUPP, unless the
// handler already answered it.
func (c *Link) refuse(tx *Tx) {
	c.mu.Lock()
	answered := tx.txCreate
	c.mu.Unlock()
	if !answered {
		tx.CloseError(dmsg.ErrNoSupp)
	}
}

func (c *Link) deliver(tx *Tx, m *dmsg.Msg) {
	if tx.handler == nil {
		c.log.Debug("dropped message of a refused transaction", msgFields(m)...)
		return
	}
	tx.handler(tx, m)
}

// finish runs when the reader stops: it terminates every open state exactly
// once, waits for the writer and reports the link down.
func (c *Link) finish() {
	c.wakeRelayed(false)
	c.publishRxStats()
	c.fail(nil)
	c.mu.Lock()
	scopes := make([]*Scope, 0, len(c.scopes))
	for _, s := range c.scopes {
		scopes = append(scopes, s)
	}
	txs := drainScopes(scopes)
	c.mu.Unlock()
	for _, tx := range txs {
		c.terminate(tx, dmsg.ErrLostLink)
	}
	<-c.writerDone
	c.logDown()
	close(c.done)
}

// terminate delivers the synthesized end of tx to its handler, shielding
// the other terminations from a panicking handler.
func (c *Link) terminate(tx *Tx, code uint32) {
	defer c.recoverPanic("terminate")
	if tx.handler != nil {
		tx.handler(tx, lostLink(tx, code))
	}
}

// logDown writes the link's "link down" line: info, never sampled, with
// the reason. Faults of the peer are also reported, rate-limited, as
// warnings (report.go); a flood of them must not flood the log.
func (c *Link) logDown() {
	err := c.Err()
	switch {
	case err == nil:
		c.log.Info("link down")
	case errors.Is(err, ErrPeerClosed):
		c.log.Info("link down", zap.String("reason", err.Error()))
	default:
		c.reportPeerFault(err, 0)
		c.log.Info("link down", zap.Error(err))
	}
}

func msgFields(m *dmsg.Msg) []zap.Field { return headerFields(&m.Header) }

func headerFields(h *dmsg.Header) []zap.Field {
	return []zap.Field{
		zap.String("cmd", dmsg.CmdString(h.Cmd)),
		zap.String("msgid", fmt.Sprintf("%016x", h.MsgID)),
		zap.Uint64("circuit", h.Circuit),
		zap.Uint32("error", h.Error),
		zap.Uint32("aux", h.AuxBytes),
	}
}

// publishRxStats makes the reader's counts visible to Stats. The reader
// counts in plain fields and publishes once per read of the socket, not
// once per message.
func (c *Link) publishRxStats() {
	c.rxMsgs.Store(c.rx.msgs)
	c.rxBytes.Store(c.rx.bytes)
}
