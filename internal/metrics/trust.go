package metrics

import "github.com/prometheus/client_golang/prometheus"

// Kinds of TrustRefused.
const (
	TrustShellCommand  = "shell_command"  // a shell command its carrier may not run
	TrustSpanClaim     = "span_claim"     // a dist-0 advertisement its sender may not make
	TrustSpanSignature = "span_signature" // an advertisement whose signature does not verify
	TrustKeyRemoved    = "key_removed"    // a link closed because a reload unpinned its key
	TrustVolconf       = "volconf"        // a LNK_VOLCONF from a link volconf.from does not admit
)

func newTrust(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dmsgd_trust_refusals_total",
		Help: "What a peer was refused because it may not do it: shell commands, identity claims, " +
			"forged advertisements, LNK_VOLCONF, and links closed when their key was unpinned; by kind.",
	}, []string{"kind"})
	reg.MustRegister(c)
	return c
}

// TrustRefused counts one refusal of kind (a Trust* constant).
func (m *Metrics) TrustRefused(kind string) {
	if m != nil {
		m.trust.WithLabelValues(kind).Inc()
	}
}
