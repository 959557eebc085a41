package router_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/dmsgd/dmsgd/internal/config"
)

func withMetrics() routerOption {
	return func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }
}

// withReadyTargets sets metrics.ready_targets.
func withReadyTargets(n int) routerOption {
	return func(c *config.Config) { c.Metrics.ReadyTargets = n }
}

// sample returns the value of the one series of metric name whose labels
// include want, and whether there is one.
func sample(tb testing.TB, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// waitSample polls until the series of name with labels has a value that
// ok accepts, and returns it.
func waitSample(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string, what string, ok func(float64) bool) float64 {
	tb.Helper()
	var v float64
	eventually(tb, what, func() error {
		var found bool
		v, found = sample(tb, g, name, labels)
		if !found || !ok(v) {
			return fmt.Errorf("%s%v = %v (present: %v)", name, labels, v, found)
		}
		return nil
	})
	return v
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

func TestMetricsNameLinksByPeerAndSurviveReconnects(t *testing.T) {
	r := newRouter(t, "r")
	reg := r.Metrics().Registry()
	peer := map[string]string{"peer": "leafy", "peer_type": "client", "direction": "inbound"}

	first := dialLeaf(t, r.tcpURL(), leafConfig{Label: "leafy"})
	first.waitSpans("r", 1)
	waitSample(t, reg, "dmsgd_links", map[string]string{"peer_type": "client", "direction": "inbound"},
		"one open client link", equal(1))
	first.Close()
	waitSample(t, reg, "dmsgd_link_downs_total", map[string]string{"peer": "leafy", "reason": "peer_closed"},
		"the first link counted down", equal(1))
	before, _ := sample(t, reg, "dmsgd_link_tx_messages_total", peer)
	if before < 2 { // at least our LNK_CONN and our advertisement
		t.Fatalf("dmsgd_link_tx_messages_total%v = %v after a whole link, want at least 2", peer, before)
	}

	second := dialLeaf(t, r.tcpURL(), leafConfig{Label: "leafy"})
	second.waitSpans("r", 1)
	waitSample(t, reg, "dmsgd_link_ups_total", peer, "the second link counted up", equal(2))
	// The second link's traffic continues the same series: it only grows.
	after := waitSample(t, reg, "dmsgd_link_tx_messages_total", peer, "the series to grow past the first link",
		func(v float64) bool { return v >= before+2 })
	second.Close()
	waitSample(t, reg, "dmsgd_link_downs_total", map[string]string{"peer": "leafy", "reason": "peer_closed"},
		"the second link counted down", equal(2))
	if closed, _ := sample(t, reg, "dmsgd_link_tx_messages_total", peer); closed < after {
		t.Fatalf("dmsgd_link_tx_messages_total went from %v to %v when the link closed", after, closed)
	}
	if open, ok := sample(t, reg, "dmsgd_links", map[string]string{"peer_type": "client"}); ok && open != 0 {
		t.Fatalf("dmsgd_links{peer_type=client} = %v with no client linked", open)
	}

	// No series is named by a per-process link id.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "link" || linkID.MatchString(lp.GetValue()) {
					t.Errorf("%s has a link id label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

var linkID = regexp.MustCompile(`^L[0-9]+$`)

func TestMetricsPassTheLinterAndIncludeRuntimeAndBuild(t *testing.T) {
	r := newRouter(t, "r")
	r.Metrics().SetBuildInfo("v1.2.3", "abcdef")
	problems, err := testutil.GatherAndLint(r.Metrics().Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "dmsgd_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_open_fds",
		"dmsgd_span_nodes", "dmsgd_listeners", "dmsgd_config_last_reload_successful"} {
		if testutil.CollectAndCount(r.Metrics().Registry(), name) == 0 {
			t.Errorf("no %s", name)
		}
	}
	if v, ok := sample(t, r.Metrics().Registry(), "dmsgd_build_info", map[string]string{"version": "v1.2.3", "commit": "abcdef"}); !ok || v != 1 {
		t.Errorf("dmsgd_build_info{version=v1.2.3,commit=abcdef} = %v, %v", v, ok)
	}
	if n := testutil.CollectAndCount(r.Metrics().Registry(), "dmsgd_build_info"); n != 1 {
		t.Errorf("%d dmsgd_build_info series, want 1", n)
	}
}

func TestReloadsAreCountedByResult(t *testing.T) {
	r := newRouter(t, "r")
	reg := r.Metrics().Registry()
	live := *r.cfg
	live.Log.Level = config.LogDebug
	if _, err := r.Reload(&live); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(&live); err != nil {
		t.Fatal(err)
	}
	restart := live
	restart.Shell.Socket = "/elsewhere.sock"
	if _, err := r.Reload(&restart); err == nil {
		t.Fatal("a reload changing shell.socket was applied")
	}
	r.ReloadInvalid()
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP dmsgd_config_reloads_total Configuration reloads (SIGHUP), by result: applied, unchanged, refused (a key needs a restart) or invalid (the file did not load).
# TYPE dmsgd_config_reloads_total counter
dmsgd_config_reloads_total{result="applied"} 1
dmsgd_config_reloads_total{result="invalid"} 1
dmsgd_config_reloads_total{result="refused"} 1
dmsgd_config_reloads_total{result="unchanged"} 1
# HELP dmsgd_config_last_reload_successful 1 if the last reload attempt (or the start) left the file's configuration in force, 0 if it was refused or invalid.
# TYPE dmsgd_config_last_reload_successful gauge
dmsgd_config_last_reload_successful 0
`), "dmsgd_config_reloads_total", "dmsgd_config_last_reload_successful")
	if err != nil {
		t.Error(err)
	}
}

// A configured target that cannot be reached shows as down with its
// failed dials and backoff, and /readyz says why until it comes up.
func TestTargetsAndReadinessFollowTheOnlyTarget(t *testing.T) {
	port := freeLoopbackPort(t)
	target := "127.0.0.1:" + strconv.Itoa(port)
	a := newRouter(t, "a", withMetrics(), withTarget(t, target), withReadyTargets(1))
	base := "http://" + a.MetricsAddr().String()
	reg := a.Metrics().Registry()
	labels := map[string]string{"target": "span:" + target, "media": "lab"}

	waitSample(t, reg, "dmsgd_target_dial_failures_total", labels, "a failed dial", atLeast(1))
	if up, _ := sample(t, reg, "dmsgd_target_up", labels); up != 0 {
		t.Fatalf("dmsgd_target_up = %v for a target nobody listens on", up)
	}
	code, body := fetch(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: 0 of 1 configured targets up") ||
		!strings.Contains(body, "span:"+target) || strings.Count(body, "\n") != 1 {
		t.Fatalf("/readyz with the only target down = %d %q", code, body)
	}
	if code, body := fetch(t, base+"/healthz"); code != http.StatusOK || !strings.HasPrefix(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}

	newRouter(t, "b", func(c *config.Config) { c.Listen = []string{"tcp://" + target} })
	a.Span(target) // kick the waiting target instead of sitting out its backoff
	waitSample(t, reg, "dmsgd_target_up", labels, "the target up", equal(1))
	eventually(t, "/readyz ready", func() error {
		if code, body := fetch(t, base+"/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "ready: ") {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
	if v, _ := sample(t, reg, "dmsgd_target_backoff_seconds", labels); v != 0 {
		t.Errorf("dmsgd_target_backoff_seconds = %v while up", v)
	}
	waitSample(t, reg, "dmsgd_link_ups_total", map[string]string{"peer": "b", "peer_type": "router", "direction": "outbound"},
		"the link to b counted up", equal(1))
}

func TestReadyzWithoutTargetsIsReadyOnceServing(t *testing.T) {
	a := newRouter(t, "a", withMetrics())
	eventually(t, "/readyz ready", func() error {
		code, body := fetch(t, "http://"+a.MetricsAddr().String()+"/readyz")
		if code != http.StatusOK || !strings.HasPrefix(body, "ready: 2 listeners") {
			return fmt.Errorf("/readyz = %d %q", code, body)
		}
		return nil
	})
	a.stop()
	if ok, why := a.Ready(); ok || why != "not ready: shutting down" {
		t.Fatalf("Ready after shutdown = %v %q", ok, why)
	}
}

func TestTLSRefusalsAreCounted(t *testing.T) {
	ka, kb, stranger := newNodeKey(t, "a"), newNodeKey(t, "b"), newNodeKey(t, "x")
	a := newRouter(t, "a", withTLS(ka, map[string]nodeKey{"b": kb}))
	x := newRouter(t, "x", withTLS(stranger, map[string]nodeKey{"a": ka}))
	x.Span("span+tls:" + a.addr())
	waitSample(t, a.Metrics().Registry(), "dmsgd_tls_handshake_failures_total",
		map[string]string{"direction": "inbound", "reason": "untrusted_key"}, "a refusing x's key", equal(1))

	bx := newRouter(t, "b2", withTLS(kb, map[string]nodeKey{"a": ka}))
	bx.Span("span+tls:" + x.addr())
	waitSample(t, bx.Metrics().Registry(), "dmsgd_tls_handshake_failures_total",
		map[string]string{"direction": "outbound", "reason": "untrusted_key"}, "b2 refusing x's key", equal(1))
	waitSample(t, x.Metrics().Registry(), "dmsgd_tls_handshake_failures_total",
		map[string]string{"direction": "inbound", "reason": "refused_by_peer"}, "x told so by b2", equal(1))
}

func TestNoMetricsEndpointUnlessConfigured(t *testing.T) {
	if newRouter(t, "a").MetricsAddr() != nil {
		t.Fatal("metrics served with metrics.listen empty")
	}
}

func TestMetricsAreServedInTheTextFormat(t *testing.T) {
	a := newRouter(t, "a", withMetrics())
	b := newRouter(t, "b")
	connect(t, a, b)
	err := testutil.ScrapeAndCompare("http://"+a.MetricsAddr().String()+"/metrics", strings.NewReader(`
# HELP dmsgd_span_nodes Nodes held.
# TYPE dmsgd_span_nodes gauge
dmsgd_span_nodes 2
# HELP dmsgd_link_ups_total Links that came up (the peer's LNK_CONN arrived), by peer.
# TYPE dmsgd_link_ups_total counter
dmsgd_link_ups_total{direction="outbound",peer="b",peer_type="router"} 1
`), "dmsgd_span_nodes", "dmsgd_link_ups_total")
	if err != nil {
		t.Fatal(err)
	}
}

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fetch GETs url and returns the status and body.
func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// get fetches url and returns its body; anything but 200 fails the test.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
