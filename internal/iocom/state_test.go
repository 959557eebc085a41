package iocom_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// These tests drive one Conn from a raw peer: the test encodes hand-built
// messages with a dmsg.Encoder onto one end of a net.Pipe (or, to break the
// framing, hand-sealed frames) and decodes what the Conn writes on the
// other, so every flag on the wire is the test's choice or the Conn's.

// Wire values from PROTOCOL.md section 3 and the C captures.
const (
	ackReply    = 0xa80fff01 // LNK_ERROR|CREATE|REPLY|REVTRANS: accepted, left open
	closeReply  = 0x680fff01 // LNK_ERROR|DELETE|REPLY|REVTRANS: closing a peer's transaction
	closeOurs   = 0x400fff01 // LNK_ERROR|DELETE: closing a transaction we opened
	refusal     = 0xe80fff01 // LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS
	streamReply = 0x280fff01 // LNK_ERROR|REPLY|REVTRANS: in-stream reply
	unknownCmd  = 0x00500101 // a BLK command nobody handles
)

// defaultPolicies is how the Conn under test answers the peer's
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
	conn *iocom.Conn
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
	name string // a transaction the Conn opened, by the name open gave it
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

// connSends: the next message the Conn writes is exactly cmd with r's
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

// weOpen: the Conn's user opens a transaction with cmd (CREATE included).
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

// weSend: the Conn's user sends cmd in the transaction r.
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

// openTx: the Conn holds n transactions.
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

// settle waits until the Conn has handled everything the peer sent and
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

// barrier uses a LNK_PING: the Conn handles messages in order and answers
// the ping after everything before it, so once the answer is in, every
// handler call and every message the earlier input caused has happened.
// It returns the handler calls no expectation consumed; any message from
// the Conn before the ping's answer is a failure.
func (h *harness) barrier() []event {
	h.t.Helper()
	h.peer.mustSend(msg(dmsg.LnkPing, 0))
	for {
		m, err := h.peer.next()
		if err != nil {
			h.t.Fatalf("link went down at a barrier: %v (Err %v)", err, h.conn.Err())
		}
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
		h.peer.close() // EOF at a message boundary
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

// ---- every flag combination on both tables ----

type outcome string

const (
	accepted  outcome = "is accepted"
	delivered outcome = "is delivered to the transaction"
	dropped   outcome = "is dropped"
	violates  outcome = "is a protocol violation"
	oneWay    outcome = "is a one-way message"
)

// tableState is a state of the msgid a probe message names, with the steps
// that reach it. probe is the msgid the probe carries.
type tableState struct {
	name  string
	setup []step
	probe ref
}

var remoteStates = []tableState{
	{name: "a msgid the peer has not opened", probe: theirs(9)},
	{name: "the peer's open transaction", probe: theirs(9), setup: []step{
		peerSends(dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		handlerGets("accept", dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		connSends(ackReply, theirs(9), 0),
	}},
	{name: "the peer's transaction after its DELETE", probe: theirs(9), setup: []step{
		peerSends(dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		handlerGets("accept", dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		connSends(ackReply, theirs(9), 0),
		peerSends(dmsg.LnkError|dmsg.FlagDelete, theirs(9)),
		handlerGets("msg", dmsg.LnkError|dmsg.FlagDelete, theirs(9)),
	}},
}

var localStates = []tableState{
	{name: "a msgid we have not opened", probe: theirs(9)},
	{name: "our transaction awaiting its reply", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
	}},
	{name: "our transaction after the peer's REPLY|CREATE", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
		peerSends(ackReply, ours("a")),
		handlerGets("msg", ackReply, ours("a")),
	}},
	{name: "our transaction after the peer's REPLY|DELETE", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
		peerSends(ackReply, ours("a")),
		handlerGets("msg", ackReply, ours("a")),
		peerSends(closeReply, ours("a")),
		handlerGets("msg", closeReply, ours("a")),
	}},
}

// flagCase is the expected fate of a probe carrying flags in a state.
type flagCase struct {
	flags string
	want  outcome
}

// remoteTable: messages without REPLY or REVTRANS, looked up among the
// transactions the peer opened.
var remoteTable = map[string][]flagCase{
	"a msgid the peer has not opened": {
		{"", violates}, // in-stream message for a transaction that does not exist
		{"CREATE", accepted},
		{"DELETE", violates},
		{"CREATE|DELETE", accepted},
		{"ABORT", dropped},
		{"CREATE|ABORT", accepted},
		{"DELETE|ABORT", dropped}, // a late abort of something already gone
		{"CREATE|DELETE|ABORT", accepted},
	},
	"the peer's open transaction": {
		{"", delivered},
		{"CREATE", violates},
		{"DELETE", delivered},
		{"CREATE|DELETE", violates},
		{"ABORT", delivered},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", violates},
	},
	"the peer's transaction after its DELETE": {
		{"", violates},
		{"CREATE", violates}, // the msgid is not free until we DELETE too
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", violates},
	},
}

// localTable: messages with REPLY and/or REVTRANS, looked up among the
// transactions the Conn opened. Each row is checked with REPLY, with
// REVTRANS and with both.
var localTable = map[string][]flagCase{
	"a msgid we have not opened": {
		{"", violates},
		{"CREATE", violates},
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", dropped},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", dropped},
	},
	"our transaction awaiting its reply": {
		{"", violates}, // nothing may come before REPLY|CREATE
		{"CREATE", delivered},
		{"DELETE", violates},
		{"CREATE|DELETE", delivered}, // a single-message answer or a refusal
		{"ABORT", delivered},
		{"CREATE|ABORT", delivered},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", delivered},
	},
	"our transaction after the peer's REPLY|CREATE": {
		{"", delivered},
		{"CREATE", violates}, // REPLY|CREATE twice
		{"DELETE", delivered},
		{"CREATE|DELETE", violates},
		{"ABORT", delivered},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", violates},
	},
	"our transaction after the peer's REPLY|DELETE": {
		{"", violates}, // message after the peer's DELETE
		{"CREATE", violates},
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", dropped},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", dropped},
	},
}

func TestEveryFlagCombinationOnThePeersTable(t *testing.T) {
	for _, st := range remoteStates {
		for _, fc := range remoteTable[st.name] {
			runFlagCase(t, st, flags(fc.flags), fc.want)
		}
	}
}

func TestEveryFlagCombinationOnOurTable(t *testing.T) {
	for _, st := range localStates {
		for _, fc := range localTable[st.name] {
			for _, rev := range []string{"REPLY", "REVTRANS", "REPLY|REVTRANS"} {
				runFlagCase(t, st, flags(fc.flags)|flags(rev), fc.want)
			}
		}
	}
}

// TestEveryFlagCombinationWithMsgidZero: msgid 0 is one-way; a transaction
// may not use it, but a late abort naming it is harmless.
func TestEveryFlagCombinationWithMsgidZero(t *testing.T) {
	for f := uint32(0); f < 32; f++ {
		var fl uint32
		for bit, name := range []string{"CREATE", "DELETE", "REPLY", "ABORT", "REVTRANS"} {
			if f&(1<<bit) != 0 {
				fl |= flags(name)
			}
		}
		want := oneWay
		switch {
		case fl&(dmsg.FlagCreate|dmsg.FlagDelete) == 0:
		case fl&dmsg.FlagAbort != 0:
			want = dropped
		default:
			want = violates
		}
		runFlagCase(t, tableState{name: "msgid 0", probe: theirs(0)}, fl, want)
	}
}

// runFlagCase reaches st, sends one probe carrying fl and checks its fate.
func runFlagCase(t *testing.T, st tableState, fl uint32, want outcome) {
	cmd := dmsg.LnkError | fl
	if fl&dmsg.FlagCreate != 0 && fl&(dmsg.FlagReply|dmsg.FlagRevTrans) == 0 {
		cmd = dmsg.LnkCirc | fl // opening: a command the handler accepts silently
	}
	t.Run(fmt.Sprintf("%s for %s %s", flagNames(fl), st.name, want), func(t *testing.T) {
		guard(t)
		h := newHarness(t, nil)
		for _, s := range st.setup {
			s(h)
		}
		id := h.msgid(st.probe)
		h.peer.mustSend(msg(cmd, id))
		if want == violates {
			violation()(h)
			var pe *iocom.ProtocolError
			errors.As(h.conn.Err(), &pe)
			if pe.Cmd != cmd || pe.MsgID != id {
				t.Errorf("ProtocolError names %08x msgid %d, want the probe %08x msgid %d", pe.Cmd, pe.MsgID, cmd, id)
			}
			h.finish()
			return
		}
		ev := h.barrier()
		if len(ev) != countEvents(want) {
			t.Fatalf("handler calls %v, want %d (the probe %s)", ev, countEvents(want), want)
		}
		kind := map[outcome]string{accepted: "accept", delivered: "msg", oneWay: "oneway"}[want]
		if len(ev) == 1 && (ev[0].kind != kind || ev[0].cmd != cmd || ev[0].msgid != id) {
			t.Errorf("handler got %v, want %s of the probe", ev[0], kind)
		}
		h.run()
	})
}

// countEvents is how many handler calls a probe with this fate causes.
func countEvents(o outcome) int {
	if o == dropped || o == violates {
		return 0
	}
	return 1
}

// ---- scenarios ----

type scenario struct {
	name     string
	policies map[uint32]policy
	steps    []step
}

func runScenarios(t *testing.T, scenarios []scenario) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			guard(t)
			newHarness(t, sc.policies).run(sc.steps...)
		})
	}
}

const (
	C  = dmsg.FlagCreate
	D  = dmsg.FlagDelete
	R  = dmsg.FlagReply
	A  = dmsg.FlagAbort
	RT = dmsg.FlagRevTrans
)

func TestTransactions(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "a single-message transaction from the peer is answered by one REPLY|CREATE|DELETE|REVTRANS", steps: []step{
			peerSends(dmsg.DbgShell|C|D, theirs(5), withAux("hello")),
			handlerGets("accept", dmsg.DbgShell|C|D, theirs(5)),
			connSendsAux(refusal, theirs(5), "hello"),
			openTx(0),
		}},
		{name: "a single-message transaction of ours is finished by the peer's single reply", steps: []step{
			weOpen("a", dmsg.DbgShell|C|D, withAux("hi")),
			connSendsAux(dmsg.DbgShell|C|D, ours("a"), "hi"),
			openTx(1),
			peerSends(refusal, ours("a"), withAux("hi")),
			handlerGets("msg", refusal, ours("a")),
			openTx(0),
			txDone(ours("a"), true),
		}},
		{name: "the peer's multi-message transaction carries in-stream messages both ways", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(dmsg.LnkSpan, theirs(5)),
			handlerGets("msg", dmsg.LnkSpan, theirs(5)),
			weSend(theirs(5), dmsg.LnkError),
			connSends(streamReply, theirs(5), 0),
			peerSends(dmsg.LnkError, theirs(5)),
			handlerGets("msg", dmsg.LnkError, theirs(5)),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			openTx(1),
			weClose(theirs(5)),
			connSends(closeReply, theirs(5), 0),
			openTx(0),
			txDone(theirs(5), true),
		}},
		{name: "our multi-message transaction carries in-stream messages both ways", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			weSend(ours("a"), dmsg.LnkSpan),
			connSends(dmsg.LnkSpan, ours("a"), 0),
			peerSends(streamReply, ours("a")),
			handlerGets("msg", streamReply, ours("a")),
			peerSends(dmsg.LnkError|RT, ours("a")), // non-reply message inside our transaction
			handlerGets("msg", dmsg.LnkError|RT, ours("a")),
			weClose(ours("a")),
			connSends(closeOurs, ours("a"), 0),
			openTx(1),
			peerSends(closeReply, ours("a")),
			handlerGets("msg", closeReply, ours("a")),
			openTx(0),
		}},
		{name: "the peer keeps sending after we DELETE our side of its transaction", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			weClose(theirs(5)),
			connSends(closeReply, theirs(5), 0),
			weSendFails(theirs(5), dmsg.LnkError, iocom.ErrTxDone),
			peerSends(dmsg.LnkSpan, theirs(5)),
			handlerGets("msg", dmsg.LnkSpan, theirs(5)),
			peerSends(dmsg.LnkSpan, theirs(5)),
			handlerGets("msg", dmsg.LnkSpan, theirs(5)),
			openTx(1),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			openTx(0),
		}},
		{name: "we keep sending after the peer DELETEs its side of its transaction", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			weSend(theirs(5), dmsg.LnkSpan),
			connSends(dmsg.LnkSpan|R|RT, theirs(5), 0),
			weSend(theirs(5), dmsg.LnkError),
			connSends(streamReply, theirs(5), 0),
			weClose(theirs(5)),
			connSends(closeReply, theirs(5), 0),
			openTx(0),
		}},
		{name: "we keep sending after the peer DELETEs its side of our transaction", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(closeReply, ours("a")),
			handlerGets("msg", closeReply, ours("a")),
			weSend(ours("a"), dmsg.LnkSpan),
			connSends(dmsg.LnkSpan, ours("a"), 0),
			weClose(ours("a")),
			connSends(closeOurs, ours("a"), 0),
			openTx(0),
		}},
		{name: "the peer keeps answering after we DELETE our side of our transaction", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			weClose(ours("a")),
			connSends(closeOurs, ours("a"), 0),
			weSendFails(ours("a"), dmsg.LnkSpan, iocom.ErrTxDone),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(streamReply, ours("a")),
			handlerGets("msg", streamReply, ours("a")),
			openTx(1),
			peerSends(closeReply, ours("a")),
			handlerGets("msg", closeReply, ours("a")),
			openTx(0),
		}},
		{name: "an unknown command opening a transaction is refused with NOSUPP", steps: []step{
			peerSends(unknownCmd|C, theirs(5)),
			handlerGets("accept", unknownCmd|C, theirs(5)),
			connSends(refusal, theirs(5), dmsg.ErrNoSupp),
			openTx(1), // until the opener's DELETE
			peerSends(closeOurs, theirs(5)),
			settle(), // the refused transaction has no handler: nothing delivered
			openTx(0),
		}},
		{name: "an unknown single-message transaction is refused with NOSUPP and finished", steps: []step{
			peerSends(unknownCmd|C|D, theirs(5)),
			handlerGets("accept", unknownCmd|C|D, theirs(5)),
			connSends(refusal, theirs(5), dmsg.ErrNoSupp),
			openTx(0),
		}},
		{name: "the peer's in-stream messages racing our refusal are dropped", steps: []step{
			peerSends(unknownCmd|C, theirs(5)),
			handlerGets("accept", unknownCmd|C, theirs(5)),
			connSends(refusal, theirs(5), dmsg.ErrNoSupp),
			peerSends(dmsg.LnkError, theirs(5)),
			peerSends(closeOurs, theirs(5)),
			settle(),
			openTx(0),
		}},
		{name: "a handler that answers its refusal itself gets no second answer", policies: map[uint32]policy{dmsg.LnkCirc: refuseParam}, steps: []step{
			peerSends(dmsg.LnkCirc|C, theirs(5)),
			handlerGets("accept", dmsg.LnkCirc|C, theirs(5)),
			connSends(refusal, theirs(5), dmsg.ErrParam),
			settle(),
			peerSends(closeOurs, theirs(5)),
			settle(),
			openTx(0),
		}},
		{name: "our transaction refused by the peer stays open until our DELETE", steps: []step{
			weOpen("conn", dmsg.LnkConn|C),
			connSends(dmsg.LnkConn|C, ours("conn"), 0),
			peerSends(refusal, ours("conn"), withError(dmsg.ErrNoSupp)),
			handlerGets("msg", refusal, ours("conn")),
			openTx(1),
			txDone(ours("conn"), false),
			weClose(ours("conn")),
			connSends(closeOurs, ours("conn"), 0),
			openTx(0),
		}},
		{name: "our transaction refused by the peer and left open is not terminated again by link loss", steps: []step{
			weOpen("conn", dmsg.LnkConn|C),
			connSends(dmsg.LnkConn|C, ours("conn"), 0),
			peerSends(refusal, ours("conn"), withError(dmsg.ErrNoSupp)),
			handlerGets("msg", refusal, ours("conn")),
			// run() closes the link now; the handler already had its DELETE.
		}},
		{name: "the peer's single-message transaction not answered yet is not terminated again by link loss", steps: []step{
			peerSends(dmsg.LnkCirc|C|D, theirs(5)),
			handlerGets("accept", dmsg.LnkCirc|C|D, theirs(5)),
			openTx(1),
		}},
		{name: "the peer's transaction left open is terminated by link loss", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
		}},
		{name: "the peer may reuse a msgid once its transaction is finished", steps: []step{
			peerSends(dmsg.DbgShell|C|D, theirs(5), withAux("one")),
			handlerGets("accept", dmsg.DbgShell|C|D, theirs(5)),
			connSendsAux(refusal, theirs(5), "one"),
			peerSends(dmsg.DbgShell|C|D, theirs(5), withAux("two")),
			handlerGets("accept", dmsg.DbgShell|C|D, theirs(5)),
			connSendsAux(refusal, theirs(5), "two"),
			openTx(0),
		}},
		{name: "the peer may open a transaction with a msgid we use for ours", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(dmsg.LnkSpan|C, ours("a")),
			handlerGets("accept", dmsg.LnkSpan|C, ours("a")),
			connSends(ackReply, ours("a"), 0),
			openTx(2),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(closeOurs, ours("a")),
			handlerGets("msg", closeOurs, ours("a")),
		}},
		{name: "an in-stream message the handler does not understand reaches the transaction", steps: []step{
			// circuit-assert-shell.c2s.bin: a shell acks the span we relayed,
			// then sends DBG_SHELL|REVTRANS inside it ("run this there").
			weOpen("span", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("span"), 0),
			peerSends(ackReply, ours("span")),
			handlerGets("msg", ackReply, ours("span")),
			peerSends(dmsg.DbgShell|RT, ours("span"), withAux("help\x00")),
			handlerGets("msg", dmsg.DbgShell|RT, ours("span")),
			settle(),
			openTx(1),
		}},
	})
}

func TestAborts(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "ABORT|DELETE after the peer's own DELETE is dropped", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			peerSends(dmsg.LnkError|A|D, theirs(5)),
			settle(),
			weClose(theirs(5)),
			connSends(closeReply, theirs(5), 0),
			openTx(0),
		}},
		{name: "ABORT|DELETE for a finished transaction of the peer's is dropped", steps: []step{
			peerSends(dmsg.DbgShell|C|D, theirs(5)),
			handlerGets("accept", dmsg.DbgShell|C|D, theirs(5)),
			connSends(refusal, theirs(5), 0),
			peerSends(dmsg.LnkError|A|D, theirs(5)),
			settle(),
		}},
		{name: "REPLY|ABORT|DELETE for a finished transaction of ours is dropped", steps: []step{
			weOpen("a", dmsg.DbgShell|C|D),
			connSends(dmsg.DbgShell|C|D, ours("a"), 0),
			peerSends(refusal, ours("a")),
			handlerGets("msg", refusal, ours("a")),
			peerSends(dmsg.LnkError|R|RT|A|D, ours("a")),
			settle(),
		}},
		{name: "the peer's ABORT|DELETE crossing our DELETE finishes the transaction", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			weClose(theirs(5)),
			connSends(closeReply, theirs(5), 0),
			peerSends(dmsg.LnkError|A|D, theirs(5), withError(dmsg.ErrIO)),
			handlerGets("msg", dmsg.LnkError|A|D, theirs(5)),
			openTx(0),
		}},
		{name: "a standalone ABORT mid-stream is delivered and the transaction goes on", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(dmsg.LnkError|A, theirs(5)),
			handlerGets("msg", dmsg.LnkError|A, theirs(5)),
			peerSends(dmsg.LnkSpan, theirs(5)),
			handlerGets("msg", dmsg.LnkSpan, theirs(5)),
			openTx(1),
		}},
		{name: "a non-blocking CREATE|ABORT is accepted like a CREATE", steps: []step{
			peerSends(dmsg.LnkSpan|C|A, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C|A, theirs(5)),
			connSends(ackReply, theirs(5), 0),
		}},
		{name: "our ABORT after our DELETE tears down our half-closed transaction", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			weClose(ours("a")),
			connSends(closeOurs, ours("a"), 0),
			weAbort(ours("a"), dmsg.ErrIO),
			connSends(dmsg.LnkError|A|D, ours("a"), dmsg.ErrIO),
			openTx(1),
			peerSends(dmsg.LnkError|R|RT|A|D, ours("a")),
			handlerGets("msg", dmsg.LnkError|R|RT|A|D, ours("a")),
			openTx(0),
		}},
		{name: "our ABORT of the peer's transaction carries REPLY|REVTRANS", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			weAbort(theirs(5), dmsg.ErrIO),
			connSends(dmsg.LnkError|R|RT|A|D, theirs(5), dmsg.ErrIO),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			openTx(0),
		}},
	})
}

func TestSentFlags(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "Tx.Close on our transaction sends LNK_ERROR|DELETE", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(0x80001207, ours("a"), 0),
			weClose(ours("a")),
			connSends(0x400fff01, ours("a"), 0),
			peerSends(refusal, ours("a")),
			handlerGets("msg", refusal, ours("a")),
		}},
		{name: "Tx.Close on the peer's answered transaction sends LNK_ERROR|DELETE|REPLY|REVTRANS", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(0xa80fff01, theirs(5), 0),
			weClose(theirs(5)),
			connSends(0x680fff01, theirs(5), 0),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
		}},
		{name: "Tx.CloseError on the peer's unanswered transaction refuses it", steps: []step{
			peerSends(dmsg.LnkCirc|C, theirs(5)),
			handlerGets("accept", dmsg.LnkCirc|C, theirs(5)),
			weCloseError(theirs(5), dmsg.ErrNoSupp),
			connSends(0xe80fff01, theirs(5), dmsg.ErrNoSupp),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
		}},
		{name: "Tx.Close twice sends one DELETE", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(0x80001207, ours("a"), 0),
			weClose(ours("a")),
			weClose(ours("a")),
			connSends(0x400fff01, ours("a"), 0),
			settle(),
			peerSends(refusal, ours("a")),
			handlerGets("msg", refusal, ours("a")),
		}},
		{name: "Tx.Send sets the flags the transaction calls for, whatever the caller set", steps: []step{
			weOpen("a", dmsg.LnkSpan|C|R|RT),
			connSends(0x80001207, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			weSend(ours("a"), dmsg.LnkError|C|R|RT|dmsg.FlagRevCirc),
			connSends(0x000fff01, ours("a"), 0),
		}},
		{name: "a message on an unknown circuit is dropped", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5), onCircuit(3)),
			peerSends(dmsg.DbgShell, theirs(0), onCircuit(3)),
			settle(),
		}},
	})
}

func TestOneWayMessages(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "LNK_PING is answered with a one-way LNK_PING|REPLY and not passed on", steps: []step{
			peerSends(dmsg.LnkPing, theirs(0)),
			connSends(0x20000101, theirs(0), 0),
			settle(),
		}},
		{name: "LNK_PING|REPLY is passed on as a one-way message", steps: []step{
			peerSends(dmsg.LnkPing|R, theirs(0)),
			handlerGets("oneway", dmsg.LnkPing|R, theirs(0)),
		}},
		{name: "LNK_PAD is ignored", steps: []step{
			peerSends(dmsg.LnkPad, theirs(0)),
			settle(),
		}},
		{name: "DBG_SHELL and its REPLY reach Handler.OneWay", steps: []step{
			peerSends(dmsg.DbgShell, theirs(0), withAux("tree\x00")),
			handlerGets("oneway", dmsg.DbgShell, theirs(0)),
			peerSends(dmsg.DbgShell|R, theirs(0), withAux("debug> \x00")),
			handlerGets("oneway", dmsg.DbgShell|R, theirs(0)),
		}},
		{name: "an unknown one-way command reaches Handler.OneWay to be dropped there", steps: []step{
			peerSends(unknownCmd, theirs(0)),
			handlerGets("oneway", unknownCmd, theirs(0)),
		}},
	})
}

func TestSendOneWayClearsTransactionFlags(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	m := msg(dmsg.DbgShell|C|D|R|RT|dmsg.FlagRevCirc, 77, onCircuit(4), withAux("out\x00"))
	if err := h.conn.SendOneWay(m); err != nil {
		t.Fatal(err)
	}
	got := h.peer.expect(dmsg.DbgShell|R, 0)
	if got.Circuit != 0 || string(got.Aux) != "out\x00" {
		t.Fatalf("got %s, want DBG_SHELL|REPLY on circuit 0 with the aux data", describe(got))
	}
	h.run()
}

// ---- violations ----

// TestViolationsCloseOnlyThatLink: each violation of section 3 closes the
// link with a *ProtocolError, terminates what was open on it, and leaves
// another link of the same process working.
func TestViolationsCloseOnlyThatLink(t *testing.T) {
	guard(t)
	bystander := newEchoPair(t)
	violations := []scenario{
		{name: "CREATE for a msgid the peer already has open", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(dmsg.LnkSpan|C, theirs(5)),
		}},
		{name: "DELETE for a transaction that does not exist", steps: []step{
			peerSends(closeOurs, theirs(7)),
		}},
		{name: "REPLY|DELETE for a transaction we never opened", steps: []step{
			peerSends(closeReply, theirs(7)),
		}},
		{name: "an in-stream message for a transaction that does not exist", steps: []step{
			peerSends(dmsg.LnkSpan, theirs(7)),
		}},
		{name: "an in-stream reply for a transaction we never opened", steps: []step{
			peerSends(streamReply, theirs(7)),
		}},
		{name: "REPLY|CREATE twice", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(ackReply, ours("a")),
		}},
		{name: "a reply before REPLY|CREATE", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(streamReply, ours("a")),
		}},
		{name: "a message after the peer's DELETE of its transaction", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			peerSends(dmsg.LnkSpan, theirs(5)),
		}},
		{name: "a reply after the peer's REPLY|DELETE of our transaction", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(closeReply, ours("a")),
			handlerGets("msg", closeReply, ours("a")),
			peerSends(streamReply, ours("a")),
		}},
		{name: "a transaction with msgid 0", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(0)),
		}},
		{name: "a DELETE with msgid 0", steps: []step{
			peerSends(closeOurs, theirs(0)),
		}},
	}
	for _, v := range violations {
		t.Run(v.name+" closes only that link", func(t *testing.T) {
			guard(t)
			h := newHarness(t, nil)
			// Something open on the victim that link loss must terminate.
			weOpen("conn", dmsg.LnkConn|C)(h)
			connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
			h.run(append(slices.Clone(v.steps), violation())...)
			bystander.check(t)
		})
	}
}

// echoPair is two Conns over a net.Pipe whose handlers echo single-message
// transactions: a link that must keep working while others fail.
type echoPair struct {
	a, b *iocom.Conn
}

type echoHandler struct{}

func (echoHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	r := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
	r.SetAux(m.Aux)
	tx.Send(r)
	return func(*iocom.Tx, *dmsg.Msg) {}
}
func (echoHandler) OneWay(*iocom.Conn, *dmsg.Msg) {}

func newEchoPair(t *testing.T) *echoPair {
	x, y := net.Pipe()
	cfg := iocom.Config{Handler: echoHandler{}, KeepaliveInterval: -1, KeepaliveTimeout: -1}
	cfg.ID = "bystander-a"
	a := startConn(t, x, cfg)
	cfg.ID = "bystander-b"
	b := startConn(t, y, cfg)
	return &echoPair{a: a, b: b}
}

// check runs one transaction across the pair.
func (p *echoPair) check(t *testing.T) {
	t.Helper()
	if isDone(p.a) || isDone(p.b) {
		t.Fatalf("bystander link went down: %v / %v", p.a.Err(), p.b.Err())
	}
	got := make(chan *dmsg.Msg, 1)
	_, err := p.a.Open(msg(dmsg.DbgShell|C|D, 0, withAux("still here")), func(tx *iocom.Tx, m *dmsg.Msg) { got <- m })
	if err != nil {
		t.Fatalf("bystander Open: %v", err)
	}
	select {
	case m := <-got:
		if string(m.Aux) != "still here" {
			t.Fatalf("bystander answered %s", describe(m))
		}
	case <-p.a.Done():
		t.Fatalf("bystander link went down: %v", p.a.Err())
	}
}

// ---- framing ----

// TestFramingErrorsCloseTheLink: a stream the decoder rejects closes the
// link with that error, and what was open on it is terminated.
func TestFramingErrorsCloseTheLink(t *testing.T) {
	span := func() *dmsg.Msg { return msg(dmsg.LnkSpan|C, 5, withAux("payload")) }
	cases := []struct {
		name string
		bad  func(p *rawPeer) []byte // what the peer writes after one good message
		want error
	}{
		{"a header CRC mismatch", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x08] ^= 1
			return b
		}, dmsg.ErrHeaderCRC},
		{"an aux CRC mismatch", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[len(b)-60] ^= 1 // inside the aux data
			return b
		}, dmsg.ErrAuxCRC},
		{"a sequence number out of order", func(p *rawPeer) []byte {
			p.seq++
			return p.frame(span())
		}, dmsg.ErrSequence},
		{"a bad magic", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0], b[1] = 0x34, 0x12
			return b
		}, dmsg.ErrBadMagic},
		{"an extended header of 0 units", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x20] = 0
			return b
		}, dmsg.ErrHeaderSize},
		{"an extended header of 33 units", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x20] = 33
			return b
		}, dmsg.ErrHeaderSize},
		{"aux data over 1 MiB", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x28], b[0x29], b[0x2a], b[0x2b] = 0x40, 0x00, 0x10, 0x00 // 1 MiB + 64
			return b
		}, dmsg.ErrAuxSize},
		{"out-of-band aux data", func(p *rawPeer) []byte {
			return p.frame(msg(dmsg.LnkSpan|C, 5, withAuxDescr(1)))
		}, dmsg.ErrAuxDescr},
		{"the stream ending inside a base header", func(p *rawPeer) []byte {
			return p.frame(span())[:40]
		}, io.ErrUnexpectedEOF},
		{"the stream ending inside an extended header", func(p *rawPeer) []byte {
			return p.frame(span())[:200]
		}, io.ErrUnexpectedEOF},
		{"the stream ending inside the aux data", func(p *rawPeer) []byte {
			b := p.frame(span())
			return b[:len(b)-10]
		}, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name+" closes the link", func(t *testing.T) {
			guard(t)
			h := newHarness(t, nil)
			weOpen("conn", dmsg.LnkConn|C)(h)
			connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
			peerSends(dmsg.DbgShell, theirs(0), withAux("fine"))(h)
			handlerGets("oneway", dmsg.DbgShell, theirs(0))(h)
			h.peer.writeRaw(tc.bad(h.peer)) // may fail once the Conn stops reading
			h.peer.close()                  // ends truncated frames
			waitDone(t, h.conn)
			if err := h.conn.Err(); !errors.Is(err, tc.want) {
				t.Fatalf("Err() = %v, want %v", err, tc.want)
			}
			if isProtocolError(h.conn.Err()) {
				t.Fatalf("a framing error is not a protocol violation: %v", h.conn.Err())
			}
			h.finish()
			if n := h.rec.termsOf(h.ours["conn"]); n != 1 {
				t.Fatalf("the open LNK_CONN saw %d terminating messages, want 1", n)
			}
		})
	}
}

func TestEndOfStreamAtAMessageBoundaryIsClean(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	h.run(
		weOpen("conn", dmsg.LnkConn|C),
		connSends(dmsg.LnkConn|C, ours("conn"), 0),
		peerSends(ackReply, ours("conn")),
		handlerGets("msg", ackReply, ours("conn")),
		peerSends(dmsg.DbgShell, theirs(0), withAuxBytes(bytes.Repeat([]byte("x"), 1000))),
		handlerGets("oneway", dmsg.DbgShell, theirs(0)),
	) // run: the peer closes, Err() must be nil, the LNK_CONN gets LOSTLINK
	e := h.rec.last()
	if e.cmd != dmsg.LnkError|R|RT|A|D || e.err != dmsg.ErrLostLink {
		t.Fatalf("last handler call %v, want LNK_ERROR|REPLY|REVTRANS|ABORT|DELETE with LOSTLINK", e)
	}
}

func TestLocalCloseIsClean(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	weOpen("conn", dmsg.LnkConn|C)(h)
	connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
	h.conn.Close()
	waitDone(t, h.conn)
	if err := h.conn.Err(); err != nil {
		t.Fatalf("Err() after Close = %v, want nil", err)
	}
	if _, err := h.conn.Open(msg(dmsg.LnkSpan|C, 0), nil); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if err := h.tx(ours("conn")).Send(msg(dmsg.LnkError, 0)); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("Tx.Send after Close = %v, want ErrClosed", err)
	}
	if err := h.conn.SendOneWay(msg(dmsg.DbgShell, 0)); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("SendOneWay after Close = %v, want ErrClosed", err)
	}
	h.finish()
}

// TestUnsendableMessagesAreRefusedNotFatal: a message the encoder cannot
// send is refused by the call that queues it; the link stays up.
func TestUnsendableMessagesAreRefusedNotFatal(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	weOpen("a", dmsg.LnkSpan|C)(h)
	connSends(dmsg.LnkSpan|C, ours("a"), 0)(h)
	big := make([]byte, dmsg.MaxAuxSize+1)
	cases := []struct {
		name string
		send func() error
		want error
	}{
		{"Open with aux data over 1 MiB", func() error {
			_, err := h.conn.Open(msg(dmsg.DbgShell|C, 0, withAuxBytes(big)), nil)
			return err
		}, dmsg.ErrAuxSize},
		{"Open with a header size of 0", func() error {
			_, err := h.conn.Open(msg(0x00100100|C, 0), nil)
			return err
		}, dmsg.ErrHeaderSize},
		{"Tx.Send with aux data over 1 MiB", func() error {
			return h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxBytes(big)))
		}, dmsg.ErrAuxSize},
		{"Tx.Send with out-of-band aux data", func() error {
			return h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxDescr(1)))
		}, dmsg.ErrAuxDescr},
		{"SendOneWay with a header size of 33", func() error {
			return h.conn.SendOneWay(msg(dmsg.DbgShell&^dmsg.SizeMask|33, 0))
		}, dmsg.ErrHeaderSize},
	}
	for _, tc := range cases {
		if err := tc.send(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Exactly 1 MiB is fine, and the link is still up.
	if err := h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxBytes(big[:dmsg.MaxAuxSize]))); err != nil {
		t.Fatalf("Tx.Send with 1 MiB of aux data: %v", err)
	}
	if m := h.peer.expect(dmsg.LnkError, h.msgid(ours("a"))); len(m.Aux) != dmsg.MaxAuxSize {
		t.Fatalf("got %d bytes of aux data, want %d", len(m.Aux), dmsg.MaxAuxSize)
	}
	h.run(openTx(1))
}

// TestAPanickingHandlerClosesOnlyItsLink: the panic is recovered and
// counted, the link goes down, and what was open is terminated once.
func TestAPanickingHandlerClosesOnlyItsLink(t *testing.T) {
	guard(t)
	bystander := newEchoPair(t)
	h := newHarness(t, map[uint32]policy{dmsg.LnkCirc: panics})
	before := iocom.Panics()
	wantPanics.Add(1)
	h.run(
		weOpen("conn", dmsg.LnkConn|C),
		connSends(dmsg.LnkConn|C, ours("conn"), 0),
		peerSends(dmsg.LnkCirc|C, theirs(5)),
		handlerGets("accept", dmsg.LnkCirc|C, theirs(5)),
		linkFails("the panic", func(err error) bool { return err != nil }),
	)
	if got := iocom.Panics(); got != before+1 {
		t.Fatalf("Panics() = %d, want %d", got, before+1)
	}
	bystander.check(t)
}

// TestForwardIsOfferedCircuitMessages: with Config.Forward set, messages of
// non-zero circuits go to it before the state machine.
func TestForwardIsOfferedCircuitMessages(t *testing.T) {
	guard(t)
	rec := newRecorder(defaultPolicies)
	forwarded := make(chan *dmsg.Msg, 4)
	conn, peer := newRawLink(t, iocom.Config{ID: "router", Handler: rec,
		Forward: func(c *iocom.Conn, m *dmsg.Msg) bool {
			forwarded <- m
			return m.Circuit == 7
		}})
	h := &harness{t: t, conn: conn, peer: peer, rec: rec, ours: make(map[string]*iocom.Tx)}
	h.run(
		peerSends(dmsg.LnkSpan|C, theirs(5), onCircuit(7)),
		peerSends(dmsg.DbgShell, theirs(0), onCircuit(8)), // declined: no such scope, dropped
		peerSends(dmsg.LnkSpan|C, theirs(5)),              // circuit 0: never offered
		handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
		connSends(ackReply, theirs(5), 0),
	)
	close(forwarded)
	var got []string
	for m := range forwarded {
		got = append(got, fmt.Sprintf("%d:%s", m.Circuit, dmsg.CmdString(m.Cmd)))
	}
	if want := "[7:LNK_SPAN|CREATE 8:DBG_SHELL]"; fmt.Sprint(got) != want {
		t.Fatalf("Forward was offered %v, want %s", got, want)
	}
}
