package router

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// tlsConfig builds the TLS 1.3 configuration of every tls:// listener and
// span+tls: target: our certificate, and peers authenticated by pinning
// their Ed25519 public keys (docs/PROTOCOL.md section 9). No CA is involved:
// keygen's certificates are self-signed and the pins are the trust. pins
// is asked at every handshake, so a reloaded tls.peers applies to the
// listeners already bound.
func tlsConfig(c config.TLS, pins func() []config.Peer) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("peer sent no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		pub, ok := leaf.PublicKey.(ed25519.PublicKey)
		if !ok {
			return errors.New("peer certificate: not an Ed25519 key")
		}
		for _, p := range pins() {
			if bytes.Equal(p.Key, pub) {
				return nil
			}
		}
		return fmt.Errorf("peer key %s is not in tls.peers", config.FormatPubKey(pub))
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // the pin check below replaces chain verification
		VerifyPeerCertificate: verify,
	}, nil
}

// pins returns the keys pinned now.
func (r *Router) pins() []config.Peer { return r.Config().TLS.Peers }

// peerKey returns the key a finished handshake authenticated.
func peerKey(cs tls.ConnectionState) ed25519.PublicKey {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	pub, _ := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	return pub
}

// peerName returns the tls.peers name of the key a finished handshake
// authenticated.
func peerName(c config.TLS, cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	pub, _ := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	for _, p := range c.Peers {
		if bytes.Equal(p.Key, pub) {
			return p.Name
		}
	}
	return ""
}

// listenTLS binds a tls:// listener.
func (r *Router) listenTLS(pl config.Listener, tc *tls.Config) (net.Listener, error) {
	l, err := iocom.Listen("tcp", pl.Address)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(l, tc), nil
}

// handshake finishes an accepted TLS connection off the accept loop by
// deadline (limits.handshake_timeout), so a peer that connects and says
// nothing cannot hold a goroutine or a pending slot. It ends with the
// router (r.ctx), so a shutdown abandons it. A failure drops the
// connection with a rate-limited line: peers can repeat it at will.
func (r *Router) handshake(nc *tls.Conn, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	defer cancel()
	err := nc.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	if r.ctx.Err() != nil {
		nc.Close() // shutting down: not the peer's failure
		return err
	}
	r.countTLSFailure(dirInbound, err)
	if errors.Is(err, context.DeadlineExceeded) {
		r.metrics.LimitHit("handshake_timeout")
	}
	r.events.Warn("tls_handshake", "TLS handshake failed; connection dropped",
		zap.String("peer", nc.RemoteAddr().String()), zap.Error(err))
	nc.Close()
	return err
}

// dialTLS opens a span+tls: connection and completes its handshake
// within limits.handshake_timeout, as an accepted one must: a target that
// takes the connection and never answers (a wedged peer, a tarpit) must
// not hold its keeper, which redials it with backoff instead.
func (r *Router) dialTLS(ctx context.Context, t config.Target) (net.Conn, error) {
	cfg := r.Config()
	tc, err := tlsConfig(cfg.TLS, r.pins)
	if err != nil {
		return nil, err
	}
	tc.ServerName = t.Host
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.Addr())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", t, err)
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.Limits.HandshakeTimeout)
	defer cancel()
	nc := tls.Client(raw, tc)
	if err := nc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("dial %s: %w", t, err)
	}
	return nc, nil
}
