package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"
)

// listenMetrics binds metrics.listen, when set, serving /metrics in the
// Prometheus text format and /healthz. It is written by hand: a few gauges
// and counters do not justify a client library.
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
	mux.HandleFunc("/metrics", r.serveMetrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
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

// MetricsAddr returns the bound metrics address, nil when metrics are off.
func (r *Router) MetricsAddr() net.Addr { return r.metricsAddr }

func (r *Router) stopMetrics() {
	if r.metricsSrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r.metricsSrv.Shutdown(ctx)
}

// serveMetrics writes the router's gauges and its links' counters.
func (r *Router) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	st := r.engine.Stats()
	r.mu.Lock()
	links := r.linkList()
	r.mu.Unlock()
	slices.SortFunc(links, func(a, b *link) int { return compareLinkIDs(a.id, b.id) })
	gauge(w, "dmsgd_links", "Open links.", len(links))
	gauge(w, "dmsgd_span_clusters", "Clusters held.", st.Clusters)
	gauge(w, "dmsgd_span_nodes", "Nodes held.", st.Nodes)
	gauge(w, "dmsgd_span_links", "Advertisements held, our own included.", st.Links)
	gauge(w, "dmsgd_span_relays", "Advertisements relayed.", st.Relays)
	gauge(w, "dmsgd_span_nodes_waiting", "Nodes whose relays wait for room in limits.max_relays.", st.Starved)
	gauge(w, "dmsgd_circuits", "Circuits relayed.", r.circuits.Len())
	gauge(w, "dmsgd_circuits_held", "Circuits held against limits.max_circuits, those ending here included.", r.circuits.Held())
	counters := []struct {
		name, help string
		value      func(l *link) uint64
	}{
		{"dmsgd_link_rx_messages_total", "Messages received on a link.", func(l *link) uint64 { return l.conn.Stats().RxMsgs }},
		{"dmsgd_link_tx_messages_total", "Messages sent on a link.", func(l *link) uint64 { return l.conn.Stats().TxMsgs }},
		{"dmsgd_link_rx_bytes_total", "Bytes received on a link.", func(l *link) uint64 { return l.conn.Stats().RxBytes }},
		{"dmsgd_link_tx_bytes_total", "Bytes sent on a link.", func(l *link) uint64 { return l.conn.Stats().TxBytes }},
	}
	for _, c := range counters {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
		for _, l := range links {
			fmt.Fprintf(w, "%s{link=%q,remote=%q} %d\n", c.name, l.id, l.conn.RemoteAddr(), c.value(l))
		}
	}
	writeCounters(w, r.metrics)
}

func gauge(w io.Writer, name, help string, v int) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
}
