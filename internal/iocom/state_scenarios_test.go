package iocom_test

import (
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

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
