package circ_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// TestCircuitViolationStaysInCircuit: a far endpoint that breaks the
// transaction rules inside a circuit (here a DELETE for an inner
// transaction that does not exist) reaches the victim untouched, since
// routers do not look inside circuits. The victim should lose that
// circuit, not its whole link to its router with every other circuit and
// span on it.
func TestCircuitViolationStaysInCircuit(t *testing.T) {
	rs := line(t, 1)
	victim := dialLeaf(t, rs[0].addr(), "victim", leafOptions{})
	other := dialLeaf(t, rs[0].addr(), "other", leafOptions{})
	keep := other.openTo("victim")
	p := dialRaw(t, rs[0].addr(), nil)
	if err := p.hello("bad"); err != nil {
		t.Fatal(err)
	}
	var span uint64
	eventually(t, "the raw peer holds the victim's span", func() error {
		var ok bool
		if span, ok = p.spanFor("victim"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span})
	m.MsgID = 50
	p.Send(m)
	victim.waitAccepted(1)
	bad := dmsg.NewMsg(cmdInner | dmsg.FlagDelete)
	bad.MsgID, bad.Circuit = 77, 50
	p.Send(bad)
	// The router answers the ping after it has queued the bad frame for
	// the victim; a request on the other circuit queued after that can
	// only be answered if the victim survived the bad frame.
	if !p.ping(waitTimeout) {
		t.Fatal("the router did not answer the raw peer's ping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	good, err := keep.pump(ctx, 1, 1, func(int) int { return 64 }, func(int) byte { return kindEcho })
	if good != 1 {
		t.Errorf("the victim's other circuit died with the bad one (%v); link error: %v", err, victim.conn.Err())
	}
}
