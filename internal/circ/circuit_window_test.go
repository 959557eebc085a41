package circ_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// These tests run circuits between leaves that speak CIRC_WINDOW
// (docs/PROTOCOL.md 11.2), the default of a test leaf.

func withCircuitWindow(window int) routerOption {
	return func(c *config.Config) { c.Limits.CircuitWindow = config.ByteSize(window) }
}

func withCircuitMemory(n int) routerOption {
	return func(c *config.Config) { c.Limits.CircuitMemory = config.ByteSize(n) }
}

// echoRate runs n 4 KiB echo requests over c, 16 at a time, and returns
// the requests per second.
func echoRate(t *testing.T, c *circuit, n int) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	start := time.Now()
	good, err := c.pump(ctx, n, 16, func(int) int { return 4 << 10 }, func(int) byte { return kindEcho })
	if good != n || err != nil {
		t.Fatalf("leaf %s: %d of %d echoed, %v", c.l.label, good, n, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// spanDelay advertises a new leaf on at and returns how long until watch
// holds its span.
func spanDelay(t *testing.T, at *testRouter, watch *leaf, label string) (*leaf, time.Duration) {
	t.Helper()
	start := time.Now()
	l := dialLeaf(t, at.addr(), label, leafOptions{})
	deadline := time.Now().Add(waitTimeout)
	for {
		if _, ok := watch.spanFor(label); ok {
			return l, time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf %s never saw %s's span", watch.label, label)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// TestAStalledCircuitLeavesItsLinksFlowing: circuit X's consumer stops
// reading its socket while its producer pushes as fast as X's windows let
// it; circuit Y, over the same routers and links, keeps flowing, and a
// span advertised meanwhile crosses the same links, both long before X is
// aborted; the producer is held by X's windows and every router holds at
// most its own grants; after circuit_stall X ends with IO at both ends.
func TestAStalledCircuitLeavesItsLinksFlowing(t *testing.T) {
	// Y's 2000 requests and the span are measured within circuit_stall;
	// on a loaded machine under the race detector that took over 3 s.
	const stall = 8 * time.Second
	rs := line(t, 3, withCircuitLimits(4<<20, stall))
	src := dialLeaf(t, rs[0].addr(), "src", leafOptions{})
	sink := dialLeaf(t, rs[2].addr(), "sink", leafOptions{gated: true})
	a := dialLeaf(t, rs[0].addr(), "a", leafOptions{})
	b := dialLeaf(t, rs[2].addr(), "b", leafOptions{})
	x := src.openTo("sink")
	xFar := sink.waitAccepted(0)
	y := a.openTo("b")
	yFar := b.waitAccepted(0)
	waitRelayed(t, rs, 2)
	echoRate(t, y, 200) // warm up
	before := echoRate(t, y, 2000)
	_, spanBefore := spanDelay(t, rs[2], a, "early")

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	sink.gate.Hold()
	stalledAt := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const msgSize = 64 << 10
	var sent, lastSent atomic.Int64
	lastSent.Store(time.Now().UnixNano())
	var producer sync.WaitGroup
	producer.Go(func() {
		for seq := uint64(1); ; seq++ {
			if err := x.scope().WaitRoom(ctx); err != nil {
				return
			}
			if x.isDone() || x.sendOneWay(seq, msgSize) != nil {
				return
			}
			sent.Add(msgSize + 64)
			lastSent.Store(time.Now().UnixNano())
		}
	})
	// The windows hold the producer: it has sent nothing for a while.
	var held int64
	eventually(t, "the producer is held by the windows", func() error {
		if idle := time.Since(time.Unix(0, lastSent.Load())); idle < 200*time.Millisecond {
			return fmt.Errorf("%d MiB sent, the last %v ago", sent.Load()>>20, idle)
		}
		held = sent.Load()
		return nil
	})

	during := echoRate(t, y, 2000)
	_, spanDuring := spanDelay(t, rs[2], a, "late")
	flowingFor := time.Since(stalledAt)
	xDoneEarly := x.isDone()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	growth := int64(ms.HeapInuse) - int64(base)

	t.Logf("Y before the stall: %.0f req/s; during: %.0f req/s (%.0f%%)", before, during, 100*during/before)
	t.Logf("span across the links: %v before the stall, %v during it", spanBefore.Round(time.Microsecond), spanDuring.Round(time.Microsecond))
	t.Logf("the producer pushed %d KiB before the windows held it; heap grew by %d MiB", held>>10, growth>>20)
	if xDoneEarly {
		t.Errorf("X ended after %v, before Y and the span could be measured (circuit_stall is %v)", flowingFor, stall)
	} else if flowingFor >= stall {
		t.Errorf("Y and the span took %v while X was stalled, circuit_stall is %v: they waited for X", flowingFor, stall)
	}
	// Every router holds at most the window it grants upstream, the
	// consumer's kernel buffers take what its router wrote, and the
	// producer may have a window of its own router's credit in flight.
	limit := int64(3*config.DefaultCircuitWindow) + 2*socketBuffers(t) + 8<<20
	if h := held; h > limit {
		t.Errorf("the producer pushed %d MiB into a stalled circuit before it was held, more than the %d MiB the windows allow", h>>20, limit>>20)
	}
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB while a consumer was stuck: what the routers hold is not bounded", growth>>20)
	}

	cmd, code := x.waitDone()
	producer.Wait()
	if code != dmsg.ErrIO || cmd&dmsg.FlagDelete == 0 {
		t.Errorf("X ended at the producer with %s %s, want DELETE IO", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	t.Logf("X aborted %v after the consumer stopped reading", time.Since(stalledAt).Round(time.Millisecond))
	waitRelayed(t, rs, 1)
	echoRate(t, y, 200)
	sink.gate.Release()
	if _, code := xFar.waitDone(); code != dmsg.ErrIO {
		t.Errorf("X ended at the consumer with %s, want IO", dmsg.ErrorString(code))
	}
	checkNoProblems(t, x, xFar, y, yFar)
	y.close()
	yFar.waitDone()
	y.waitDone()
	cleanAll(t, rs, src, sink, a, b)
}

// TestAMixOfFlowControlledAndLegacyLeavesRunsCircuits: every pairing of a
// leaf with CIRC_WINDOW and one without runs 2000 transactions each way
// over a circuit through two routers, with messages up to the largest.
func TestAMixOfFlowControlledAndLegacyLeavesRunsCircuits(t *testing.T) {
	for _, tc := range []struct {
		name             string
		legacy1, legacy2 bool
	}{
		{"FlowControlledToLegacy", false, true},
		{"LegacyToFlowControlled", true, false},
		{"LegacyToLegacy", true, true},
		{"FlowControlledToFlowControlled", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := line(t, 2)
			l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{legacy: tc.legacy1})
			l2 := dialLeaf(t, rs[1].addr(), "leaf2", leafOptions{legacy: tc.legacy2})
			c1 := l1.openTo("leaf2")
			c2 := l2.waitAccepted(0)
			const n = 2000
			size := func(i int) int {
				if i%500 == 250 {
					return dmsg.MaxAuxSize
				}
				return 9 + i*37%9000
			}
			kind := func(i int) byte {
				if size(i) > 64<<10 {
					return kindCRC
				}
				return kindEcho
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			var wg sync.WaitGroup
			for _, c := range []*circuit{c1, c2} {
				wg.Go(func() {
					if good, err := c.pump(ctx, n, 32, size, kind); good != n || err != nil {
						t.Errorf("leaf %s: %d of %d answered right, %v", c.l.label, good, n, err)
					}
				})
			}
			wg.Wait()
			checkNoProblems(t, c1, c2)
			c1.close()
			c2.waitDone()
			c1.waitDone()
			cleanAll(t, rs, l1, l2)
		})
	}
}

// TestAPeerPastItsWindowLosesOnlyThatCircuit: a raw peer that ignores
// the window its router granted and pushes on into a circuit whose
// consumer stopped reading gets that circuit aborted with PARAM; its link,
// its other circuit and the consumer's link carry on.
func TestAPeerPastItsWindowLosesOnlyThatCircuit(t *testing.T) {
	rs := line(t, 1)
	r := rs[0]
	sink := dialLeaf(t, r.addr(), "sink", leafOptions{gated: true})
	other := dialLeaf(t, r.addr(), "other", leafOptions{})
	p := dialRaw(t, r.addr(), nil)
	if err := p.helloWindow("P", dmsg.MinCircWindow); err != nil {
		t.Fatal(err)
	}
	open := func(label string, id uint64) {
		t.Helper()
		var span uint64
		eventually(t, "P holds "+label+"'s span", func() error {
			var ok bool
			if span, ok = p.spanFor(label); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span})
		m.MsgID = id
		if err := p.Send(m); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the circuit to "+label+" is up", func() error {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.circUp[id] {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	}
	const bad, good = 100, 101
	open("sink", bad)
	open("other", good)
	sinkEnd := sink.waitAccepted(0)
	otherEnd := other.waitAccepted(0)
	window := uint64(r.Config().Limits.CircuitWindow)
	p.mu.Lock()
	if p.routerConn == nil || p.routerConn.CircWindow != uint32(window) || p.routerConn.Caps&dmsg.CapCircWindow == 0 {
		t.Errorf("router's LNK_CONN %+v does not grant circuit_window %d", p.routerConn, window)
	}
	p.mu.Unlock()

	sink.gate.Hold()
	// The router grants more only as it writes toward the stopped sink,
	// whose socket takes at most its kernel buffers: past that, P is over.
	limit := int64(window) + 2*socketBuffers(t) + 8<<20
	data := dmsg.NewMsg(dmsg.DbgShell)
	data.Circuit = bad
	data.SetAux(make([]byte, 64<<10))
	var pushed int64
	for pushed < 2*limit {
		if code, ended := p.circEnded(bad); ended {
			if code != dmsg.ErrParam {
				t.Errorf("the overrun circuit ended at P with %s, want PARAM", dmsg.ErrorString(code))
			}
			break
		}
		if err := p.Send(data); err != nil {
			t.Fatalf("P's link failed after %d MiB: %v", pushed>>20, err)
		}
		pushed += int64(data.EncodedSize())
	}
	eventually(t, "the overrun circuit is aborted at P", func() error {
		if _, ended := p.circEnded(bad); !ended {
			return fmt.Errorf("not yet, %d MiB pushed", pushed>>20)
		}
		return nil
	})
	t.Logf("P pushed %d MiB; the router granted %d KiB of LNK_CREDIT on top of its %d KiB window",
		pushed>>20, p.credited(bad)>>10, window>>10)
	if !p.ping(waitTimeout) {
		t.Fatal("P's link does not answer a ping after its circuit was aborted")
	}
	// P's other circuit still carries data, within its window.
	for seq := uint64(1); seq <= 100; seq++ {
		m := dmsg.NewMsg(dmsg.DbgShell)
		m.Circuit = good
		m.SetAux(payload(seq, 0, 1000))
		if err := p.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "P's other circuit delivers", func() error {
		if n := otherEnd.oneWayMsgs.Load(); n != 100 {
			return fmt.Errorf("%d of 100 arrived", n)
		}
		return nil
	})
	sink.gate.Release()
	if _, code := sinkEnd.waitDone(); code != dmsg.ErrParam {
		t.Errorf("the overrun circuit ended at the sink with %s, want PARAM", dmsg.ErrorString(code))
	}
	checkNoProblems(t, otherEnd)
}

// TestCircuitMemoryBoundsRelayedCircuits: each relayed circuit reserves
// the windows it grants from limits.circuit_memory; one that does not fit
// is refused with CANTCIRC, and fits again once another is gone.
func TestCircuitMemoryBoundsRelayedCircuits(t *testing.T) {
	const window = config.MinCircuitWindow
	// Room for two circuits: each reserves the window it grants on both
	// of its links.
	rs := line(t, 1, withCircuitWindow(window), withCircuitMemory(4*window))
	l1 := dialLeaf(t, rs[0].addr(), "leaf1", leafOptions{})
	l2 := dialLeaf(t, rs[0].addr(), "leaf2", leafOptions{})
	a := l1.openTo("leaf2")
	b := l1.openTo("leaf2")
	c := l1.open(l1.waitSpan("leaf2").MsgID)
	if cmd, code := c.waitDone(); code != dmsg.ErrCantCirc || cmd&dmsg.FlagCreate == 0 {
		t.Errorf("third circuit: %s %s, want REPLY|CREATE|DELETE CANTCIRC", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	a.close()
	a.waitDone()
	waitRelayed(t, rs, 1)
	d := l1.openTo("leaf2")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if good, err := d.pump(ctx, 100, 8, func(int) int { return 1000 }, func(int) byte { return kindEcho }); good != 100 || err != nil {
		t.Errorf("the circuit that fits again: %d of 100 answered, %v", good, err)
	}
	for _, c := range []*circuit{b, d} {
		c.close()
		c.waitDone()
	}
	cleanAll(t, rs, l1, l2)
	// Everything reserved was given back: two circuits fit again.
	e, f := l1.openTo("leaf2"), l1.openTo("leaf2")
	for _, c := range []*circuit{e, f} {
		c.close()
		c.waitDone()
	}
	cleanAll(t, rs, l1, l2)
}

// TestARouterSendsOnlyWithinTheNextHopsCredit: a raw peer Q grants a
// circuit the smallest window and then nothing more; the router sends Q
// no more than that window, holds the rest, and sends on exactly as much
// as each LNK_CREDIT Q sends allows. The producer, an ordinary leaf, is
// held by the router's windows meanwhile.
func TestARouterSendsOnlyWithinTheNextHopsCredit(t *testing.T) {
	rs := line(t, 1, withCircuitLimits(4<<20, time.Minute))
	var got atomic.Int64 // circuit bytes Q received
	q := dialRaw(t, rs[0].addr(), func(m *dmsg.Msg) bool {
		if m.Circuit == 0 {
			return false
		}
		got.Add(int64(m.EncodedSize()))
		return true
	})
	const window = dmsg.MinCircWindow
	if err := q.helloWindow("Q", window); err != nil {
		t.Fatal(err)
	}
	p := dialLeaf(t, rs[0].addr(), "P", leafOptions{})
	c := p.open(p.waitSpan("Q").MsgID)
	atQ := q.firstCircuit(t)
	accept := dmsgtest.Ack(atQ)
	if err := q.Send(accept); err != nil {
		t.Fatal(err)
	}
	c.waitUp()

	// P pushes far more than Q's window, as fast as its windows let it.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const msg = 16 << 10
	var sent atomic.Int64
	var producer sync.WaitGroup
	producer.Go(func() {
		for seq := uint64(1); sent.Load() < 4*window; seq++ {
			if c.scope().WaitRoom(ctx) != nil || c.sendOneWay(seq, msg-64) != nil {
				return
			}
			sent.Add(msg)
		}
	})
	settled := func(what string, want int64) {
		t.Helper()
		eventually(t, what, func() error {
			if n := got.Load(); n < want-msg {
				return fmt.Errorf("Q has %d bytes", n)
			}
			return nil
		})
		// Nothing more comes: Q answers a ping sent after all it got.
		if !q.ping(waitTimeout) {
			t.Fatal("no pong")
		}
		if n := got.Load(); n > want {
			t.Fatalf("%s: Q got %d bytes, more than the %d it granted", what, n, want)
		}
	}
	settled("Q gets its window", window)
	for _, more := range []int64{100 << 10, window} {
		total := got.Load()
		grant := dmsg.NewCreditMsg(atQ, true, uint64(more))
		if err := q.Send(grant); err != nil {
			t.Fatal(err)
		}
		settled(fmt.Sprintf("Q gets %d more", more), total+more)
	}
	cancel()
	producer.Wait()
	t.Logf("P sent %d KiB, Q received %d KiB", sent.Load()>>10, got.Load()>>10)
	if sent.Load() > got.Load()+2*window+int64(rs[0].Cfg.Limits.CircuitWindow) {
		t.Errorf("P sent %d bytes for the %d Q took: the router held more than it granted", sent.Load(), got.Load())
	}
}
