package circ_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

func withMaxCircuitsPerLink(n int) routerOption {
	return func(c *config.Config) { c.Limits.MaxCircuitsPerLink = n }
}

// held is the number of circuits the router holds against max_circuits.
func (r *testRouter) held() int { return r.Circuits().Held() }

func (r *testRouter) waitHeld(tb testing.TB, n int) {
	tb.Helper()
	eventually(tb, fmt.Sprintf("%s holds %d circuits", r.label, n), func() error {
		if got := r.held(); got != n {
			return fmt.Errorf("holds %d", got)
		}
		return nil
	})
}

// wantRefused waits for c to end and checks it was refused with CANTCIRC
// (REPLY|CREATE|DELETE).
func wantRefused(tb testing.TB, c *circuit) {
	tb.Helper()
	cmd, code := c.waitDone()
	if code != dmsg.ErrCantCirc || cmd&dmsg.FlagCreate == 0 {
		tb.Fatalf("circuit ended with %s %s, want a CANTCIRC refusal", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
}

// A circuit to the router's own node holds a shell endpoint there: it
// counts against limits.max_circuits like a relayed one, and its slot is
// free again once it closes.
func TestCircuitsEndingAtTheRouterCountAgainstMaxCircuits(t *testing.T) {
	r := newRouter(t, "r", withMaxCircuits(3))
	var ls []*leaf
	for i := range 4 {
		ls = append(ls, dialLeaf(t, r.addr(), fmt.Sprintf("leaf%d", i), leafOptions{}))
	}
	var cs []*circuit
	for _, l := range ls[:3] {
		cs = append(cs, l.openTo("r"))
	}
	r.waitHeld(t, 3)
	wantRefused(t, ls[3].open(ls[3].waitSpan("r").MsgID))
	if got := testnet.LimitHits(r.Metrics(), "max_circuits"); got != 1 {
		t.Errorf("max_circuits counted %v refusals, want 1", got)
	}
	cs[0].close()
	cs[0].waitDone()
	r.waitHeld(t, 2)
	cs = append(cs, ls[3].openTo("r"))
	r.waitHeld(t, 3)
	for _, c := range cs[1:] {
		c.close()
		c.waitDone()
	}
	r.waitHeld(t, 0)
}

func TestALinkIsRefusedCircuitsBeyondMaxCircuitsPerLink(t *testing.T) {
	r := newRouter(t, "r", withMaxCircuitsPerLink(2))
	target := dialLeaf(t, r.addr(), "target", leafOptions{})
	a := dialLeaf(t, r.addr(), "a", leafOptions{})
	b := dialLeaf(t, r.addr(), "b", leafOptions{})
	a.openTo("r")      // ends here
	a.openTo("target") // relayed
	wantRefused(t, a.open(a.waitSpan("r").MsgID))
	wantRefused(t, a.open(a.waitSpan("target").MsgID))
	b.openTo("target") // another link's bound is its own
	if got := testnet.LimitHits(r.Metrics(), "max_circuits_per_link"); got != 2 {
		t.Errorf("max_circuits_per_link counted %v refusals, want 2", got)
	}
	r.waitHeld(t, 3)
	a.close()
	r.waitHeld(t, 1) // a's link loss freed both of its circuits
	b.close()
	target.close()
	r.waitHeld(t, 0)
}

// Many links open circuits at once, to the router itself and through it:
// the slot is reserved before anything is set up, so the router never
// holds more than limits.max_circuits, not even for a moment, and every
// refusal is CANTCIRC. A flood's refusals write at most two log lines.
func TestConcurrentCircuitSetupsNeverOvershootMaxCircuits(t *testing.T) {
	const max, peers, each = 48, 8, 40
	const firstCirc = 100 // msgids below are the raw peer's LNK_CONN and span
	core, logs := observer.New(zapcore.WarnLevel)
	r := newRouterLog(t, "r", zap.New(core), withMaxCircuits(max), withoutKeepalive())
	target := dialLeaf(t, r.addr(), "target", leafOptions{})
	var ps []*rawPeer
	for i := range peers {
		p := dialRaw(t, r.addr(), nil)
		if err := p.hello(""); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
		label := "r"
		if i%2 == 1 {
			label = "target"
		}
		eventually(t, "the raw peer holds "+label, func() error {
			if _, ok := p.spanFor(label); !ok {
				return fmt.Errorf("no span for %s", label)
			}
			return nil
		})
	}

	var over atomic.Int64
	stop := make(chan struct{})
	var watch sync.WaitGroup
	defer watch.Wait()
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	defer halt()
	watch.Add(1)
	go func() { // sample what the router holds while the setups run
		defer watch.Done()
		for {
			if n := r.held(); n > max {
				over.Store(int64(n))
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for i, p := range ps {
		label := "r"
		if i%2 == 1 {
			label = "target"
		}
		spanID, _ := p.spanFor(label)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: spanID})
				m.MsgID = firstCirc + uint64(j)
				if err := p.Write(m); err != nil {
					t.Error(err)
					return
				}
			}
			if err := p.Flush(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	answered := func() (up, refused int) {
		for _, p := range ps {
			p.mu.Lock()
			for id := range p.circUp {
				if _, ended := p.circEnd[id]; !ended && id >= firstCirc {
					up++
				}
			}
			for id, code := range p.circEnd {
				if code == dmsg.ErrCantCirc && id >= firstCirc {
					refused++
				}
			}
			p.mu.Unlock()
		}
		return up, refused
	}
	eventually(t, "every LNK_CIRC answered", func() error {
		if up, refused := answered(); up+refused != peers*each {
			return fmt.Errorf("%d accepted, %d refused of %d", up, refused, peers*each)
		}
		return nil
	})
	halt()
	watch.Wait()
	up, refused := answered()
	if n := over.Load(); n != 0 {
		t.Errorf("the router held %d circuits at a moment, limit %d", n, max)
	}
	if up > max || up != r.held() || up == 0 {
		t.Errorf("%d circuits accepted, the router holds %d, limit %d", up, r.held(), max)
	}
	if got := int(testnet.LimitHits(r.Metrics(), "max_circuits")); got != refused {
		t.Errorf("max_circuits counted %d refusals, %d were refused", got, refused)
	}
	if n := logs.FilterMessageSnippet("LNK_CIRC refused").Len(); n > 2 || n == 0 {
		t.Errorf("%d log lines for %d refusals, want 1 or 2", n, refused)
	}
	for _, p := range ps {
		p.close()
	}
	r.waitHeld(t, 0)
	target.close()
}

// A link to a router carries the circuits of every peer behind it: it gets
// twice the per-link bound, so two leaves each at their own bound at r1
// both get through r2.
func TestARoutersLinkGetsTwiceTheCircuitsPerLink(t *testing.T) {
	rs := line(t, 2, withMaxCircuitsPerLink(2))
	r1, r2 := rs[0], rs[1]
	a := dialLeaf(t, r1.addr(), "a", leafOptions{})
	b := dialLeaf(t, r1.addr(), "b", leafOptions{})
	c := dialLeaf(t, r1.addr(), "c", leafOptions{})
	for _, l := range []*leaf{a, a, b, b} {
		l.openTo("r2")
	}
	r2.waitHeld(t, 4)
	wantRefused(t, c.open(c.waitSpan("r2").MsgID)) // r1's link at r2 holds 4: its bound
	if got := testnet.LimitHits(r2.Metrics(), "max_circuits_per_link"); got != 1 {
		t.Errorf("r2 counted %v max_circuits_per_link refusals, want 1", got)
	}
	if got := testnet.LimitHits(r1.Metrics(), "max_circuits_per_link"); got != 0 {
		t.Errorf("r1 counted %v refusals, want none", got)
	}
}
