package circ_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

func TestCircuitCantCirc(t *testing.T) {
	rs := line(t, 2)
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, rs[1].addr(), "leaf2", leafOptions{})
	l3 := dialLeaf(t, rs[1].addr(), "leaf3", leafOptions{refuse: true})
	stale := l1.waitSpan("leaf2").MsgID
	l1.waitSpan("leaf3")
	// Targets are msgids of spans the router sent: the router cannot tell
	// a msgid the leaf allocated itself from one of its own, so only ids
	// it never sent as spans can be tested.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	rconn, err := l1.ep.WaitRouter(ctx)
	if err != nil {
		t.Fatal(err)
	}

	refused := func(what string, target uint64) {
		t.Helper()
		c := l1.open(target)
		cmd, code := c.waitDone()
		want := dmsg.FlagReply | dmsg.FlagCreate | dmsg.FlagDelete
		if code != dmsg.ErrCantCirc || cmd&want != want {
			t.Errorf("%s: answered %s %s, want REPLY|CREATE|DELETE CANTCIRC", what, dmsg.CmdString(cmd), dmsg.ErrorString(code))
		}
		if c.scope().Closed() != true {
			t.Errorf("%s: scope still open", what)
		}
		cleanAll(t, rs, l1, l2, l3)
	}
	refused("random msgid", 0x7eadbeef12345)
	refused("the router's LNK_CONN (not a span)", rconn.MsgID)
	if s, ok := l1.spanFor("leaf3"); ok {
		refused("a target that refuses", s.MsgID)
	}
	l2.withdraw()
	eventually(t, "leaf1 loses leaf2's span", func() error {
		if _, ok := l1.spanFor("leaf2"); ok {
			return fmt.Errorf("still held")
		}
		return nil
	})
	refused("a withdrawn span", stale)
	if l2.ep.OpenCircuits() != 0 || len(l2.ep.Accepted()) != 0 || len(l3.ep.Accepted()) != 0 {
		t.Errorf("a refused circuit reached a leaf")
	}
}

// TestCircuitLinkLoss kills what is under an open circuit in the middle
// of a line: both ends must see their LNK_CIRC end with LOSTLINK, every
// transaction open inside terminated once with LOSTLINK, and no router or
// leaf may keep anything of the circuit.
func TestCircuitLinkLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill func(mid *testRouter, p *proxy)
	}{
		{"RouterStops", func(mid *testRouter, _ *proxy) { mid.stop() }},
		{"LinkCut", func(_ *testRouter, p *proxy) { p.cut() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r1, r2, r3 := newRouter(t, "r1"), newRouter(t, "r2"), newRouter(t, "r3")
			p := newProxy(t, r2.addr(), false)
			spanTo(t, r1, p.addr())
			spanTo(t, r2, r3.addr())
			rs := []*testRouter{r1, r2, r3}
			waitConverged(t, rs)
			const held = 4
			l1, l2, c1, c2 := heldCircuit(t, rs, held)

			tc.kill(r2, p)
			checkTerminated(t, c1, dmsg.ErrLostLink, dmsg.ErrLostLink, 2*held)
			checkTerminated(t, c2, dmsg.ErrLostLink, dmsg.ErrLostLink, 2*held)
			cleanAll(t, rs, l1, l2)
		})
	}
}

// TestCircuitTargetWithdrawn withdraws the span a circuit was built on:
// the circuit is aborted at both ends with LOSTLINK.
func TestCircuitTargetWithdrawn(t *testing.T) {
	rs := line(t, 3)
	const held = 3
	l1, l2, c1, c2 := heldCircuit(t, rs, held)

	l2.withdraw()
	checkTerminated(t, c1, dmsg.ErrLostLink, dmsg.ErrLostLink, 2*held)
	checkTerminated(t, c2, dmsg.ErrLostLink, dmsg.ErrLostLink, 2*held)
	cleanAll(t, rs, l1, l2)
}

// TestCircuitOrderlyClose closes a circuit from either end: the DELETE
// travels to the far end, which closes its inner transactions and DELETEs
// back; every router frees the circuit.
func TestCircuitOrderlyClose(t *testing.T) {
	for _, byOpener := range []bool{true, false} {
		t.Run(fmt.Sprintf("ByOpener=%v", byOpener), func(t *testing.T) {
			rs := line(t, 3)
			const held = 3
			l1, l2, c1, c2 := heldCircuit(t, rs, held)
			closer, far := c1, c2
			if !byOpener {
				closer, far = c2, c1
			}
			closer.close()
			// The far end learns first and answers; no abort anywhere.
			checkTerminated(t, far, 0, dmsg.ErrLostLink, 2*held)
			checkTerminated(t, closer, 0, dmsg.ErrLostLink, 2*held)
			for _, c := range []*circuit{c1, c2} {
				if cmd, _ := c.ec.End(); cmd&dmsg.FlagAbort != 0 {
					t.Errorf("leaf %s: orderly close ended with %s", c.l.label, dmsg.CmdString(cmd))
				}
			}
			cleanAll(t, rs, l1, l2)
		})
	}
}

// TestCircuitCreateDelete opens a circuit with a single CREATE|DELETE
// LNK_CIRC: the routers must pass the close on and free it once the
// target has closed back, instead of holding it until a link dies.
func TestCircuitCreateDelete(t *testing.T) {
	rs := line(t, 2)
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, rs[1].addr(), "leaf2", leafOptions{})
	target := l1.waitSpan("leaf2").MsgID
	done := make(chan uint32, 4)
	_, err := l1.conn.Open(dmsg.NewCircMsg(dmsg.FlagDelete, &dmsg.Circ{Target: target}), func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete != 0 {
			done <- m.Error
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	c2 := l2.waitAccepted(0)
	c2.waitDone()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("the opener never saw the circuit close")
	}
	cleanAll(t, rs, l1, l2)
}

// TestCircuitMaxCircuits refuses a circuit beyond limits.max_circuits
// with CANTCIRC and accepts one again once a circuit has gone. A router's
// link may hold no more than twice the circuits still free: two of three.
func TestCircuitMaxCircuits(t *testing.T) {
	r1 := newRouter(t, "r1")
	r2 := newRouter(t, "r2", withMaxCircuits(3))
	r3 := newRouter(t, "r3")
	spanTo(t, r1, r2.addr())
	spanTo(t, r2, r3.addr())
	rs := []*testRouter{r1, r2, r3}
	waitConverged(t, rs)
	l1 := dialLeaf(t, r1.addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, r3.addr(), "leaf2", leafOptions{})
	a := l1.openTo("leaf2")
	b := l1.openTo("leaf2")
	waitRelayed(t, rs, 2)
	c := l1.open(l1.waitSpan("leaf2").MsgID)
	cmd, code := c.waitDone()
	if code != dmsg.ErrCantCirc || cmd&dmsg.FlagCreate == 0 {
		t.Errorf("third circuit: %s %s, want REPLY|CREATE|DELETE CANTCIRC", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	waitRelayed(t, rs, 2) // r1 freed the refused one
	a.close()
	a.waitDone()
	waitRelayed(t, rs, 1)
	d := l1.openTo("leaf2")
	waitRelayed(t, rs, 2)
	b.close()
	d.close()
	b.waitDone()
	d.waitDone()
	cleanAll(t, rs, l1, l2)
}
