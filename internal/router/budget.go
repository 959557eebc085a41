package router

import (
	"github.com/dmsgd/dmsgd/internal/circ"
	"github.com/dmsgd/dmsgd/internal/metrics"
)

// Circuits returns the router's circuit relay, which also counts the
// circuits ending here against limits.max_circuits.
func (r *Router) Circuits() *circ.Relay { return r.circuits }

// Metrics returns the router's metrics: every refusal because of a limit
// is counted there.
func (r *Router) Metrics() *metrics.Metrics { return r.metrics }
