package router

import "github.com/dmsgd/dmsgd/internal/metrics"

// MetricsOf returns r's metrics to the black-box tests, which count what
// the router refused.
func MetricsOf(r *Router) *metrics.Metrics { return r.metrics }
