package router

import (
	"fmt"
	"io"
	"strings"

	"github.com/dmsgd/dmsgd/internal/circ"
	"github.com/dmsgd/dmsgd/internal/metrics"
)

// Circuits returns the router's circuit relay, which also counts the
// circuits ending here against limits.max_circuits.
func (r *Router) Circuits() *circ.Relay { return r.circuits }

// Metrics returns the router's metrics: every refusal because of a limit
// is counted there.
func (r *Router) Metrics() *metrics.Metrics { return r.metrics }

// writeCounters writes the counters of m (limits hit, protocol errors) in
// the Prometheus text format, after the hand-written gauges of /metrics.
func writeCounters(w io.Writer, m *metrics.Metrics) {
	mfs, err := m.Registry().Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 0 || mf.GetMetric()[0].GetCounter() == nil {
			continue // only counters are registered there
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", mf.GetName(), mf.GetHelp(), mf.GetName())
		for _, c := range mf.GetMetric() {
			labels := make([]string, 0, len(c.GetLabel()))
			for _, l := range c.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Fprintf(w, "%s{%s} %g\n", mf.GetName(), strings.Join(labels, ","), c.GetCounter().GetValue())
		}
	}
}
