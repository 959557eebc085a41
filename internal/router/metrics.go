package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/metrics"
)

// listenMetrics binds metrics.listen, when set, serving /metrics in the
// Prometheus text format, /healthz (alive) and /readyz (ready for
// traffic); the probes answer 200 or 503 with a one-line reason.
func (r *Router) listenMetrics() error {
	addr := r.Config().Metrics.Listen
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.metrics.Registry(), promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(r.log),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", probeHandler(r.Health))
	mux.HandleFunc("/readyz", probeHandler(r.Ready))
	r.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	r.metricsAddr = l.Addr()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.metricsSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics endpoint stopped", zap.Error(err))
		}
	}()
	r.log.Info("serving metrics", zap.String("addr", l.Addr().String()))
	return nil
}

// probeHandler answers a health or readiness check: 200 when it passes,
// 503 when not, with its one-line reason as the body either way.
func probeHandler(check func() (bool, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		ok, why := check()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, why+"\n")
	}
}

// MetricsAddr returns the bound metrics address, nil when metrics are off.
func (r *Router) MetricsAddr() net.Addr { return r.metricsAddr }

// Metrics returns the router's metrics, for the daemon to add its build
// information and reload results to.
func (r *Router) Metrics() *metrics.Metrics { return r.metrics }

// stopMetrics closes the metrics endpoint, letting a scrape in flight
// finish within a second and within ctx.
func (r *Router) stopMetrics(ctx context.Context) {
	if r.metricsSrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if r.metricsSrv.Shutdown(ctx) != nil {
		r.metricsSrv.Close()
	}
}
