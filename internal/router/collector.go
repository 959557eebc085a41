package router

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics read from the router's state at scrape time. Links are
// labelled by who is at the other end (peerIdent), never by link id, and
// their counters add the links still open to the totals of those that
// closed, so a reconnect continues a series instead of starting one.
var (
	identLabels  = []string{"peer", "peer_type", "direction"}
	targetLabels = []string{"target", "media"}

	descLinks = prometheus.NewDesc("dmsgd_links",
		"Open links, by the peer type their LNK_CONN announced (unknown until it arrives) and direction.",
		[]string{"peer_type", "direction"}, nil)
	descRxMsgs = prometheus.NewDesc("dmsgd_link_rx_messages_total",
		"Messages received from a peer, over every link it had.", identLabels, nil)
	descTxMsgs = prometheus.NewDesc("dmsgd_link_tx_messages_total",
		"Messages sent to a peer, over every link it had.", identLabels, nil)
	descRxBytes = prometheus.NewDesc("dmsgd_link_rx_bytes_total",
		"Bytes received from a peer, over every link it had.", identLabels, nil)
	descTxBytes = prometheus.NewDesc("dmsgd_link_tx_bytes_total",
		"Bytes sent to a peer, over every link it had.", identLabels, nil)
	descUps = prometheus.NewDesc("dmsgd_link_ups_total",
		"Links that came up (the peer's LNK_CONN arrived), by peer.", identLabels, nil)
	descDowns = prometheus.NewDesc("dmsgd_link_downs_total",
		"Links that went down, by peer and reason: peer_closed, keepalive_timeout, protocol_error, "+
			"framing_error, io_error, shutdown, target_removed, self_link, internal_error, slow_consumer, "+
			"over_budget, conn_timeout, limit.",
		append(append([]string(nil), identLabels...), "reason"), nil)

	descClusters = prometheus.NewDesc("dmsgd_span_clusters", "Clusters held.", nil, nil)
	descNodes    = prometheus.NewDesc("dmsgd_span_nodes", "Nodes held.", nil, nil)
	descSpans    = prometheus.NewDesc("dmsgd_span_links", "Advertisements held, our own included.", nil, nil)
	descRelays   = prometheus.NewDesc("dmsgd_span_relays", "Advertisements relayed (LNK_SPANs we hold open).", nil, nil)
	descConns    = prometheus.NewDesc("dmsgd_span_conns", "Links with an open LNK_CONN from the peer.", nil, nil)
	descCircuits = prometheus.NewDesc("dmsgd_circuits", "Circuits relayed now.", nil, nil)
	descWaiting  = prometheus.NewDesc("dmsgd_span_nodes_waiting", "Nodes whose relays wait for room in limits.max_relays.", nil, nil)
	descHeld     = prometheus.NewDesc("dmsgd_circuits_held",
		"Circuits held against limits.max_circuits, those ending here included.", nil, nil)
	descListen = prometheus.NewDesc("dmsgd_listeners", "Listening sockets bound, the shell socket included.", nil, nil)

	descTargetUp = prometheus.NewDesc("dmsgd_target_up",
		"1 while an outbound target's link is up (the peer's LNK_CONN arrived), else 0.", targetLabels, nil)
	descTargetDials = prometheus.NewDesc("dmsgd_target_dials_total",
		"Connection attempts to an outbound target since it was configured.", targetLabels, nil)
	descTargetFails = prometheus.NewDesc("dmsgd_target_dial_failures_total",
		"Connection attempts to an outbound target that failed.", targetLabels, nil)
	descTargetBackoff = prometheus.NewDesc("dmsgd_target_backoff_seconds",
		"Seconds until the next attempt of an outbound target waiting out its backoff; 0 while up or dialling.",
		targetLabels, nil)
)

// collector is the router's prometheus.Collector.
type collector struct{ r *Router }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinks, descRxMsgs, descTxMsgs, descRxBytes, descTxBytes,
		descUps, descDowns, descClusters, descNodes, descSpans, descRelays, descConns, descCircuits,
		descWaiting, descHeld, descListen, descTargetUp, descTargetDials, descTargetFails, descTargetBackoff} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	st := r.engine.Stats()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(descClusters, st.Clusters)
	gauge(descNodes, st.Nodes)
	gauge(descSpans, st.Links)
	gauge(descRelays, st.Relays)
	gauge(descConns, st.Conns)
	gauge(descCircuits, r.circuits.Len())
	gauge(descWaiting, st.Starved)
	gauge(descHeld, r.circuits.Held())

	// One critical section: a link that closes moves its traffic into the
	// book under the same lock, so it is counted once, open or closed.
	r.mu.Lock()
	links := r.linkList()
	book := r.peers.clone()
	listeners := len(r.listeners)
	r.mu.Unlock()
	gauge(descListen, listeners)
	c.collectLinks(ch, links, book)
	c.collectTargets(ch, links)
}

func (c collector) collectLinks(ch chan<- prometheus.Metric, links []*link, book map[peerIdent]peerTotals) {
	open := make(map[[2]string]int)
	for _, l := range links {
		id, known := l.identity()
		open[[2]string{id.peerType, id.direction}]++
		if !known {
			continue // its traffic is counted under "unknown" once it closes
		}
		t, ok := book[id]
		if !ok {
			t = peerTotals{}
		}
		t.add(l.conn.Stats())
		book[id] = t
	}
	for k, n := range open {
		ch <- prometheus.MustNewConstMetric(descLinks, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for id, t := range book {
		labels := []string{id.peer, id.peerType, id.direction}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(labels, extra...)...)
		}
		counter(descRxMsgs, t.rxMsgs)
		counter(descTxMsgs, t.txMsgs)
		counter(descRxBytes, t.rxBytes)
		counter(descTxBytes, t.txBytes)
		counter(descUps, t.ups)
		for reason, n := range t.downs {
			counter(descDowns, n, reason)
		}
	}
}

func (c collector) collectTargets(ch chan<- prometheus.Metric, links []*link) {
	up := targetsUp(links)
	now := time.Now()
	for _, st := range c.r.media.Status() {
		labels := []string{targetKey(st.Target).String(), st.Target.Name}
		isUp := 0.0
		if up[targetKey(st.Target)] {
			isUp = 1
		}
		wait := 0.0
		if !st.NextDial.IsZero() {
			wait = max(st.NextDial.Sub(now).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descTargetUp, prometheus.GaugeValue, isUp, labels...)
		ch <- prometheus.MustNewConstMetric(descTargetDials, prometheus.CounterValue, float64(st.Dials), labels...)
		ch <- prometheus.MustNewConstMetric(descTargetFails, prometheus.CounterValue, float64(st.Failures), labels...)
		ch <- prometheus.MustNewConstMetric(descTargetBackoff, prometheus.GaugeValue, wait, labels...)
	}
}
