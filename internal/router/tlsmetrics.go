package router

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
)

// Reasons of dmsgd_tls_handshake_failures_total.
const (
	tlsUntrustedKey  = "untrusted_key"   // the peer's key is not in tls.peers
	tlsRefusedByPeer = "refused_by_peer" // the peer sent an alert: it does not trust us, or no common ground
	tlsTimeout       = "timeout"
	tlsOther         = "other"
)

// countTLSFailure counts a failed TLS handshake in direction. Dial errors
// that happened before any TLS (connection refused, unreachable) are not
// TLS failures and are not counted.
func (r *Router) countTLSFailure(direction string, err error) {
	if reason, ok := tlsFailureReason(err); ok {
		r.metrics.TLSHandshakeFailed(direction, reason)
	}
}

func tlsFailureReason(err error) (string, bool) {
	var op *net.OpError
	if errors.As(err, &op) {
		switch op.Op {
		case "dial":
			return "", false
		case "remote error":
			return tlsRefusedByPeer, true
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return tlsTimeout, true
	case strings.Contains(err.Error(), "is not in tls.peers"):
		return tlsUntrustedKey, true
	}
	return tlsOther, true
}
