package iocom_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// openAcked opens transactions first..last (msgids) from the peer and
// waits for the Link's answer to each, which must be cmd with error code.
func openExpect(t *testing.T, p *rawPeer, first, last uint64, cmd uint32, code uint32) {
	t.Helper()
	for id := first; id <= last; id++ {
		p.mustSend(msg(dmsg.LnkSpan|dmsg.FlagCreate, id))
		m := p.expect(cmd, id)
		if m.Error != code {
			t.Fatalf("msgid %d answered %s, want error %s", id, describe(m), dmsg.ErrorString(code))
		}
	}
}

// A CREATE beyond limits.max_transactions_per_link is refused with PARAM;
// the refused transaction stays open, so the peer's later DELETE is legal
// and frees its place; a transaction the peer closes makes room.
func TestACreateBeyondTheLinkBudgetIsRefusedUntilThePeerClosesOne(t *testing.T) {
	guard(t)
	rec := newRecorder(map[uint32]policy{dmsg.LnkSpan: ack})
	conn, p := newRawLink(t, iocom.Config{ID: "budget", Handler: rec, MaxTransactions: 4})
	openExpect(t, p, 1, 4, ackReply, 0)
	openExpect(t, p, 5, 6, refusal, dmsg.ErrParam)
	if n := len(rec.unseen()); n != 4 {
		t.Fatalf("the handler saw %d calls, want the 4 accepted CREATEs only", n)
	}
	// The peer closes a refused one (legal), and an accepted one is
	// closed by both sides.
	p.mustSend(msg(dmsg.LnkError|dmsg.FlagDelete, 5))
	p.mustSend(msg(dmsg.LnkError|dmsg.FlagDelete, 1))
	waitUntil(t, "the handler sees the DELETE", func() bool { return rec.last().msgid == 1 })
	rec.remoteTx(1).Close()
	p.expect(closeReply, 1)
	openExpect(t, p, 7, 7, ackReply, 0)
	openExpect(t, p, 8, 8, refusal, dmsg.ErrParam)
	if isDone(conn) {
		t.Fatalf("link went down: %v", conn.Err())
	}
	if got := conn.Stats().OpenTx; got != 6 {
		t.Fatalf("%d transactions open, want 6 (4 accepted, 2 refused and not closed by the peer)", got)
	}
}

// A peer that keeps opening transactions after they are refused, without
// closing them, pins state the router cannot refuse; past a small
// overdraft its link is closed.
func TestAPeerOpeningPastItsRefusalsIsClosed(t *testing.T) {
	guard(t)
	rec := newRecorder(map[uint32]policy{dmsg.LnkSpan: ack})
	conn, p := newRawLink(t, iocom.Config{ID: "flood", Handler: rec, MaxTransactions: 4})
	openExpect(t, p, 1, 4, ackReply, 0)
	overdraft := uint64(8) // the minimum overdraft
	openExpect(t, p, 5, 4+overdraft, refusal, dmsg.ErrParam)
	p.mustSend(msg(dmsg.LnkSpan|dmsg.FlagCreate, 5+overdraft))
	waitDone(t, conn)
	var te *iocom.TxBudgetError
	if !errors.As(conn.Err(), &te) || te.Limit != "max_transactions_per_link" {
		t.Fatalf("Err() = %v, want a *TxBudgetError for max_transactions_per_link", conn.Err())
	}
	rec.checkTerminations(t)
}

// Transactions opened inside a circuit count against the link's budget,
// like those on the link itself; a CREATE|DELETE in one message is over
// as soon as it is answered and holds nothing.
func TestTransactionsOfEveryScopeCountAndFinishedOnesHoldNothing(t *testing.T) {
	guard(t)
	rec := newRecorder(map[uint32]policy{dmsg.LnkSpan: ack, dmsg.DbgShell: echo})
	conn, p := newRawLink(t, iocom.Config{ID: "scopes", Handler: rec, MaxTransactions: 3})
	if _, err := conn.OpenScope(9, false, rec); err != nil {
		t.Fatal(err)
	}
	for range 10 { // echo answers CREATE|DELETE: each finishes at once
		p.mustSend(msg(dmsg.DbgShell|dmsg.FlagCreate|dmsg.FlagDelete, 1))
		p.expect(dmsg.LnkError|dmsg.FlagCreate|dmsg.FlagDelete|dmsg.FlagReply|dmsg.FlagRevTrans, 1)
	}
	openExpect(t, p, 1, 2, ackReply, 0)
	p.mustSend(msg(dmsg.LnkSpan|dmsg.FlagCreate, 1, onCircuit(9)))
	if m := p.expect(ackReply|dmsg.FlagRevCirc, 1); m.Circuit != 9 {
		t.Fatalf("answer on circuit %d, want 9", m.Circuit)
	}
	p.mustSend(msg(dmsg.LnkSpan|dmsg.FlagCreate, 2, onCircuit(9)))
	if m := p.expect(refusal|dmsg.FlagRevCirc, 2); m.Error != dmsg.ErrParam {
		t.Fatalf("the fourth transaction, in a circuit, was answered %s, want a PARAM refusal", describe(m))
	}
}

// acceptUncharged accepts every transaction and releases it from the
// transaction budget, as a handler does for spans it holds under a budget
// of its own.
type acceptUncharged struct{ *recorder }

func (h acceptUncharged) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	next := h.recorder.Accept(tx, m)
	tx.Uncharge()
	return next
}

func TestAnUnchargedTransactionDoesNotCount(t *testing.T) {
	guard(t)
	h := acceptUncharged{newRecorder(map[uint32]policy{dmsg.LnkSpan: ack})}
	conn, p := newRawLink(t, iocom.Config{ID: "uncharged", Handler: h, MaxTransactions: 2})
	openExpect(t, p, 1, 20, ackReply, 0)
	if isDone(conn) {
		t.Fatalf("link went down: %v", conn.Err())
	}
}

// The router-wide pool is shared by the dynamic threshold: a link may take
// one more while it holds less than what is still free. A flooding link
// cannot take it all, and a light link still gets in after it.
func TestTheSharedPoolLeavesRoomForLightLinks(t *testing.T) {
	guard(t)
	pool := iocom.NewTxPool(10)
	newLink := func(id string) (*iocom.Link, *rawPeer) {
		rec := newRecorder(map[uint32]policy{dmsg.LnkSpan: ack})
		return newRawLink(t, iocom.Config{ID: id, Handler: rec, Transactions: pool})
	}
	heavy, hp := newLink("heavy")
	// It holds h of 10 with h in use: it may take one more while h < 10-h.
	openExpect(t, hp, 1, 5, ackReply, 0)
	openExpect(t, hp, 6, 6, refusal, dmsg.ErrParam)
	light, lp := newLink("light")
	openExpect(t, lp, 1, 3, ackReply, 0) // 0 < 10-5, 1 < 10-6, 2 < 10-7, then 3 >= 10-8
	openExpect(t, lp, 4, 4, refusal, dmsg.ErrParam)
	if got := pool.InUse(); got != 8 {
		t.Fatalf("pool in use %d, want 8", got)
	}
	heavy.Close()
	waitDone(t, heavy)
	if got := pool.InUse(); got != 3 {
		t.Fatalf("after the heavy link went down the pool holds %d, want the light link's 3", got)
	}
	openExpect(t, lp, 5, 6, ackReply, 0)
	if isDone(light) {
		t.Fatalf("light link went down: %v", light.Err())
	}
	light.Close()
	waitDone(t, light)
	if got := pool.InUse(); got != 0 {
		t.Fatalf("with every link down the pool holds %d, want 0", got)
	}
}

func ExampleTxBudgetError() {
	fmt.Println(&iocom.TxBudgetError{Limit: "max_transactions_per_link", Open: 264, Refusals: 8})
	// Output: peer kept opening transactions past limits.max_transactions_per_link: 264 open, 8 of them refused
}
