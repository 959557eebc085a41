// Package metrics owns dmsgd's Prometheus metrics: the counters the
// router's packages bump as events happen (limits hit, protocol errors,
// reloads, TLS refusals, circuits and spans refused or ended), the Go
// runtime and process collectors, dmsgd_build_info, and the registry
// /metrics serves. What the router holds at a given moment (links and
// their traffic, spans, outbound targets) is read at scrape time by a
// collector the router registers here.
//
// It is a package of its own because iocom, span, circ and router all
// count events and none of them may import another for it. A nil
// *Metrics is valid and counts nothing, so tests and tools that do not
// scrape need not build one.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is one router's set of metrics.
type Metrics struct {
	reg        *prometheus.Registry
	limits     *prometheus.CounterVec
	violations *prometheus.CounterVec
	pauses     *prometheus.CounterVec
	op         ops
	trust      *prometheus.CounterVec // trust.go
}

// New returns a router's metrics, registered in a registry of their own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_limit_refusals_total",
			Help: "Things refused, or links closed, because a limit was reached, by limit (the config key under limits:).",
		}, []string{"limit"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_protocol_errors_total",
			Help: "Protocol violations and framing errors seen from peers, by kind.",
		}, []string{"kind"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmsgd_link_reader_pauses_total",
			Help: "Times a link's reader stopped reading its peer because the peer reached a budget, by limit (the config key under limits:).",
		}, []string{"limit"}),
	}
	m.reg.MustRegister(m.limits, m.violations, m.pauses)
	m.op = newOps()
	m.op.register(m.reg)
	m.trust = newTrust(m.reg)
	return m
}

// Registry returns the registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// LimitHit counts one refusal because limit (such as "max_links") was
// reached.
func (m *Metrics) LimitHit(limit string) {
	if m != nil {
		m.limits.WithLabelValues(limit).Inc()
	}
}

// ProtocolError counts one protocol violation or framing error of kind.
// The router counts each link it closes for one (kind "framing" or
// "transaction", from the link's error), so code that closes a link for a
// violation must not count it again.
func (m *Metrics) ProtocolError(kind string) {
	if m != nil {
		m.violations.WithLabelValues(kind).Inc()
	}
}

// ReaderPaused counts one pause of a link's reader because its peer
// reached limit (such as "queue_bytes_per_link"): the peer is slowed, not
// refused.
func (m *Metrics) ReaderPaused(limit string) {
	if m != nil {
		m.pauses.WithLabelValues(limit).Inc()
	}
}
