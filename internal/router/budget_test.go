package router_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// withLimits adjusts the limits section.
// newObservedRouter starts a router whose warnings are recorded, for
// counting log lines.
func newObservedRouter(tb testing.TB, label string, opts ...routerOption) (*testRouter, *observer.ObservedLogs) {
	tb.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	log := zap.New(zapcore.NewTee(core, testLogger(tb).Core()))
	r := testnet.Start(tb, label, log, opts...)
	return &testRouter{Router: r, tb: tb, label: label, cfg: r.Cfg, port: r.Port, socket: r.Socket}, logs
}

// floodLabel names the n-th span of a flood.
func floodLabel(n int) string { return fmt.Sprintf("flood%04d", n) }

// flood advertises n distinct nodes from l and waits until the router
// answered each: it returns how many it acknowledged and refused.
func flood(tb testing.TB, l *leaf, n int) (adverts []*endpoint.Advert, acked, refused int) {
	tb.Helper()
	for i := range n {
		adverts = append(adverts, l.advertise(hammer2Span(floodLabel(i), "h2", 0, 1)))
	}
	eventually(tb, "every flood span answered", func() error {
		acked, refused = 0, 0
		for _, a := range adverts {
			switch st := a.State(); {
			case st.Acked:
				acked++
			case st.Refused && st.Error == dmsg.ErrParam:
				refused++
			}
		}
		if acked+refused != n {
			return fmt.Errorf("%d acked, %d refused of %d", acked, refused, n)
		}
		return nil
	})
	return adverts, acked, refused
}

// floodLabels returns the flood nodes l holds.
func floodLabels(l *leaf) []string {
	var out []string
	for _, s := range l.labels() {
		if strings.HasPrefix(s, "flood") {
			out = append(out, s)
		}
	}
	return out
}

// A peer advertising far more than the router's budgets is refused past
// its share; a well-behaved leaf beside it keeps getting its spans to the
// others, and the router holds no more than its budgets.
func TestASpanFloodIsRefusedAndAWellBehavedLeafStillGetsThrough(t *testing.T) {
	r, logs := newObservedRouter(t, "r", withLimits(func(l *config.Limits) {
		l.MaxNodes, l.MaxSpans, l.MaxRelays = 64, 128, 256
	}))
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	control := dialLeaf(t, r.tcpURL(), leafConfig{Label: "control"})
	fl := dialLeaf(t, r.tcpURL(), leafConfig{Label: "flood"})
	watcher.waitAcked()
	control.waitAcked()
	fl.waitAcked()

	_, acked, refused := flood(t, fl, 300)
	if acked > 32 || refused == 0 {
		t.Errorf("%d flood spans acknowledged, %d refused: the flood may hold half of 64 nodes", acked, refused)
	}
	st := r.Engine().Stats()
	if st.Nodes > 64 || st.Links > 128+1 || st.Relays > 256+st.Conns {
		t.Errorf("the router holds %+v, over its budgets", st)
	}
	if got := testnet.LimitHits(r.Metrics(), "max_nodes"); int(got) != refused {
		t.Errorf("max_nodes counted %v refusals, %d were refused", got, refused)
	}
	if n := logs.FilterMessageSnippet("LNK_SPAN refused").Len(); n > 2 {
		t.Errorf("%d warning lines for %d refusals, want at most 2", n, refused)
	}

	// The control leaf's span updates still cross the router.
	for i := range 3 {
		label := fmt.Sprintf("control%d", i)
		a := control.advertise(hammer2Span(label, "h2", 0, 1))
		watcher.waitSpans(label, 1)
		a.Withdraw()
		watcher.waitSpans(label, 0)
	}
	if fl.ConnState().Closed {
		t.Error("the flood's LNK_CONN was closed: refusals within the refusal budget must not close it")
	}
}

// A peer that keeps opening spans after being refused is a flood: past
// limits.max_span_refusals its link is closed, everything it advertised
// is withdrawn, and the other links are untouched.
func TestAPeerThatKeepsOpeningSpansPastItsBudgetIsClosed(t *testing.T) {
	r, logs := newObservedRouter(t, "r", withMaxSpansPerLink(4),
		withLimits(func(l *config.Limits) { l.MaxSpanRefusals = 16 }))
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	control := dialLeaf(t, r.tcpURL(), leafConfig{Label: "control"})
	fl := dialLeaf(t, r.tcpURL(), leafConfig{Label: "flood"})
	control.advertise(hammer2Span("ctl", "h2", 0, 1))
	watcher.waitSpans("ctl", 1)
	fl.waitAcked()

	for i := range 100 { // until the router closes the link
		s := hammer2Span(floodLabel(i), "h2", 0, 1)
		if _, err := fl.Advertise(s); err != nil { // refused or not, the next one
			break
		}
	}
	waitChan(t, "the flooding link to be closed", fl.Done())
	eventually(t, "the watcher holds no flood span", func() error {
		if got := floodLabels(watcher); len(got) != 0 {
			return fmt.Errorf("holds %v", got)
		}
		return nil
	})
	watcher.waitSpans("ctl", 1)
	a := control.advertise(hammer2Span("ctl2", "h2", 0, 1))
	watcher.waitSpans("ctl2", 1)
	eventually(t, "the control leaf's next span acknowledged", func() error {
		if st := a.State(); !st.Acked || st.Refused {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if got := testnet.LimitHits(r.Metrics(), "max_span_refusals"); got < 1 {
		t.Errorf("max_span_refusals counted %v, want the closing refusal", got)
	}
	if n := logs.FilterMessageSnippet("kept opening spans").Len(); n != 1 {
		t.Errorf("%d lines about the flood, want 1", n)
	}
	if n := logs.FilterMessageSnippet("LNK_SPAN refused").Len(); n > 2 {
		t.Errorf("%d lines for the refusals before it, want at most 2", n)
	}
}

// The relay budget delays what a flood would have the router relay; as
// the flood withdraws, the relays held back follow, over real sockets.
func TestRelaysHeldBackByTheBudgetFollowWhenRelaysFree(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxRelays = 24 }))
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	control := dialLeaf(t, r.tcpURL(), leafConfig{Label: "control"})
	fl := dialLeaf(t, r.tcpURL(), leafConfig{Label: "flood",
		Conn: &dmsg.Conn{PeerType: dmsg.PeerClient}}) // asks for nothing
	watcher.waitAcked()
	control.waitAcked()
	fl.waitAcked()
	adverts, _, refused := flood(t, fl, 30)
	if refused != 0 {
		t.Fatalf("%d flood spans refused: only relays are short here", refused)
	}
	var first []string
	eventually(t, "the flood's share of relays opened, the rest waiting", func() error {
		first = floodLabels(watcher)
		st := r.Engine().Stats()
		if len(first) == 0 || len(first) >= 30 || st.Starved == 0 {
			return fmt.Errorf("watcher holds %d flood nodes, engine %+v", len(first), st)
		}
		return nil
	})
	if got := testnet.LimitHits(r.Metrics(), "max_relays"); got == 0 {
		t.Error("relays held back were not counted")
	}
	for i, a := range adverts {
		if slices.Contains(first, floodLabel(i)) {
			a.Withdraw()
		}
	}
	eventually(t, "the watcher gets flood nodes it did not have", func() error {
		for _, l := range floodLabels(watcher) {
			if !slices.Contains(first, l) {
				return nil
			}
		}
		return fmt.Errorf("holds %v", floodLabels(watcher))
	})
	fl.Close()
	eventually(t, "nothing waits once the flood is gone", func() error {
		if st := r.Engine().Stats(); st.Starved != 0 || len(floodLabels(watcher)) != 0 {
			return fmt.Errorf("engine %+v, watcher holds %v", st, floodLabels(watcher))
		}
		return nil
	})
}

// Refusals because of a limit are served on /metrics, by limit.
func TestLimitRefusalsAreServedOnMetrics(t *testing.T) {
	r := newRouter(t, "r", withMaxSpansPerLink(1), func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	origin := dialLeaf(t, r.tcpURL(), leafConfig{Label: "origin"})
	origin.advertise(hammer2Span("s1", "h2", 0, 1))
	s2 := origin.advertise(hammer2Span("s2", "h2", 0, 1))
	eventually(t, "s2 refused", func() error {
		if !s2.State().Refused {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	body := get(t, "http://"+r.MetricsAddr().String()+"/metrics")
	want := "# TYPE dmsgd_limit_refusals_total counter\n" + `dmsgd_limit_refusals_total{limit="max_spans_per_link"} 1` + "\n"
	for _, want := range []string{want, "dmsgd_span_nodes_waiting 0\n", "dmsgd_circuits_held 0\n"} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

// The router a flood arrives at spends its budget on it, not the
// cluster's: the next router holds no more than the first let through,
// and a leaf beside the flood still reaches a leaf two routers away.
func TestAFloodIsHeldAtTheFirstRouterItReaches(t *testing.T) {
	rs := line(t, 2, withLimits(func(l *config.Limits) { l.MaxNodes = 64 }))
	r1, r2 := rs[0], rs[1]
	fl := dialLeaf(t, r1.tcpURL(), leafConfig{Label: "flood"})
	control := dialLeaf(t, r1.tcpURL(), leafConfig{Label: "control"})
	far := dialLeaf(t, r2.tcpURL(), leafConfig{Label: "far"})
	fl.waitAcked()
	control.waitAcked()
	far.waitAcked()
	_, acked, _ := flood(t, fl, 200)
	eventually(t, "the far leaf holds what r1 let through", func() error {
		if got := len(floodLabels(far)); got != acked {
			return fmt.Errorf("far holds %d flood nodes, r1 acknowledged %d", got, acked)
		}
		return nil
	})
	if st := r2.Engine().Stats(); st.Nodes > 64 {
		t.Errorf("r2 holds %+v", st)
	}
	control.advertise(hammer2Span("ctl", "h2", 0, 1))
	far.waitSpans("ctl", 1)
}

// The budgets are live: a reload raising limits.max_relays opens the
// relays that waited for it.
func TestAReloadAppliesTheBudgets(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxRelays = 8 }))
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	fl := dialLeaf(t, r.tcpURL(), leafConfig{Label: "flood", Conn: &dmsg.Conn{PeerType: dmsg.PeerClient}})
	watcher.waitAcked()
	fl.waitAcked()
	flood(t, fl, 20)
	eventually(t, "relays held back", func() error {
		if st := r.Engine().Stats(); st.Starved == 0 {
			return fmt.Errorf("engine %+v", st)
		}
		return nil
	})
	newer := *r.Config()
	newer.Limits.MaxRelays = 1000
	changes, err := r.Reload(&newer)
	if err != nil || !slices.ContainsFunc(changes, func(c string) bool { return strings.HasPrefix(c, "limits.max_relays") }) {
		t.Fatalf("reload: %q, %v", changes, err)
	}
	eventually(t, "every flood node relayed to the watcher", func() error {
		if got := len(floodLabels(watcher)); got != 20 {
			return fmt.Errorf("watcher holds %d", got)
		}
		return nil
	})
	if st := r.Engine().Stats(); st.Starved != 0 {
		t.Errorf("engine %+v: nothing should wait", st)
	}
}
