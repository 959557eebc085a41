package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestANilMetricsCountsNothingAndDoesNotPanic(t *testing.T) {
	var m *Metrics
	m.LimitHit("max_links")
	m.ProtocolError("framing")
	m.SetBuildInfo("v", "c")
	m.ConfigReload(ReloadApplied)
	m.TLSHandshakeFailed("inbound", "timeout")
	m.CircuitRelayed()
	m.CircuitClosed("closed")
	m.CircuitRefused("no_span")
	m.SpanRefused("own_node")
	m.ShellCommand("socket")
	m.PeerSeriesOverflow()
	m.ReaderPaused("link_rate")
}

func TestAReloadSetsTheLastReloadGauges(t *testing.T) {
	m := New()
	m.ConfigReload(ReloadRefused)
	if v := testutil.ToFloat64(m.op.reloadOK); v != 0 {
		t.Fatalf("after a refused reload dmsgd_config_last_reload_successful = %v", v)
	}
	before := testutil.ToFloat64(m.op.reloadOKTime)
	m.ConfigReload(ReloadApplied)
	if v := testutil.ToFloat64(m.op.reloadOK); v != 1 {
		t.Fatalf("after an applied reload dmsgd_config_last_reload_successful = %v", v)
	}
	if after := testutil.ToFloat64(m.op.reloadOKTime); after < before {
		t.Fatalf("the success timestamp went back from %v to %v", before, after)
	}
	err := testutil.CollectAndCompare(m.op.reloads, strings.NewReader(`
# HELP dmsgd_config_reloads_total Configuration reloads (SIGHUP), by result: applied, unchanged, refused (a key needs a restart) or invalid (the file did not load).
# TYPE dmsgd_config_reloads_total counter
dmsgd_config_reloads_total{result="applied"} 1
dmsgd_config_reloads_total{result="refused"} 1
`))
	if err != nil {
		t.Fatal(err)
	}
}

func TestErrorReasonsAreBoundedNames(t *testing.T) {
	for code, want := range map[uint32]string{0: "closed", dmsg.ErrLostLink: "lostlink", dmsg.ErrCantCirc: "cantcirc",
		dmsg.ErrIO: "io", 0x7: "other", 0xdeadbeef: "other"} {
		if got := ErrorReason(code); got != want {
			t.Errorf("ErrorReason(%#x) = %q, want %q", code, got, want)
		}
	}
}
