package span

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// noSpans is a leaf's LNK_CONN asking for nothing: a neighbor that only
// advertises, so the relays a test counts all go to the others.
var noSpans = dmsg.Conn{PeerType: dmsg.PeerHammer2}

// routerNoSpans is the same from a router.
var routerNoSpans = dmsg.Conn{PeerType: dmsg.PeerRouter}

// try delivers a span on c with a fresh msgid and returns the engine's
// answer.
func (f *fixture) try(c *Neighbor, s dmsg.Span) (*Advert, error) {
	f.msgid++
	return f.e.SpanReceived(c, f.msgid, s)
}

// mustRefuse delivers a span that must be refused with want, and checks
// that nothing was allocated for it.
func (f *fixture) mustRefuse(c *Neighbor, s dmsg.Span, want error) {
	f.t.Helper()
	before := f.e.Stats()
	if l, err := f.try(c, s); !errors.Is(err, want) || l != nil {
		f.t.Fatalf("span %s@%d on %s: %v, want %v", s.FsLabel, s.Dist, c.peer.ID(), err, want)
	}
	if after := f.e.Stats(); after != before {
		f.t.Fatalf("a refused span changed the engine: %+v -> %+v", before, after)
	}
}

// wantNoCharges fails unless every count the budgets keep is back at zero
// for the engine and for each of conns.
func (f *fixture) wantNoCharges(conns ...*Neighbor) {
	f.t.Helper()
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	if n, s := f.e.budget.spans.Load(), f.e.budget.starved; n != 0 || s != 0 {
		f.t.Fatalf("engine still counts %d spans, %d starved nodes", n, s)
	}
	for _, c := range conns {
		ch := &c.charge
		if ch.spans.Load() != 0 || ch.nodes != 0 || ch.relays != 0 || ch.starved.head != nil {
			f.t.Fatalf("%s still charged %d spans %d nodes %d relays (starved list empty: %v)",
				c.peer.ID(), ch.spans.Load(), ch.nodes, ch.relays, ch.starved.head == nil)
		}
	}
}

// withdrawAll withdraws every span received on conns.
func (f *fixture) withdrawAll(conns ...*Neighbor) {
	for _, c := range conns {
		f.e.mu.Lock()
		var ls []*Advert
		for _, l := range c.links {
			ls = append(ls, l)
		}
		f.e.mu.Unlock()
		for _, l := range ls {
			f.e.SpanWithdrawn(l)
		}
	}
}

func TestEachBudgetRefusesASpanBeforeAllocatingAndCountsReturnToZero(t *testing.T) {
	cases := []struct {
		name   string
		cfg    Config
		script func(f *fixture, a, b, c, d *Neighbor)
	}{
		{"max_spans: one connection takes half, each next one half of what is left", Config{Budget: Budget{MaxSpans: 4}},
			func(f *fixture, a, b, c, d *Neighbor) {
				f.recv(a, rspan("a1", 0, 0))
				f.recv(a, rspan("a2", 0, 0))
				f.mustRefuse(a, rspan("a3", 0, 0), ErrSpanBudget)
				f.recv(b, rspan("b1", 0, 0))
				f.mustRefuse(b, rspan("b2", 0, 0), ErrSpanBudget)
				f.recv(c, rspan("c1", 0, 0))
				f.mustRefuse(d, rspan("d1", 0, 0), ErrSpanBudget) // all 4 held
				f.mustRefuse(a, rspan("a1", 1, 0), ErrSpanBudget) // a known node is no exception
			}},
		{"max_nodes: a span for a new node beyond it is refused, one for a node held is not", Config{Budget: Budget{MaxNodes: 3}},
			func(f *fixture, a, b, c, d *Neighbor) {
				f.recv(a, rspan("n1", 0, 0))
				f.recv(a, rspan("n2", 0, 0))
				f.mustRefuse(a, rspan("n3", 0, 0), ErrNodeBudget)
				f.recv(a, rspan("n1", 1, 0))
				f.recv(b, rspan("n4", 0, 0))
				f.mustRefuse(c, rspan("n5", 0, 0), ErrNodeBudget)
				f.recv(c, rspan("n1", 2, 0))
				f.recv(d, rspan("n4", 1, 0))
			}},
		{"max_spans_per_node: per connection and node", Config{Budget: Budget{MaxSpansPerNode: 2}},
			func(f *fixture, a, b, c, d *Neighbor) {
				f.recv(a, rspan("n", 0, 0))
				f.recv(a, rspan("n", 1, 0))
				f.mustRefuse(a, rspan("n", 2, 0), ErrNodeSpans)
				f.recv(a, rspan("m", 0, 0))
				f.recv(b, rspan("n", 3, 0))
				f.recv(b, rspan("n", 4, 0))
			}},
		{"max_spans_per_link", Config{MaxSpansPerConn: 1},
			func(f *fixture, a, b, c, d *Neighbor) {
				f.recv(a, rspan("n", 0, 0))
				f.mustRefuse(a, rspan("m", 0, 0), ErrTooManySpans)
				f.recv(b, rspan("m", 0, 0))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			dst, _ := f.conn("dst", allOf)
			var cs []*Neighbor
			for _, id := range []string{"a", "b", "c", "d"} {
				_, c := f.conn(id, noSpans)
				cs = append(cs, c)
			}
			tc.script(f, cs[0], cs[1], cs[2], cs[3])
			f.e.mu.Lock()
			relays := len(dst.open)
			f.e.mu.Unlock()
			if st := f.e.Stats(); relays != st.Relays || st.Relays < st.Nodes {
				t.Fatalf("dst holds %d relays; engine %+v: every node held is relayed to dst", relays, st)
			}
			f.withdrawAll(cs...)
			f.wantNoCharges(cs...)
			f.wantStats(Stats{Conns: 5})
		})
	}
}

// A router's link carries everything behind it: it may hold twice what
// is still free, so a flood held to half a budget by the router it came
// in at still leaves room behind that router at the next one.
func TestARoutersLinkMayHoldTwiceWhatIsFree(t *testing.T) {
	f := newFixture(t, Config{Budget: Budget{MaxNodes: 9}})
	_, leaf := f.conn("leaf", noSpans)
	_, router := f.conn("router", routerNoSpans)
	for i := range 6 { // alone, a router takes two thirds
		f.recv(router, rspan(fmt.Sprintf("r%d", i), 0, 0))
	}
	f.mustRefuse(router, rspan("r6", 0, 0), ErrNodeBudget)
	f.recv(leaf, rspan("l0", 0, 0)) // 0 < 9-6
	f.recv(leaf, rspan("l1", 0, 0)) // 1 < 9-7
	f.mustRefuse(leaf, rspan("l2", 0, 0), ErrNodeBudget)
}

func TestANodeIsChargedToAnotherConnectionWhenItsCreatorWithdraws(t *testing.T) {
	f := newFixture(t, Config{Budget: Budget{MaxNodes: 4}})
	_, a := f.conn("a", noSpans)
	_, b := f.conn("b", noSpans)
	la := f.recv(a, rspan("n", 0, 0))
	f.recv(b, rspan("n", 1, 0))
	if a.charge.nodes != 1 || b.charge.nodes != 0 {
		t.Fatalf("charged a %d b %d nodes, want the creator a", a.charge.nodes, b.charge.nodes)
	}
	f.e.SpanWithdrawn(la)
	if a.charge.nodes != 0 || b.charge.nodes != 1 {
		t.Fatalf("charged a %d b %d nodes, want b once a's span went", a.charge.nodes, b.charge.nodes)
	}
	// b's share of 4 nodes with 1 held: it may create one more, not two.
	f.recv(b, rspan("m", 0, 0))
	f.mustRefuse(b, rspan("o", 0, 0), ErrNodeBudget)
	f.e.ConnDown(a)
	f.e.ConnDown(b)
	f.wantNoCharges(a, b)
	f.wantStats(Stats{})
}

// A neighbor over its budget is refused before the cluster mutex is
// taken, so its flood does not queue behind, or hold up, the span events
// of other links.
func TestASpanOverItsConnectionsBudgetIsRefusedWithoutTheClusterMutex(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"over max_spans_per_link", Config{MaxSpansPerConn: 1}, ErrTooManySpans},
		{"over its share of max_spans", Config{Budget: Budget{MaxSpans: 2}}, ErrSpanBudget},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			_, a := f.conn("a", noSpans)
			f.recv(a, rspan("n", 0, 0))
			f.e.mu.Lock()
			done := make(chan error, 1)
			go func() {
				_, err := f.e.SpanReceived(a, 99, rspan("m", 0, 0))
				done <- err
			}()
			select {
			case err := <-done:
				f.e.mu.Unlock()
				if !errors.Is(err, tc.want) {
					t.Fatalf("refused with %v, want %v", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				f.e.mu.Unlock()
				<-done
				t.Fatal("the refusal waited for the cluster mutex")
			}
		})
	}
}

func TestAConnectionRefusedTooOftenIsAFlood(t *testing.T) {
	reg := metrics.New()
	f := newFixture(t, Config{MaxSpansPerConn: 1, Budget: Budget{MaxRefusals: 3}, Metrics: reg})
	now := time.Unix(1000, 0)
	f.e.budget.now = func() time.Time { return now }
	_, a := f.conn("a", noSpans)
	_, b := f.conn("b", noSpans)
	f.recv(a, rspan("n", 0, 0))
	for range 3 {
		f.mustRefuse(a, rspan("m", 0, 0), ErrTooManySpans)
	}
	f.mustRefuse(a, rspan("m", 0, 0), ErrRefusalFlood)
	f.mustRefuse(a, rspan("m", 0, 0), ErrRefusalFlood)
	f.recv(b, rspan("m", 0, 0)) // another neighbor's bucket is its own
	now = now.Add(RefusalWindow / 3)
	f.mustRefuse(a, rspan("m", 0, 0), ErrTooManySpans) // one refusal refilled
	f.mustRefuse(a, rspan("m", 0, 0), ErrRefusalFlood)
	if got := limitCount(t, reg, "max_spans_per_link"); got != 7 {
		t.Errorf("max_spans_per_link counted %v times, want every refusal (7)", got)
	}
	if got := limitCount(t, reg, "max_span_refusals"); got != 3 {
		t.Errorf("max_span_refusals counted %v times, want 3", got)
	}
	if Limit(ErrRefusalFlood) != "max_span_refusals" || Limit(ErrDuplicate) != "" {
		t.Error("Limit does not name the config keys")
	}
}

// limitCount reads dmsgd_limit_refusals_total{limit=limit}.
func limitCount(t *testing.T, m *metrics.Metrics, limit string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dmsgd_limit_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// relayFixture is a flooding neighbor, a light one and two that only
// listen, with a relay budget of 20.
type relayFixture struct {
	*fixture
	flood, light *Neighbor
	d1, d2       *fakePeer
	floodLinks   []*Advert
}

func newRelayFixture(t *testing.T, cfg Config) *relayFixture {
	cfg.Budget.MaxRelays = 20
	f := &relayFixture{fixture: newFixture(t, cfg)}
	f.d1, _ = f.conn("d1", allOf)
	f.d2, _ = f.conn("d2", allOf)
	_, f.flood = f.conn("flood", noSpans)
	_, f.light = f.conn("light", noSpans)
	for i := range 20 {
		f.floodLinks = append(f.floodLinks, f.recv(f.flood, rspan(fmt.Sprintf("f%02d", i), 0, 0)))
	}
	return f
}

// relaysOf counts the relays open on p of nodes whose label starts with
// prefix.
func relaysOf(p *fakePeer, prefix string) int {
	n := 0
	for _, tx := range p.open {
		if len(tx.span.FsLabel) >= len(prefix) && tx.span.FsLabel[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func TestTheRelayBudgetIsSharedAndRelaysResumeWhenItFrees(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	events := ratelog.New(zap.New(core), time.Hour)
	defer events.Close()
	reg := metrics.New()
	f := newRelayFixture(t, Config{Events: events, Metrics: reg})

	// The flood wants 40 relays; it may hold what is still free: 10, for
	// 5 nodes on both listeners.
	if st := f.e.Stats(); st.Relays != 10 || st.Starved != 15 {
		t.Fatalf("after the flood: %+v, want 10 relays and its other 15 nodes waiting", st)
	}
	if got := limitCount(t, reg, "max_relays"); got != 30 {
		t.Errorf("max_relays counted %v times, want each relay held back (30)", got)
	}
	if n := logs.FilterMessageSnippet("limits.max_relays").Len(); n != 1 {
		t.Errorf("%d log lines for 30 relays held back, want 1 in the window", n)
	}

	// A light neighbor's span still reaches everyone.
	f.recv(f.light, rspan("light", 0, 0))
	if relaysOf(f.d1, "light")+relaysOf(f.d2, "light") != 2 {
		t.Fatalf("the light connection's span was not relayed: d1 %v d2 %v", f.d1.got(), f.d2.got())
	}

	// Withdrawing five flood spans frees ten relays: the waiting ones
	// open, up to the flood's share of what is then free (it may take one
	// more while it holds fewer than are free: 9 with the light's 2).
	for _, l := range f.floodLinks[:5] {
		f.e.SpanWithdrawn(l)
	}
	if st := f.e.Stats(); st.Relays != 2+9 {
		t.Fatalf("after 5 withdrawals: %+v, want the light's 2 and the flood's share of 9", st)
	}
	// The budget lifted: everything waiting opens.
	cfg := f.e.budget.limits()
	if err := f.e.Reconfigure(Config{Rnss: f.e.Rnss(), MaxSpansPerConn: cfg.spansPerConn}); err != nil {
		t.Fatal(err)
	}
	if st := f.e.Stats(); st.Relays != 2+30 || st.Starved != 0 {
		t.Fatalf("with no relay budget: %+v, want every relay open and nothing waiting", st)
	}
	if relaysOf(f.d1, "f") != 15 || relaysOf(f.d2, "f") != 15 {
		t.Fatalf("d1 %v d2 %v, want the 15 flood nodes on each", f.d1.got(), f.d2.got())
	}
}

func TestHeldBackRelaysOpenWhenAConnectionGoes(t *testing.T) {
	f := newRelayFixture(t, Config{})
	// d2 going frees its relays; d1's waiting ones open in their place.
	before := relaysOf(f.d1, "f")
	f.e.ConnDown(f.e.byPeer[f.d2])
	if got := relaysOf(f.d1, "f"); got <= before || got != 10 {
		t.Fatalf("d1 holds %d flood relays (had %d), want the flood's share of 10", got, before)
	}
	// The flood going frees everything it held and waited for.
	f.e.ConnDown(f.flood)
	f.wantNoCharges(f.flood, f.light)
	if st := f.e.Stats(); st.Relays != 0 || st.Starved != 0 || st.Nodes != 0 {
		t.Fatalf("after the flood left: %+v", st)
	}
}

// With the budget spent, a better path that cannot be relayed leaves the
// relay of the worse one in place: the peer keeps a path to the node.
// When relays free, the better one replaces it.
func TestAWorsePathStaysRelayedWhileTheBudgetHoldsBackABetterOne(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 1, Budget: Budget{MaxRelays: 2}})
	dst, _ := f.conn("dst", allOf)
	_, a := f.conn("a", noSpans)
	_, b := f.conn("b", noSpans)
	other := f.recv(b, rspan("other", 0, 0)) // b: 1 of 2
	f.recv(a, rspan("n", 5, 0))              // a: 1, the budget is spent
	f.recv(b, rspan("n", 1, 0))              // better, but b's share is spent
	if got := dst.got(); !slices.Equal(got, []string{"n@6", "other@1"}) {
		t.Fatalf("dst holds %v, want the worse path kept", got)
	}
	if st := f.e.Stats(); st.Starved != 1 {
		t.Fatalf("%+v: want n waiting", st)
	}
	f.e.SpanWithdrawn(other)
	if got := dst.got(); !slices.Equal(got, []string{"n@2"}) {
		t.Fatalf("dst holds %v, want the better path once relays freed", got)
	}
}

// The self advertisement is never held back: it is the router's identity
// and one relay per neighbor.
func TestOurOwnAdvertisementIsRelayedWhateverTheBudget(t *testing.T) {
	f := newFixture(t, Config{Self: ptr(rspan("me", 0, 0)), Budget: Budget{MaxRelays: 1}})
	_, src := f.conn("src", noSpans)
	f.recv(src, rspan("n", 0, 0))
	for i := range 3 {
		p, _ := f.conn(fmt.Sprintf("p%d", i), allOf)
		if relaysOf(p, "me") != 1 {
			t.Fatalf("p%d holds %v, want our advertisement", i, p.got())
		}
	}
}

// A reload of the pinned keys (Reverify) that closes relays frees relay
// budget like any other engine call: the relays waiting for it open at
// once, not at the next span event.
func TestHeldBackRelaysOpenWhenReverifyClosesRelays(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 2, Budget: Budget{MaxRelays: 6}})
	dst, _ := f.conn("dst", allOf)
	_, a := f.conn("a", noSpans)
	_, b := f.conn("b", noSpans)
	_, c := f.conn("c", noSpans)
	f.recv(a, rspan("n", 0, 0))
	f.recv(b, rspan("n", 1, 0)) // n relayed twice: 2 of 6
	for i := range 3 {
		f.recv(c, rspan(fmt.Sprintf("m%d", i), 0, 0)) // c may hold 2; m2 waits
	}
	if st := f.e.Stats(); st.Relays != 4 || st.Starved != 1 {
		t.Fatalf("before: %+v, want 4 relays and m2 waiting", st)
	}
	// a's advertisement of n turns out verified: only it is relayed now,
	// which frees one relay, enough for m2.
	f.e.Reverify(func(s dmsg.Span, old Proof) Proof {
		if s.FsLabel == "n" && s.Dist == 0 {
			return Proof{Verified: true, Seq: 1}
		}
		return old
	})
	if st := f.e.Stats(); st.Starved != 0 || relaysOf(dst, "m") != 3 {
		t.Fatalf("after Reverify: %+v, dst %v: want m2 relayed and nothing waiting", st, dst.got())
	}
}
