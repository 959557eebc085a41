package iocom

import (
	"context"
	"math"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Per-circuit flow control at a circuit's end (docs/PROTOCOL.md 11.2). When the
// router has put CIRC_WINDOW in force on a link (SetCircWindows), every
// circuit scope opened afterwards keeps two windows:
//
//   - what it may send: the peer's circ_window plus every LNK_CREDIT the
//     peer sent on the circuit. A message that does not fit waits in the
//     scope, in order, until credit arrives; so does the circuit's
//     LNK_CIRC DELETE while data waits before it.
//   - what the peer may send: our circ_window plus what we granted. A
//     message past it is the far end breaking the protocol inside the
//     circuit: the scope fails with PARAM (ScopeFailer). Once handlers
//     have taken in half a window, the scope grants it back with one
//     LNK_CREDIT, whether or not its own output waits for credit:
//     holding back credit until the far end takes our output would
//     deadlock two ends that both answer requests. What waits in a scope
//     is bounded by its owner (WaitRoom, Pending).
//
// Everything here is guarded by the Link's mutex.

// windows are the circ_windows of a link's two LNK_CONNs.
type windows struct {
	rx, tx int64 // what this side grants per circuit, what the peer grants
}

// SetCircWindows puts per-circuit flow control in force on the link for
// the circuit scopes opened from now on: rx is the window this side grants
// its peer on every circuit (the circ_window of our LNK_CONN), tx the one
// the peer grants us (of its LNK_CONN). Zero turns it off. The router
// calls it once both LNK_CONNs are known, before any circuit can exist.
func (c *Link) SetCircWindows(rx, tx int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rx <= 0 || tx <= 0 {
		c.win = windows{}
		return
	}
	c.win = windows{rx: int64(rx), tx: int64(tx)}
}

// CircWindows returns the windows SetCircWindows put in force; ok is false
// when flow control is off on the link.
func (c *Link) CircWindows() (rx, tx int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.win.rx), int(c.win.tx), c.win.rx > 0
}

// SendCredit grants the peer n more bytes on circuit (a LNK_CREDIT, in
// the control class). revCirc is set when the peer opened the circuit. A
// router relaying a circuit calls it; circuit ends grant by themselves.
func (c *Link) SendCredit(circuit uint64, revCirc bool, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return ErrClosed
	}
	c.enqueueLocked(dmsg.NewCreditMsg(circuit, revCirc, uint64(n)))
	return nil
}

// scopeFlow is a circuit scope's flow control state.
type scopeFlow struct {
	rxWindow  int64
	rxGranted int64 // credit granted to the peer, in total
	rxUsed    int64 // bytes received, in total
	rxDone    int64 // received and handled, not granted back yet

	txWindow  int64
	txGranted int64 // credit the peer granted, in total
	txUsed    int64 // bytes queued toward the peer, in total

	pending      []*dmsg.Msg   // waiting for credit, in order
	pendingBytes int64         // the credit they need
	room         chan struct{} // closed when pending empties (WaitRoom)
}

func newScopeFlow(w windows) *scopeFlow {
	if w.rx <= 0 {
		return nil
	}
	return &scopeFlow{rxWindow: w.rx, rxGranted: w.rx, txWindow: w.tx, txGranted: w.tx}
}

// cost is the credit m needs: its encoded size if it travels inside the
// circuit; nothing for a LNK_CIRC message (circuit 0) or a LNK_CREDIT.
func cost(m *dmsg.Msg) int64 {
	if m.Circuit == 0 || dmsg.Base(m.Cmd) == dmsg.LnkCredit {
		return 0
	}
	return int64(m.EncodedSize())
}

// queueLocked queues m, a message of the scope (on circuit 0: of the
// class control says), within the scope's credit, or keeps it until
// credit arrives. Inside a circuit everything is data; a LNK_CIRC DELETE
// kept behind the circuit's data is too. Called with c.mu held.
func (s *Scope) queueLocked(m *dmsg.Msg, control bool) {
	f := s.flow
	if f == nil {
		s.conn.enqueueClassLocked(m, control && s.key == rootKey)
		return
	}
	n := cost(m)
	if len(f.pending) == 0 && f.txUsed+n <= f.txGranted {
		f.txUsed += n
		s.conn.enqueueClassLocked(m, false)
		return
	}
	f.pending = append(f.pending, m)
	f.pendingBytes += n
}

// creditLocked adds a LNK_CREDIT's increment and sends what now fits.
// Called with c.mu held.
func (s *Scope) creditLocked(n uint64) {
	f := s.flow
	if f == nil || s.closed {
		return
	}
	if n > math.MaxInt64-uint64(f.txGranted) {
		f.txGranted = math.MaxInt64
	} else {
		f.txGranted += int64(n)
	}
	for len(f.pending) > 0 {
		m := f.pending[0]
		n := cost(m)
		if f.txUsed+n > f.txGranted {
			break
		}
		f.txUsed += n
		f.pendingBytes -= n
		f.pending[0] = nil
		f.pending = f.pending[1:]
		s.conn.enqueueClassLocked(m, false)
	}
	if len(f.pending) == 0 {
		f.pending = nil
		f.wakeRoomLocked()
	}
	s.grantLocked()
}

// receivedLocked counts a message of n bytes arriving on the scope's
// circuit; an error means the peer sent past its window. Called with c.mu
// held.
func (s *Scope) receivedLocked(m *dmsg.Msg, n int64) error {
	f := s.flow
	if f == nil || n == 0 {
		return nil
	}
	if f.rxUsed+n > f.rxGranted {
		return violation(m, "%d bytes past the circuit's window", f.rxUsed+n-f.rxGranted)
	}
	f.rxUsed += n
	return nil
}

// handled grants back the n bytes of a message once its handler is done
// with it.
func (c *Link) handled(s *Scope, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.flow != nil {
		s.flow.rxDone += n
		s.grantLocked()
	}
}

// grantLocked sends a LNK_CREDIT once half a window has been handled.
// Called with c.mu held.
func (s *Scope) grantLocked() {
	f := s.flow
	c := s.conn
	if f == nil || s.closed || c.dead || f.rxDone < f.rxWindow/2 {
		return
	}
	g := f.rxDone
	f.rxDone = 0
	f.rxGranted += g
	c.enqueueLocked(dmsg.NewCreditMsg(s.key.id, !s.key.local, uint64(g)))
}

// dropPendingLocked lets go of what waits for credit when the circuit
// ends: its data will never be sent; a LNK_CIRC message kept behind it is
// queued now. Called with c.mu held.
func (s *Scope) dropPendingLocked() {
	f := s.flow
	if f == nil {
		return
	}
	for _, m := range f.pending {
		if m.Circuit == 0 {
			s.conn.enqueueClassLocked(m, false)
		}
	}
	f.pending, f.pendingBytes = nil, 0
	f.wakeRoomLocked()
}

// behindLocked returns the scope of circuit id (this side opened it:
// local) if messages wait in it for credit, so that its LNK_CIRC's DELETE
// must wait behind them. Called with c.mu held.
func (c *Link) behindLocked(id uint64, local bool) *Scope {
	s := c.scopes[circuitKey{id: id, local: local}]
	if s == nil || s.flow == nil || len(s.flow.pending) == 0 {
		return nil
	}
	return s
}

// Pending returns the bytes of messages the scope keeps until the peer
// grants credit.
func (s *Scope) Pending() int {
	s.conn.mu.Lock()
	defer s.conn.mu.Unlock()
	if s.flow == nil {
		return 0
	}
	return int(s.flow.pendingBytes)
}

// WaitRoom blocks until nothing waits in the scope for credit and the
// link's queue has room (Link.WaitRoom), or the scope closes, the link
// closes or ctx ends. Bulk senders inside a circuit call it before each
// send, so that a far end that stops granting credit holds them instead
// of growing memory.
func (s *Scope) WaitRoom(ctx context.Context) error {
	c := s.conn
	for {
		c.mu.Lock()
		switch {
		case c.dead:
			c.mu.Unlock()
			return ErrClosed
		case s.closed:
			c.mu.Unlock()
			return ErrClosed
		case s.flow == nil || len(s.flow.pending) == 0:
			c.mu.Unlock()
			return c.WaitRoom(ctx)
		}
		if s.flow.room == nil {
			s.flow.room = make(chan struct{})
		}
		ch := s.flow.room
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

// wakeRoomLocked wakes the scope's WaitRoom callers. Called with c.mu
// held.
func (f *scopeFlow) wakeRoomLocked() {
	if f.room != nil {
		close(f.room)
		f.room = nil
	}
}

// creditOf returns a LNK_CREDIT's increment (0 for a malformed one).
func creditOf(m *dmsg.Msg) uint64 {
	if !dmsg.IsCredit(&m.Header) {
		return 0
	}
	c, _ := m.Credit()
	return c.Increment
}
