package iocom_test

import (
	"errors"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// These tests drive one Link from a raw peer: the test sends hand-built
// messages onto one end of a net.Pipe (or, to break the framing, frames
// it damaged) and reads what the Link writes on the other in order, so
// every flag on the wire is the test's choice or the Link's.

// Wire values from docs/PROTOCOL.md section 3 and the C captures.
const (
	ackReply    = 0xa80fff01 // LNK_ERROR|CREATE|REPLY|REVTRANS: accepted, left open
	closeReply  = 0x680fff01 // LNK_ERROR|DELETE|REPLY|REVTRANS: closing a peer's transaction
	closeOurs   = 0x400fff01 // LNK_ERROR|DELETE: closing a transaction we opened
	refusal     = 0xe80fff01 // LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS
	streamReply = 0x280fff01 // LNK_ERROR|REPLY|REVTRANS: in-stream reply
	unknownCmd  = 0x00500101 // a BLK command nobody handles
)

// defaultPolicies is how the Link under test answers the peer's
// transactions unless a scenario says otherwise.
var defaultPolicies = map[uint32]policy{
	dmsg.LnkSpan:  ack,
	dmsg.LnkConn:  ack,
	dmsg.LnkCirc:  silent,
	dmsg.DbgShell: echo,
}

// ---- the scenario harness ----

type harness struct {
	t    *testing.T
	conn *iocom.Link
	peer *rawPeer
	rec  *recorder
	ours map[string]*iocom.Tx
}

func newHarness(t *testing.T, policies map[uint32]policy) *harness {
	t.Helper()
	if policies == nil {
		policies = defaultPolicies
	}
	rec := newRecorder(policies)
	conn, peer := newRawLink(t, iocom.Config{ID: "under-test", Handler: rec})
	return &harness{t: t, conn: conn, peer: peer, rec: rec, ours: make(map[string]*iocom.Tx)}
}

// ref names a transaction's msgid in a scenario.
type ref struct {
	name string // a transaction the Link opened, by the name open gave it
	id   uint64 // otherwise: a msgid the peer chose
}

func ours(name string) ref { return ref{name: name} }
func theirs(id uint64) ref { return ref{id: id} }

func (h *harness) msgid(r ref) uint64 {
	if r.name == "" {
		return r.id
	}
	tx := h.ours[r.name]
	if tx == nil {
		h.t.Fatalf("scenario refers to %q before opening it", r.name)
	}
	return tx.MsgID()
}

func (h *harness) tx(r ref) *iocom.Tx {
	if r.name != "" {
		h.msgid(r)
		return h.ours[r.name]
	}
	tx := h.rec.remoteTx(r.id)
	if tx == nil {
		h.t.Fatalf("the peer has not opened msgid %d", r.id)
	}
	return tx
}

// step is one action or expectation of a scenario.
type step func(h *harness)

// peerSends: the raw peer sends cmd (flags included) with r's msgid.
func peerSends(cmd uint32, r ref, opts ...msgOpt) step {
	return func(h *harness) {
		h.t.Helper()
		h.peer.mustSend(msg(cmd, h.msgid(r), opts...))
	}
}

// connSends: the next message the Link writes is exactly cmd with r's
// msgid, carrying error code.
func connSends(cmd uint32, r ref, code uint32) step {
	return func(h *harness) {
		h.t.Helper()
		m := h.peer.expect(cmd, h.msgid(r))
		if m.Error != code {
			h.t.Fatalf("the Conn sent %s, want error %s", describe(m), dmsg.ErrorString(code))
		}
	}
}

// connSendsAux: like connSends with error 0, and checks the aux data.
func connSendsAux(cmd uint32, r ref, aux string) step {
	return func(h *harness) {
		h.t.Helper()
		m := h.peer.expect(cmd, h.msgid(r))
		if string(m.Aux) != aux {
			h.t.Fatalf("the Conn sent %s, want aux %q", describe(m), aux)
		}
	}
}

// handlerGets: the next handler call is kind ("accept", "msg", "oneway")
// with exactly cmd and r's msgid.
func handlerGets(kind string, cmd uint32, r ref) step {
	return func(h *harness) {
		h.t.Helper()
		e := h.rec.next(h.t)
		if e.kind != kind || e.cmd != cmd || e.msgid != h.msgid(r) {
			h.t.Fatalf("handler got %v, want %s %08x %s msgid %d", e, kind, cmd, dmsg.CmdString(cmd), h.msgid(r))
		}
	}
}

// weOpen: the Link's user opens a transaction with cmd (CREATE included).
func weOpen(name string, cmd uint32, opts ...msgOpt) step {
	return func(h *harness) {
		h.t.Helper()
		tx, err := h.conn.Open(msg(cmd, 0, opts...), h.rec.txHandler)
		if err != nil {
			h.t.Fatalf("Open(%s): %v", dmsg.CmdString(cmd), err)
		}
		h.rec.track(tx)
		h.ours[name] = tx
	}
}

// weSend: the Link's user sends cmd in the transaction r.
func weSend(r ref, cmd uint32) step {
	return func(h *harness) {
		h.t.Helper()
		if err := h.tx(r).Send(msg(cmd, 0)); err != nil {
			h.t.Fatalf("Tx.Send(%s): %v", dmsg.CmdString(cmd), err)
		}
	}
}

// weSendFails: sending cmd in r fails with want.
func weSendFails(r ref, cmd uint32, want error) step {
	return func(h *harness) {
		h.t.Helper()
		if err := h.tx(r).Send(msg(cmd, 0)); !errors.Is(err, want) {
			h.t.Fatalf("Tx.Send(%s) = %v, want %v", dmsg.CmdString(cmd), err, want)
		}
	}
}

func weClose(r ref) step { return func(h *harness) { h.tx(r).Close() } }
func weCloseError(r ref, code uint32) step {
	return func(h *harness) { h.tx(r).CloseError(code) }
}
func weAbort(r ref, code uint32) step { return func(h *harness) { h.tx(r).Abort(code) } }

// openTx: the Link holds n transactions.
func openTx(n int) step {
	return func(h *harness) {
		h.t.Helper()
		if got := h.conn.Stats().OpenTx; got != n {
			h.t.Fatalf("Stats().OpenTx = %d, want %d", got, n)
		}
	}
}

// txDone: transaction r is finished (or not).
func txDone(r ref, want bool) step {
	return func(h *harness) {
		h.t.Helper()
		if got := h.tx(r).Done(); got != want {
			h.t.Fatalf("Tx.Done() = %v, want %v", got, want)
		}
	}
}

// settle waits until the Link has handled everything the peer sent and
// sent everything that caused, then checks nothing unexpected happened.
func settle() step { return func(h *harness) { h.settle() } }

// linkFails: the link goes down with an error that check accepts.
func linkFails(what string, check func(error) bool) step {
	return func(h *harness) {
		h.t.Helper()
		waitDone(h.t, h.conn)
		if err := h.conn.Err(); !check(err) {
			h.t.Fatalf("link went down with %v (%T), want %s", err, err, what)
		}
	}
}

func violation() step { return linkFails("a *ProtocolError", isProtocolError) }

// barrier uses a LNK_PING: the Link handles messages in order and answers
// the ping after everything before it, so once the answer is in, every
// handler call and every message the earlier input caused has happened.
// It returns the handler calls no expectation consumed; any message from
// the Link before the ping's answer is a failure.
func (h *harness) barrier() []event {
	h.t.Helper()
	h.peer.mustSend(msg(dmsg.LnkPing, 0))
	for {
		m := h.peer.next()
		if m.Cmd == dmsg.LnkPing|dmsg.FlagReply && m.MsgID == 0 {
			break
		}
		h.t.Errorf("unexpected message from the Conn: %s", describe(m))
	}
	return h.rec.unseen()
}

// settle is a barrier after which nothing unexpected may have happened.
func (h *harness) settle() {
	h.t.Helper()
	for _, e := range h.barrier() {
		h.t.Errorf("unexpected handler call: %v", e)
	}
}

// run plays steps, then ends the link from the peer side (unless it is
// already down) and checks what link loss must guarantee.
func (h *harness) run(steps ...step) {
	h.t.Helper()
	for _, s := range steps {
		s(h)
	}
	if !isDone(h.conn) {
		h.settle()
		h.peer.Close() // EOF at a message boundary
		waitDone(h.t, h.conn)
		if err := h.conn.Err(); err != nil {
			h.t.Errorf("link closed by the peer at a message boundary: Err() = %v, want nil", err)
		}
	}
	h.finish()
}

// finish checks the state after Done: nothing open, and every transaction
// with a handler saw exactly one terminating message.
func (h *harness) finish() {
	h.t.Helper()
	if n := h.conn.Stats().OpenTx; n != 0 {
		h.t.Errorf("Stats().OpenTx = %d after Done, want 0", n)
	}
	h.rec.checkTerminations(h.t)
}
