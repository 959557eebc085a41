package metrics

import (
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Reload results, the values of dmsgd_config_reloads_total's result label.
const (
	ReloadApplied   = "applied"   // a changed configuration is in force
	ReloadUnchanged = "unchanged" // the file said what was already running
	ReloadRefused   = "refused"   // a change needs a restart; nothing changed
	ReloadInvalid   = "invalid"   // the file did not load or validate
)

// ops are the operator-facing counters of events that happen once and are
// gone: reloads, TLS refusals, circuits set up and torn down, spans
// refused. What the router holds at a given moment (links, spans, targets)
// is read by the router's own collector at scrape time instead.
type ops struct {
	build          *prometheus.GaugeVec
	reloads        *prometheus.CounterVec
	reloadOK       prometheus.Gauge
	reloadOKTime   prometheus.Gauge
	tlsFailures    *prometheus.CounterVec
	circRelayed    prometheus.Counter
	circClosed     *prometheus.CounterVec
	circRefused    *prometheus.CounterVec
	spansRefused   *prometheus.CounterVec
	shellCommands  *prometheus.CounterVec
	peerSeriesFull prometheus.Counter
}

func newOps() ops {
	return ops{
		build: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmsgd_build_info",
			Help: "Always 1; the labels say which dmsgd is running.",
		}, []string{"version", "commit", "goversion"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: applied, unchanged, refused (a key needs a restart) or invalid (the file did not load).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dmsgd_config_last_reload_successful",
			Help: "1 if the last reload attempt (or the start) left the file's configuration in force, 0 if it was refused or invalid.",
		}),
		reloadOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dmsgd_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (start or last successful reload), in Unix seconds.",
		}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by direction (inbound, outbound) and reason (untrusted_key: not in tls.peers; refused_by_peer; timeout; other).",
		}, []string{"direction", "reason"}),
		circRelayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmsgd_circuits_relayed_total",
			Help: "Circuits this router set up as a relay (the next hop was asked).",
		}),
		circClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_circuits_closed_total",
			Help: "Relayed circuits that ended, by reason: closed (both ends closed it) or the error it was aborted with (lostlink, cantcirc, io, ...).",
		}, []string{"reason"}),
		circRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_circuits_refused_total",
			Help: "LNK_CIRCs answered CANTCIRC by this router, by reason: no_span, libdmsg_next_hop (the next hop has no LNK_CIRC), next_hop_down (limits are dmsgd_limit_refusals_total).",
		}, []string{"reason"}),
		spansRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_spans_refused_total",
			Help: "LNK_SPANs refused, by reason: own_node (our own advertisement came back), limit, duplicate, other.",
		}, []string{"reason"}),
		shellCommands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_shell_commands_total",
			Help: "Shell command lines run, by where they came from: socket (the shell socket), link (a TCP or unix peer), circuit (@node from another router).",
		}, []string{"via"}),
		peerSeriesFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmsgd_peer_series_overflow_total",
			Help: "Links counted under peer=\"_other\" because too many distinct peer identities have been seen.",
		}),
	}
}

// register adds the operational metrics and the Go runtime and process
// collectors to reg.
func (o *ops) register(reg *prometheus.Registry) {
	reg.MustRegister(o.build, o.reloads, o.reloadOK, o.reloadOKTime, o.tlsFailures,
		o.circRelayed, o.circClosed, o.circRefused, o.spansRefused, o.shellCommands, o.peerSeriesFull,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	o.build.WithLabelValues("unknown", "unknown", runtime.Version()).Set(1)
	o.reloadOK.Set(1)
	o.reloadOKTime.Set(float64(time.Now().UnixNano()) / 1e9)
}

// SetBuildInfo sets dmsgd_build_info's labels.
func (m *Metrics) SetBuildInfo(version, commit string) {
	if m == nil {
		return
	}
	m.op.build.Reset()
	m.op.build.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// ConfigReload counts one reload attempt with result (ReloadApplied,
// ReloadUnchanged, ReloadRefused or ReloadInvalid).
func (m *Metrics) ConfigReload(result string) {
	if m == nil {
		return
	}
	m.op.reloads.WithLabelValues(result).Inc()
	switch result {
	case ReloadApplied, ReloadUnchanged:
		m.op.reloadOK.Set(1)
		m.op.reloadOKTime.Set(float64(time.Now().UnixNano()) / 1e9)
	default:
		m.op.reloadOK.Set(0)
	}
}

// TLSHandshakeFailed counts one failed TLS handshake.
func (m *Metrics) TLSHandshakeFailed(direction, reason string) {
	if m != nil {
		m.op.tlsFailures.WithLabelValues(direction, reason).Inc()
	}
}

// CircuitRelayed counts one circuit set up through this router.
func (m *Metrics) CircuitRelayed() {
	if m != nil {
		m.op.circRelayed.Inc()
	}
}

// CircuitClosed counts one relayed circuit ending: reason is "closed" for
// an orderly close, else the name of the error it was aborted with.
func (m *Metrics) CircuitClosed(reason string) {
	if m != nil {
		m.op.circClosed.WithLabelValues(reason).Inc()
	}
}

// CircuitRefused counts one LNK_CIRC answered CANTCIRC here.
func (m *Metrics) CircuitRefused(reason string) {
	if m != nil {
		m.op.circRefused.WithLabelValues(reason).Inc()
	}
}

// SpanRefused counts one LNK_SPAN refused.
func (m *Metrics) SpanRefused(reason string) {
	if m != nil {
		m.op.spansRefused.WithLabelValues(reason).Inc()
	}
}

// ShellCommand counts one shell command line run, by where it came from.
func (m *Metrics) ShellCommand(via string) {
	if m != nil {
		m.op.shellCommands.WithLabelValues(via).Inc()
	}
}

// PeerSeriesOverflow counts one link whose peer identity was folded into
// peer="_other".
func (m *Metrics) PeerSeriesOverflow() {
	if m != nil {
		m.op.peerSeriesFull.Inc()
	}
}

// ErrorReason names a DMSG error code for a reason label: the lower-case
// name of docs/PROTOCOL.md section 8 (lostlink, cantcirc, ...), "closed" for 0
// and "other" for any other code, so that a peer cannot mint series.
func ErrorReason(code uint32) string {
	if code == 0 {
		return "closed"
	}
	s := dmsg.ErrorString(code)
	if strings.HasPrefix(s, "error") {
		return "other"
	}
	return strings.ToLower(s)
}
