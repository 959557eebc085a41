package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// checkTarget applies the transport policy to an outbound target.
func (r *Router) checkTarget(t config.Target) error {
	if t.TLS {
		if c := r.Config().TLS; c.Cert == "" || c.Key == "" {
			return fmt.Errorf("%s: span+tls targets need tls.cert and tls.key", t)
		}
		return nil
	}
	if !t.IsLoopback() && !r.Config().TLS.InsecurePlainTCP {
		return fmt.Errorf("%s: plain TCP off loopback needs tls.insecure_plain_tcp", t)
	}
	return nil
}

// dial opens an outbound link to t.
func (r *Router) dial(ctx context.Context, t config.Target) (*link, error) {
	if err := r.checkTarget(t); err != nil {
		return nil, err
	}
	var nc net.Conn
	var err error
	opts := linkOptions{via: t.String(), outbound: true, target: t}
	if t.TLS {
		nc, err = r.dialTLS(ctx, t)
		if err == nil {
			opts.tlsPeer = peerName(r.Config().TLS, nc.(*tls.Conn).ConnectionState())
			opts.tlsKey = peerKey(nc.(*tls.Conn).ConnectionState())
		} else {
			r.countTLSFailure(dirOutbound, err)
		}
	} else {
		nc, err = iocom.Dial(ctx, "tcp", t.Addr())
	}
	if err != nil {
		return nil, err
	}
	lim := r.Config().Limits
	a, displaced, why := r.admit.admit(&lim, targetClass(t), "", time.Now())
	if why != nil {
		r.refuseConn(nc, t.String(), why)
		return nil, fmt.Errorf("%s: link refused: limits.%s reached", t, why.limit)
	}
	if displaced != nil {
		r.displace(displaced, "")
	}
	opts.adm = a
	l := r.startLink(nc, opts)
	if l == nil {
		return nil, fmt.Errorf("%s: link refused: shutting down", t)
	}
	return l, nil
}

// targetClass is the admission class of an outbound link: the targets of
// the configuration and of the shell's `span` always get in, those a
// peer's VOLCONF asked for count against limits.max_links.
func targetClass(t config.Target) linkClass {
	if isVolconfSource(t.Name) {
		return classNetwork
	}
	return classReserved
}

// connectTarget is volconf's Connect: dial t and tie the link's life to
// ctx.
func (r *Router) connectTarget(ctx context.Context, t config.Target) (<-chan struct{}, error) {
	l, err := r.dial(ctx, t)
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			reason := downTargetRemoved
			if r.closing {
				reason = downShutdown
			}
			r.mu.Unlock()
			l.closeFor(reason)
		case <-l.conn.Done():
		}
	}()
	return l.conn.Done(), nil
}
