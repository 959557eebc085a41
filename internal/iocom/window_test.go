package iocom_test

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// These tests cover the outbound queue's classes and per-circuit flow
// control at a circuit's end and in the relay path (docs/PROTOCOL.md 11.2).

// TestControlDoesNotWaitBehindCircuitData: with megabytes of circuit data
// queued toward a peer that has not read yet, a ping queued after them
// leaves after at most about one batch of them, while the circuit's
// LNK_CIRC DELETE leaves after all of them.
func TestControlDoesNotWaitBehindCircuitData(t *testing.T) {
	guard(t)
	a, b := net.Pipe() // nothing is read from b until the test records it
	c := startConn(t, a, iocom.Config{ID: "c", KeepaliveInterval: -1, KeepaliveTimeout: -1})
	tx, err := c.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: 9}), func(*iocom.Tx, *dmsg.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenScope(tx.MsgID(), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 128, 32 << 10
	for i := range n {
		m := dmsg.NewMsg(dmsg.DbgShell)
		m.SetAux(make([]byte, size))
		m.Error = uint32(i)
		if err := s.SendOneWay(m); err != nil {
			t.Fatal(err)
		}
	}
	tx.Close()
	if err := c.SendOneWay(dmsg.NewMsg(dmsg.LnkPing)); err != nil {
		t.Fatal(err)
	}
	rec := dmsgtest.NewPeer(b).Record(t, dmsgtest.RecordOptions{}) // only now is b read
	data, pingAfter := 0, -1
	for {
		m := rec.Next("the queued messages")
		switch {
		case dmsg.Base(m.Cmd) == dmsg.LnkPing:
			pingAfter = data
		case m.Circuit != 0:
			if int(m.Error) != data {
				t.Fatalf("circuit message %d arrived as the %d-th", m.Error, data)
			}
			data++
		case m.Cmd&dmsg.FlagDelete != 0:
			if data != n {
				t.Fatalf("the LNK_CIRC DELETE arrived after %d of the circuit's %d messages", data, n)
			}
			if pingAfter < 0 {
				t.Fatal("the ping did not arrive before the end of the data")
			}
			t.Logf("the ping left after %d of %d circuit messages (%d KiB of %d)", pingAfter, n, pingAfter*size>>10, n*size>>10)
			if limit := 2 * (256 << 10) / size; pingAfter > limit {
				t.Errorf("the ping waited behind %d circuit messages, more than two batches (%d)", pingAfter, limit)
			}
			return
		}
	}
}

// TestATransactionIsAbortedOnce: Abort after our own DELETE is legal, but
// after our own ABORT|DELETE it sends nothing: two paths that abort the
// same transaction send one ABORT|DELETE.
func TestATransactionIsAbortedOnce(t *testing.T) {
	guard(t)
	c, peer := newRawLink(t, iocom.Config{ID: "c"})
	tx, err := c.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: 1}), func(*iocom.Tx, *dmsg.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	peer.expect(dmsg.LnkCirc|dmsg.FlagCreate, tx.MsgID())
	tx.Close()
	peer.expect(closeOurs, tx.MsgID())
	tx.Abort(dmsg.ErrLostLink)
	tx.Abort(dmsg.ErrIO)
	tx.Close()
	// A marker in the same class (data) as a LNK_CIRC's DELETE follows
	// whatever the aborts queued.
	s, err := c.OpenScope(77, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SendOneWay(dmsg.NewMsg(dmsg.DbgShell))
	if m := peer.expect(dmsg.LnkError|dmsg.FlagAbort|dmsg.FlagDelete, tx.MsgID()); m.Error != dmsg.ErrLostLink {
		t.Errorf("the abort carries %s, want the first one's LOSTLINK", dmsg.ErrorString(m.Error))
	}
	peer.expect(dmsg.DbgShell, 0)
}

// windowLink is a Link with flow control in force (both windows w) and a
// circuit it opened, and the raw peer at the far end.
type windowLink struct {
	t       *testing.T
	credits []uint64 // LNK_CREDIT increments the Link sent, seen by sync
	c       *iocom.Link
	peer    *rawPeer
	tx      *iocom.Tx // the LNK_CIRC
	scope   *iocom.Scope
	rec     *scopeRecorder
}

// scopeRecorder counts what arrives in a scope and whether it failed.
type scopeRecorder struct {
	oneWay atomic.Int64
	failed atomic.Pointer[error]
}

func (r *scopeRecorder) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }
func (r *scopeRecorder) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	r.oneWay.Add(1)
}
func (r *scopeRecorder) ScopeFailed(_ *iocom.Scope, err error) { r.failed.Store(&err) }

func newWindowLink(t *testing.T, rx, tx int) *windowLink {
	t.Helper()
	w := &windowLink{t: t, rec: &scopeRecorder{}}
	w.c, w.peer = newRawLink(t, iocom.Config{ID: "c"})
	w.c.SetCircWindows(rx, tx)
	var err error
	if w.tx, err = w.c.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: 1}), func(*iocom.Tx, *dmsg.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if w.scope, err = w.c.OpenScope(w.tx.MsgID(), true, w.rec); err != nil {
		t.Fatal(err)
	}
	w.peer.expect(dmsg.LnkCirc|dmsg.FlagCreate, w.tx.MsgID())
	return w
}

// data is a one-way message of n bytes on the wire inside the circuit.
func (w *windowLink) data(i, n int) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.SetAux(make([]byte, n-dmsg.BaseHeaderSize))
	m.Error = uint32(i)
	return m
}

// credit sends the Link a LNK_CREDIT for its circuit.
func (w *windowLink) credit(n uint64) {
	// The Link opened the circuit: the peer's messages on it carry REVCIRC.
	w.peer.mustSend(dmsg.NewCreditMsg(w.tx.MsgID(), true, n))
}

// sync makes sure the Link has handled everything the peer sent and
// flushed what that made it send. LNK_CREDITs, which leave before
// anything queued as data, are collected on the way.
func (w *windowLink) sync() {
	w.t.Helper()
	w.peer.mustSend(dmsg.NewMsg(dmsg.LnkPing))
	for {
		switch m := w.peer.next(); {
		case dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0:
			return
		case dmsg.IsCredit(&m.Header):
			if m.Circuit != w.tx.MsgID() || m.Cmd&dmsg.FlagRevCirc != 0 {
				w.t.Fatalf("got %s, want LNK_CREDIT on circuit %d without REVCIRC", describe(m), w.tx.MsgID())
			}
			c, _ := m.Credit()
			w.credits = append(w.credits, c.Increment)
		default:
			w.t.Fatalf("got %s, want LNK_PING|REPLY", describe(m))
		}
	}
}

func TestACircuitEndSendsWithinItsCreditAndKeepsTheRestInOrder(t *testing.T) {
	guard(t)
	const window, msg = 10 << 10, 1 << 10
	w := newWindowLink(t, window, window)
	for i := range 25 {
		if err := w.scope.SendOneWay(w.data(i, msg)); err != nil {
			t.Fatal(err)
		}
	}
	w.tx.Close() // must follow the circuit's data
	expectData := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if m := w.peer.next(); m.Circuit != w.tx.MsgID() || int(m.Error) != i || m.EncodedSize() != msg {
				t.Fatalf("got %s, want circuit message %d", describe(m), i)
			}
		}
	}
	expectData(0, 10)
	w.sync()
	if got := w.scope.Pending(); got != 15*msg {
		t.Fatalf("Pending() = %d, want the %d bytes past the window", got, 15*msg)
	}
	w.credit(5*msg + msg/2) // room for five and a half
	expectData(10, 15)
	w.sync()
	w.credit(20 * msg)
	expectData(15, 25)
	w.peer.expect(closeOurs, w.tx.MsgID())
	if got := w.scope.Pending(); got != 0 {
		t.Fatalf("Pending() = %d after all was sent", got)
	}
}

func TestAnAbortDropsWhatWaitsForCredit(t *testing.T) {
	guard(t)
	const window, msg = 4 << 10, 1 << 10
	w := newWindowLink(t, window, window)
	for i := range 10 {
		w.scope.SendOneWay(w.data(i, msg))
	}
	w.tx.Abort(dmsg.ErrIO)
	for i := range 4 {
		if m := w.peer.next(); int(m.Error) != i {
			t.Fatalf("got %s, want circuit message %d", describe(m), i)
		}
	}
	w.peer.expect(dmsg.LnkError|dmsg.FlagAbort|dmsg.FlagDelete, w.tx.MsgID())
	if got := w.scope.Pending(); got != 0 {
		t.Fatalf("Pending() = %d after the abort, want 0", got)
	}
}

func TestACircuitEndGrantsCreditAsItHandlesMessages(t *testing.T) {
	guard(t)
	const window, msg = 8 << 10, 1 << 10
	w := newWindowLink(t, window, window)
	var granted uint64
	for i := range 40 {
		m := w.data(i, msg)
		m.Circuit, m.Cmd = w.tx.MsgID(), m.Cmd|dmsg.FlagRevCirc
		w.peer.mustSend(m)
	}
	w.sync()
	for _, c := range w.credits {
		if c < window/2 {
			t.Errorf("a grant of %d bytes, want at least half the window (%d)", c, window/2)
		}
		granted += c
	}
	if got := w.rec.oneWay.Load(); got != 40 {
		t.Fatalf("%d of 40 messages handled", got)
	}
	// Everything handled is granted back but for less than half a window.
	if sent := uint64(40 * msg); granted > sent || sent-granted >= window/2 {
		t.Errorf("granted %d bytes for %d handled, want all but less than half the window", granted, sent)
	}
	if w.rec.failed.Load() != nil {
		t.Errorf("the scope failed: %v", *w.rec.failed.Load())
	}
}

func TestAPeerPastTheWindowFailsOnlyItsCircuit(t *testing.T) {
	guard(t)
	const window = 4 << 10
	w := newWindowLink(t, window, window)
	m := w.data(0, window+dmsg.BaseHeaderSize)
	m.Circuit, m.Cmd = w.tx.MsgID(), m.Cmd|dmsg.FlagRevCirc
	w.peer.mustSend(m)
	w.sync() // the link is still up
	p := w.rec.failed.Load()
	var pe *iocom.ProtocolError
	if p == nil || !errors.As(*p, &pe) {
		t.Fatalf("the scope did not fail with a protocol error: %v", p)
	}
	if !w.scope.Closed() || w.rec.oneWay.Load() != 0 {
		t.Fatalf("the circuit is still open (closed %v, %d messages handled)", w.scope.Closed(), w.rec.oneWay.Load())
	}
}

// TestAHoldReleasesWholeFramesWithinCreditAndKeepsTheDeleteLast drives a
// Hold the way a router does: a Forward hook keeps every frame of circuit
// 7 in it, the test releases them bit by bit, and the LNK_CIRC DELETE
// queued behind them leaves last.
func TestAHoldReleasesWholeFramesWithinCreditAndKeepsTheDeleteLast(t *testing.T) {
	for _, p := range relayPairs {
		t.Run(p.name, func(t *testing.T) {
			guard(t)
			var mu sync.Mutex
			var h *iocom.Hold
			acct := &byteCount{}
			r := newRelayRig(t, p, nil, nil)
			h = iocom.NewHold(r.out)
			r.routes = nil
			hook := func(_ *iocom.Link, f *iocom.Frame) bool {
				f.Flush(r.out)
				mu.Lock()
				defer mu.Unlock()
				f.HoldIn(h, 70, false, acct)
				return true
			}
			r.setForward(hook)
			tx, err := r.out.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: 3}), func(*iocom.Tx, *dmsg.Msg) {})
			if err != nil {
				t.Fatal(err)
			}
			r.outPeer.expect(dmsg.LnkCirc|dmsg.FlagCreate, tx.MsgID())
			sizes := []int{100, 5000, 20 << 10, 64, 1000, 17 << 10, 300, 0, 9000, 64}
			var batch []*dmsg.Msg
			total := 0
			for i, n := range sizes {
				m := msg(dmsg.DbgShell, uint64(i+1), onCircuit(7), withAuxBytes(make([]byte, n)))
				total += m.EncodedSize()
				batch = append(batch, m)
			}
			r.inPeer.mustSend(batch...)
			waitUntil(t, "every frame is held", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return h.Len() > 0 && h.Bytes() == total
			})
			release := func(credit int) int {
				mu.Lock()
				defer mu.Unlock()
				return h.Release(credit)
			}
			expect := func(from, to int) {
				t.Helper()
				for i := from; i < to; i++ {
					if m := r.outPeer.next(); m.Circuit != 70 || m.MsgID != uint64(i+1) || len(m.Aux) != sizes[i] {
						t.Fatalf("got %s, want held message %d", describe(m), i+1)
					}
				}
			}
			size := func(i int) int { return batch[i].EncodedSize() }
			if used := release(size(0) + size(1) + size(2) - 1); used != size(0)+size(1) {
				t.Fatalf("Release used %d, want the first two messages' %d", used, size(0)+size(1))
			}
			expect(0, 2)
			mu.Lock()
			tx.CloseBehind(h, 0)
			mu.Unlock()
			if used := release(0); used != 0 {
				t.Fatalf("Release(0) used %d", used)
			}
			if used := release(1 << 30); used != total-size(0)-size(1) {
				t.Fatalf("Release used %d, want the rest, %d", used, total-size(0)-size(1))
			}
			expect(2, len(sizes))
			r.outPeer.expect(closeOurs, tx.MsgID())
			waitUntil(t, "every byte is accounted", func() bool { return acct.n.Load() == int64(total) })
			mu.Lock()
			defer mu.Unlock()
			if h.Len() != 0 || h.Bytes() != 0 {
				t.Fatalf("the hold keeps %d messages, %d bytes", h.Len(), h.Bytes())
			}
		})
	}
}

// TestADroppedHoldSendsNothing: what a circuit held when it was aborted
// never leaves.
func TestADroppedHoldSendsNothing(t *testing.T) {
	guard(t)
	var mu sync.Mutex
	r := newRelayRig(t, relayPairs[0], nil, nil)
	h := iocom.NewHold(r.out)
	r.setForward(func(_ *iocom.Link, f *iocom.Frame) bool {
		f.Flush(r.out)
		mu.Lock()
		defer mu.Unlock()
		f.HoldIn(h, 70, false, nil)
		return true
	})
	var batch []*dmsg.Msg
	for i := range 50 {
		batch = append(batch, msg(dmsg.DbgShell, uint64(i+1), onCircuit(7), withAux(fmt.Sprint(i))))
	}
	r.inPeer.mustSend(batch...)
	waitUntil(t, "every frame is held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return h.Len() > 0 && h.Bytes() == 50*128
	})
	mu.Lock()
	h.Drop()
	used := h.Release(1 << 30)
	mu.Unlock()
	if used != 0 {
		t.Fatalf("Release after Drop used %d", used)
	}
	r.out.SendOneWay(dmsg.NewMsg(dmsg.LnkPing))
	r.outPeer.expect(dmsg.LnkPing, 0)
	if n := r.outPeer.unread(); n != 0 {
		t.Fatalf("%d messages left after the drop", n)
	}
}
