package circ_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// checkNoProblems fails tb with everything that went wrong inside the
// given circuit ends.
func checkNoProblems(tb testing.TB, cs ...*circuit) {
	tb.Helper()
	for _, c := range cs {
		for _, p := range c.problems() {
			tb.Errorf("leaf %s circuit %d: %s", c.l.label, c.ec.ID(), p)
		}
	}
}

// cleanAll waits until no router relays a circuit and no leaf holds
// circuit state.
func cleanAll(tb testing.TB, rs []*testRouter, ls ...*leaf) {
	tb.Helper()
	eventually(tb, "every router freed its circuits", func() error { return noCircuits(rs...) })
	for _, l := range ls {
		eventually(tb, "leaf "+l.label+" holds no circuit state", l.checkClean)
	}
}

// waitRelayed waits until every router relays exactly n circuits, all
// open.
func waitRelayed(tb testing.TB, rs []*testRouter, n int) {
	tb.Helper()
	for _, r := range rs {
		eventually(tb, fmt.Sprintf("%s relays %d open circuit(s)", r.label, n), func() error {
			cs := r.circuits()
			if len(cs) != n {
				return fmt.Errorf("%d circuits: %+v", len(cs), cs)
			}
			for _, c := range cs {
				if c.State != "open" {
					return fmt.Errorf("circuit %d is %s", c.ID, c.State)
				}
			}
			return nil
		})
	}
}

// heldCircuit joins leaf1 on the first router of rs and leaf2 on the last
// by a circuit, relayed by every router, with held transactions open
// inside it in each direction.
func heldCircuit(tb testing.TB, rs []*testRouter, held int) (l1, l2 *leaf, c1, c2 *circuit) {
	tb.Helper()
	l1 = dialLeaf(tb, rs[0].addr(), "leaf1", leafOptions{})
	l2 = dialLeaf(tb, rs[len(rs)-1].addr(), "leaf2", leafOptions{})
	c1 = l1.openTo("leaf2")
	c2 = l2.waitAccepted(0)
	waitRelayed(tb, rs, 1)
	hold(tb, c1, c2, held)
	return l1, l2, c1, c2
}

// hold opens n held transactions in each direction of the circuit between
// x and y (each end keeps them open) and waits until both ends see all
// 2n.
func hold(tb testing.TB, x, y *circuit, n int) {
	tb.Helper()
	for range n {
		for _, c := range []*circuit{x, y} {
			if err := c.request(c.nextSeq.Add(1), kindHold, 32, nil); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for _, c := range []*circuit{x, y} {
		eventually(tb, fmt.Sprintf("leaf %s holds %d inner transactions", c.l.label, 2*n), func() error {
			if got := c.innerOpen(); got != 2*n {
				return fmt.Errorf("%d open", got)
			}
			return nil
		})
	}
}

// checkTerminated checks that the circuit end saw its LNK_CIRC end with
// code and every one of its n inner transactions terminated exactly once
// with innerCode, before the circuit itself.
func checkTerminated(tb testing.TB, c *circuit, code, innerCode uint32, n int) {
	tb.Helper()
	cmd, got := c.waitDone()
	if got != code || cmd&dmsg.FlagDelete == 0 {
		tb.Errorf("leaf %s: circuit ended with %s %s, want DELETE %s", c.l.label,
			dmsg.CmdString(cmd), dmsg.ErrorString(got), dmsg.ErrorString(code))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.terms[innerCode] != n || len(c.inner) != 0 {
		tb.Errorf("leaf %s: inner terminations %v (%d still open), want %d with %s", c.l.label,
			c.terms, len(c.inner), n, dmsg.ErrorString(innerCode))
	}
	// An inner transaction terminated after the circuit is among errs.
	for _, e := range c.errs {
		tb.Errorf("leaf %s: %s", c.l.label, e)
	}
}

// TestCircuitSmoke runs a circuit between two leaves of one router.
func TestCircuitSmoke(t *testing.T) {
	rs := line(t, 1)
	a := dialLeaf(t, rs[0].addr(), "leafA", leafOptions{})
	b := dialLeaf(t, rs[0].addr(), "leafB", leafOptions{})
	ca := a.openTo("leafB")
	cb := b.waitAccepted(0)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	size := func(int) int { return 100 }
	kind := func(i int) byte { return byte(i % 2) }
	if n, err := ca.pump(ctx, 100, 8, size, kind); err != nil || n != 100 {
		t.Fatalf("a->b: %d good, %v", n, err)
	}
	if n, err := cb.pump(ctx, 100, 8, size, kind); err != nil || n != 100 {
		t.Fatalf("b->a: %d good, %v", n, err)
	}
	ca.close()
	if cmd, code := cb.waitDone(); code != 0 || cmd&dmsg.FlagAbort != 0 {
		t.Errorf("far end: %s %s", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	ca.waitDone()
	checkNoProblems(t, ca, cb)
	cleanAll(t, rs, a, b)
}

// TestCircuitSendBeforeAccept sends requests the moment the LNK_CIRC is
// queued, before any router has even relayed it: the routers forward them
// behind the LNK_CIRC and the far end answers them all.
func TestCircuitSendBeforeAccept(t *testing.T) {
	rs := line(t, 3)
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, rs[2].addr(), "leaf2", leafOptions{})
	c1 := l1.open(l1.waitSpan("leaf2").MsgID)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if good, err := c1.pump(ctx, 200, 200, func(i int) int { return 9 + i }, func(int) byte { return kindEcho }); good != 200 || err != nil {
		t.Fatalf("%d of 200 answered right, err %v", good, err)
	}
	c2 := l2.waitAccepted(0)
	checkNoProblems(t, c1, c2)
	c1.close()
	c2.waitDone()
	c1.waitDone()
	cleanAll(t, rs, l1, l2)
}

// TestCircuitWithdrawnDuringSetup withdraws the target's span while the
// target has not answered yet: both ends are told CANTCIRC. The target is
// a raw peer, as no well-behaved endpoint leaves a circuit unanswered.
func TestCircuitWithdrawnDuringSetup(t *testing.T) {
	rs := line(t, 3)
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{})
	l2 := dialRaw(t, rs[2].addr(), nil)
	if err := l2.helloWindow("leaf2", leafWindow); err != nil {
		t.Fatal(err)
	}
	c1 := l1.open(l1.waitSpan("leaf2").MsgID)
	at2 := txRef{l2.firstCircuit(t), false}
	for _, r := range rs {
		eventually(t, r.label+" relays the circuit in setup", func() error {
			if cs := r.circuits(); len(cs) != 1 || cs[0].State != "setup" {
				return fmt.Errorf("circuits %+v", cs)
			}
			return nil
		})
	}
	if err := l2.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, MsgID: 2}}); err != nil {
		t.Fatal(err)
	}
	if cmd, code := c1.waitDone(); code != dmsg.ErrCantCirc || cmd&dmsg.FlagDelete == 0 {
		t.Errorf("leaf1: circuit ended with %s %s, want DELETE CANTCIRC", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	eventually(t, "leaf2 is told the circuit ended", func() error {
		if deletes(l2.circCmds(at2)) == 0 {
			return fmt.Errorf("not yet: %s", cmdList(l2.circCmds(at2)))
		}
		return nil
	})
	if cmds := l2.circCmds(at2); deletes(cmds) != 1 || l2.circErr(at2) != dmsg.ErrCantCirc {
		t.Errorf("leaf2: circuit ended with %s %s, want one DELETE CANTCIRC", cmdList(cmds), dmsg.ErrorString(l2.circErr(at2)))
	}
	// Close our side, as an endpoint does on its far end's DELETE.
	if err := l2.Send(&dmsg.Msg{Header: dmsg.Header{MsgID: at2.msgid,
		Cmd: dmsg.LnkError | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans}}); err != nil {
		t.Fatal(err)
	}
	cleanAll(t, rs, l1)
}

// TestCircuitFiveRoutersOrder sets a circuit up through five routers and
// runs 10 000 transactions each way over it at once, mostly tiny with a
// few up to 1 MiB: every reply must be right and every request must reach
// the far end in the order it was sent.
func TestCircuitFiveRoutersOrder(t *testing.T) {
	rs := line(t, 5)
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{queueBytes: 4 << 20})
	l2 := dialLeaf(t, rs[4].addr(), "leaf2", leafOptions{queueBytes: 4 << 20})
	if s := l1.waitSpan("leaf2"); s.Dist != 5 {
		t.Errorf("leaf1 holds leaf2 at dist %d, want 5", s.Dist)
	}
	c1 := l1.openTo("leaf2")
	c2 := l2.waitAccepted(0)
	waitRelayed(t, rs, 1)

	const n = 10000
	size := func(i int) int {
		switch {
		case i == n-1:
			return dmsg.MaxAuxSize // the limit itself
		case i%1000 == 500:
			return (i/1000 + 1) * 96 << 10 // 96 KiB .. 960 KiB
		case i%100 == 7:
			return 4 << 10
		}
		return 9 + i%120
	}
	kind := func(i int) byte {
		if size(i) > 64<<10 {
			return kindCRC
		}
		return kindEcho
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]string, 2)
	for i, c := range []*circuit{c1, c2} {
		wg.Go(func() {
			good, err := c.pump(ctx, n, 64, size, kind)
			if err != nil || good != n {
				results[i] = fmt.Sprintf("leaf %s: %d of %d answered right, err %v", c.l.label, good, n, err)
			}
		})
	}
	wg.Wait()
	t.Logf("2 x %d transactions through 5 routers in %v", n, time.Since(start).Round(time.Millisecond))
	for _, r := range results {
		if r != "" {
			t.Error(r)
		}
	}
	for _, c := range []*circuit{c1, c2} {
		c.mu.Lock()
		if c.rxRequests != n || c.lastRxSeq != n {
			t.Errorf("leaf %s received %d requests, last seq %d; want %d", c.l.label, c.rxRequests, c.lastRxSeq, n)
		}
		c.mu.Unlock()
	}
	checkNoProblems(t, c1, c2)
	// Each transaction is one request and one reply, each forwarded once
	// by every router. A router counts a message once its writer is done
	// with it, which for a large one is after the socket took it.
	for _, r := range rs {
		eventually(t, r.label+" counts every message it forwarded", func() error {
			if cs := r.circuits(); len(cs) != 1 || cs[0].Msgs != 4*n {
				return fmt.Errorf("circuits %+v, want one that forwarded %d messages", cs, 4*n)
			}
			return nil
		})
	}
	c1.close()
	checkTerminated(t, c2, 0, dmsg.ErrLostLink, 0)
	checkTerminated(t, c1, 0, dmsg.ErrLostLink, 0)
	cleanAll(t, rs, l1, l2)
}

// TestCircuitIDRewriting follows a circuit through three routers: each
// router lists it with the link and circuit id of each side, the ids
// chain hop to hop, the JSON dump has the docs/INTERFACE.md fields, and on the
// wire between two routers (tapped) the circuit id is rewritten and
// REVCIRC set exactly in the direction toward the router that opened it,
// while msgid, cmd, error and aux pass through untouched.
func TestCircuitIDRewriting(t *testing.T) {
	r1, r2, r3 := newRouter(t, "r1"), newRouter(t, "r2"), newRouter(t, "r3")
	tap := newProxy(t, r2.addr(), true)
	spanTo(t, r1, tap.addr())
	spanTo(t, r2, r3.addr())
	rs := []*testRouter{r1, r2, r3}
	waitConverged(t, rs)
	l1 := dialLeaf(t, r1.addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, r3.addr(), "leaf2", leafOptions{})
	l1.waitSpan("leaf2")
	c1 := l1.openTo("leaf2")
	c2 := l2.waitAccepted(0)
	waitRelayed(t, rs, 1)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const n, oneWays = 20, 5
	for _, c := range []*circuit{c1, c2} {
		if good, err := c.pump(ctx, n, 4, func(i int) int { return 9 + 50*i }, func(int) byte { return kindEcho }); good != n || err != nil {
			t.Fatalf("leaf %s: %d of %d answered right, err %v", c.l.label, good, n, err)
		}
		for i := range oneWays {
			if err := c.sendOneWay(uint64(i+1), 100); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []*circuit{c1, c2} {
		eventually(t, "one-way messages arrive", func() error {
			if got := c.oneWayMsgs.Load(); got != oneWays {
				return fmt.Errorf("leaf %s got %d", c.l.label, got)
			}
			return nil
		})
	}
	checkNoProblems(t, c1, c2)

	// Each router's view: a is the side toward leaf1, b toward leaf2.
	links := func(r *testRouter, a, b string) (string, string) {
		la, err := r.LinkTo(a)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := r.LinkTo(b)
		if err != nil {
			t.Fatal(err)
		}
		return la, lb
	}
	views := make([]shell.Circuit, 3)
	for i, x := range []struct {
		r    *testRouter
		a, b string
	}{{r1, "leaf1", "r2"}, {r2, "r1", "r3"}, {r3, "r2", "leaf2"}} {
		cs := x.r.circuits()
		if len(cs) != 1 {
			t.Fatalf("%s relays %d circuits", x.r.label, len(cs))
		}
		views[i] = cs[0]
		la, lb := links(x.r, x.a, x.b)
		if cs[0].A.Link != la || cs[0].B.Link != lb {
			t.Errorf("%s: circuit runs %s -> %s, want %s (to %s) -> %s (to %s)", x.r.label,
				cs[0].A.Link, cs[0].B.Link, la, x.a, lb, x.b)
		}
		if cs[0].State != "open" || cs[0].Msgs != 2*(2*n+oneWays) {
			t.Errorf("%s: circuit %+v: want open with %d messages", x.r.label, cs[0], 2*(2*n+oneWays))
		}
		if cs[0].Target != "leaf2" {
			t.Errorf("%s: circuit target %q, want %q", x.r.label, cs[0].Target, "leaf2")
		}
	}
	if got, want := views[0].A.Circuit, shell.MsgID(c1.ec.ID()); got != want {
		t.Errorf("r1 side a circuit %s, want leaf1's LNK_CIRC msgid %s", got, want)
	}
	if views[0].B.Circuit != views[1].A.Circuit || views[1].B.Circuit != views[2].A.Circuit {
		t.Errorf("circuit ids do not chain: r1 %s->%s, r2 %s->%s, r3 %s->%s",
			views[0].A.Circuit, views[0].B.Circuit, views[1].A.Circuit, views[1].B.Circuit,
			views[2].A.Circuit, views[2].B.Circuit)
	}
	if got, want := views[2].B.Circuit, shell.MsgID(c2.ec.ID()); got != want {
		t.Errorf("r3 side b circuit %s, want leaf2's circuit id %s", got, want)
	}

	// The JSON dump.
	var doc struct {
		Circuits []map[string]json.RawMessage `json:"circuits"`
	}
	if err := json.Unmarshal(shell.JSON(r2.Tree()), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Circuits) != 1 {
		t.Fatalf("r2 JSON lists %d circuits", len(doc.Circuits))
	}
	for _, k := range []string{"id", "a", "b", "target", "state", "since", "msgs", "bytes"} {
		if _, ok := doc.Circuits[0][k]; !ok {
			t.Errorf("r2 JSON circuit lacks %q: %s", k, shell.JSON(r2.Tree()))
		}
	}
	var end struct{ Link, Circuit string }
	if err := json.Unmarshal(doc.Circuits[0]["a"], &end); err != nil || end.Link != views[1].A.Link || end.Circuit != views[1].A.Circuit {
		t.Errorf("r2 JSON a = %s (%v), want link %s circuit %s", doc.Circuits[0]["a"], err, views[1].A.Link, views[1].A.Circuit)
	}
	var since string
	if err := json.Unmarshal(doc.Circuits[0]["since"], &since); err != nil {
		t.Error(err)
	} else if _, err := time.Parse(time.RFC3339, since); err != nil {
		t.Errorf("since %q: %v", since, err)
	}

	// The wire between r1 and r2.
	var id12 uint64
	fmt.Sscanf(views[0].B.Circuit, "%x", &id12)
	var r1Held uint64 // the span r1 received from r2 for leaf2
	for _, c := range r1.Tree().Clusters {
		for _, nd := range c.Nodes {
			if nd.Label == "leaf2" {
				fmt.Sscanf(nd.Adverts[0].MsgID, "%x", &r1Held)
			}
		}
	}
	// The tap records a frame only after forwarding it, so the last ones
	// may have arrived before they were recorded: wait for the record.
	eventually(t, "the tap recorded every circuit frame", func() error {
		var seen [2]int
		for _, f := range tap.tapped() {
			if f.m.Circuit == id12 {
				seen[f.dir]++
			}
		}
		if want := 2*n + oneWays; seen[0] < want || seen[1] < want {
			return fmt.Errorf("recorded %v, want %d each way", seen, want)
		}
		return nil
	})
	var data [2]int
	sawCirc := false
	for _, f := range tap.tapped() {
		m := f.m
		if m.Circuit == 0 && dmsg.Base(m.Cmd) == dmsg.LnkCirc && m.Cmd&dmsg.FlagCreate != 0 && f.dir == 0 {
			body, _ := m.Circ()
			sawCirc = true
			if m.MsgID != id12 || body.Target != r1Held {
				t.Errorf("r1->r2 LNK_CIRC msgid %016x target %016x; want msgid %016x target %016x (the span r1 holds for leaf2)",
					m.MsgID, body.Target, id12, r1Held)
			}
		}
		if m.Circuit == 0 {
			continue
		}
		if m.Circuit != id12 {
			t.Errorf("dir %d: frame on circuit %016x, want %016x: %s", f.dir, m.Circuit, id12, dmsg.CmdString(m.Cmd))
			continue
		}
		data[f.dir]++
		// r1 opened the circuit on this link: REVCIRC only toward r1.
		if rev := m.Cmd&dmsg.FlagRevCirc != 0; rev != (f.dir == 1) {
			t.Errorf("dir %d: %s: REVCIRC %v", f.dir, dmsg.CmdString(m.Cmd), rev)
		}
		// Requests pass unchanged apart from the circuit fields.
		if m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagReply == 0 && len(m.Aux) >= 8 {
			seq := uint64(m.Aux[0]) | uint64(m.Aux[1])<<8
			to, from := c2, c1
			if f.dir == 1 {
				to, from = c1, c2
			}
			to.mu.Lock()
			got, ok := to.gotHdrs[seq]
			to.mu.Unlock()
			from.mu.Lock()
			sent := from.sentIDs[seq]
			from.mu.Unlock()
			switch {
			case !ok:
				t.Errorf("dir %d: request seq %d never arrived", f.dir, seq)
			case got.MsgID != m.MsgID || sent != m.MsgID || got.Cmd != m.Cmd || got.AuxCRC != m.AuxCRC ||
				got.AuxBytes != m.AuxBytes || got.Error != m.Error:
				t.Errorf("dir %d seq %d: sent msgid %016x, on the wire %016x %s crc %08x, received %016x %s crc %08x",
					f.dir, seq, sent, m.MsgID, dmsg.CmdString(m.Cmd), m.AuxCRC, got.MsgID, dmsg.CmdString(got.Cmd), got.AuxCRC)
			}
		}
	}
	if !sawCirc {
		t.Error("no LNK_CIRC crossed the tapped link")
	}
	if want := 2*n + oneWays; data[0] != want || data[1] != want {
		t.Errorf("circuit frames on the tapped link: %v, want %d each way", data, want)
	}
	c1.close()
	c2.waitDone()
	c1.waitDone()
	cleanAll(t, rs, l1, l2)
}

// TestCircuitCantCirc checks that a LNK_CIRC naming anything but an open
// span the router sent on that link is refused with CANTCIRC in one
// REPLY|CREATE|DELETE, as is a circuit its target refuses, and that
// nothing is left behind.
