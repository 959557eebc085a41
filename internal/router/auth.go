package router

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// This file holds who may do what through a link: the shell authorization
// rule applied to the link's commands (docs/INTERFACE.md), the identity a
// link's peer may claim for its own advertisements (docs/PROTOCOL.md 11.3), and
// what a reload of tls.peers does to the links already up.

// Kinds of the rate-limited trust events (ratelog kinds are constants).
const (
	eventShellRefused    = "trust.shell_refused"
	eventShellPrivileged = "trust.shell_privileged"
	eventSpanClaim       = "trust.span_claim"
	eventSpanForged      = "trust.span_forged"
)

// linkTrust is what the router knows of a link's peer beyond its LNK_CONN.
type linkTrust struct {
	origin shell.Caller      // the link as a carrier of shell commands
	tlsKey ed25519.PublicKey // the pinned key the peer presented; nil without TLS

	// signed (under link.mu) says signed advertisements are in force on
	// the link: both LNK_CONNs, in the dmsgd form, set SIGNED_SPANS.
	signed bool
	// broken counts the broken signed records the peer sent (sigspan.go).
	broken atomic.Int32
}

// shellOrigin classifies a new link as a carrier of shell commands.
func shellOrigin(nc net.Conn, opts linkOptions) shell.Caller {
	if opts.shellSocket {
		return shell.Caller{Carrier: shell.CarrierShellSocket, Unix: true}
	}
	addr, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return shell.Caller{Carrier: shell.CarrierUnix, Unix: true}
	}
	return shell.Caller{Carrier: shell.CarrierTCP, Loopback: addr.IP.IsLoopback(), Pinned: opts.tlsKey != nil}
}

// fields name the link in trust log lines: id, address and the tls.peers
// name its key matched.
func (l *link) trustFields() []zap.Field {
	return []zap.Field{zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()),
		zap.String("tls_peer", l.opts.tlsPeer)}
}

// authorizer is the shell Authorizer of commands arriving on l, directly
// (carrier is the link's own) or inside a circuit that arrived on l. A
// refusal is logged once per window with the link's identity and counted.
func (l *link) authorizer(carrier shell.Carrier) shell.Authorizer {
	o := l.trust.origin
	if carrier == shell.CarrierCircuit {
		o.Carrier = carrier
	}
	return func(line string, c shell.Class) error {
		err := shell.Authorize(l.r.Config().Shell, o, c)
		if err == nil {
			if c == shell.Privileged && o.Carrier != shell.CarrierShellSocket {
				l.r.events.Info(eventShellPrivileged, "privileged shell command served", append(l.trustFields(),
					zap.String("carrier", o.Carrier.String()), zap.String("command", truncate(line, maxLoggedCommand)))...)
			}
			return nil
		}
		l.r.metrics.TrustRefused(metrics.TrustShellCommand)
		l.r.events.Warn(eventShellRefused, "shell command refused", append(l.trustFields(),
			zap.String("carrier", o.Carrier.String()), zap.String("command", truncate(line, maxLoggedCommand)),
			zap.String("class", c.String()), zap.String("reason", err.Error()))...)
		if carrier == shell.CarrierCircuit {
			return fmt.Errorf("%w (on %s)", err, l.r.label)
		}
		return err
	}
}

// maxLoggedCommand bounds the command text of a log line: a command line
// is peer text of up to 1 MiB.
const maxLoggedCommand = 80

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// errNotItself refuses a dist-0 router advertisement that does not name
// the router that sent it.
var errNotItself = errors.New("a dist-0 router advertisement must name its sender, as its LNK_CONN does")

// checkClaim refuses a dist-0 advertisement its sender may not make. On
// every link a router's own advertisement must name the router its
// LNK_CONN names (a router speaks only for itself; dist 0 means "I am
// it"). On a TLS link the node must also be one the key the peer
// presented speaks for (tls.peers[].nodes).
func (l *link) checkClaim(s *dmsg.Span) error {
	if s.Dist != 0 {
		return nil
	}
	l.mu.Lock()
	peer := l.peer
	l.mu.Unlock()
	if s.PeerType == dmsg.PeerRouter && peer != nil && (s.FsLabel != peer.FsLabel || s.PfsFsid != peer.PfsFsid) {
		return fmt.Errorf("%w (it names %q %s, the LNK_CONN %q %s)", errNotItself, s.FsLabel, s.PfsFsid, peer.FsLabel, peer.PfsFsid)
	}
	if l.trust.tlsKey == nil {
		return nil
	}
	cfg := l.r.Config()
	p := cfg.TLS.PeerByKey(l.trust.tlsKey)
	if p == nil {
		return fmt.Errorf("its key is no longer in tls.peers")
	}
	if !p.EffectiveClaims().Allow(s.FsLabel, s.PfsFsid) {
		return fmt.Errorf("tls.peers entry %q may not speak for node %q %s (see its nodes)", p.Name, s.FsLabel, s.PfsFsid)
	}
	return nil
}

// keyed reports whether some pinned key speaks for the node by name:
// then only that key's signature can verify it. A key allowed every node
// ("*") vouches for what it signs but makes no node keyed.
func keyed(c *config.TLS, label string, id [16]byte) bool {
	for i := range c.Peers {
		if cl := c.Peers[i].EffectiveClaims(); !cl.Any && cl.Allow(label, id) {
			return true
		}
	}
	return false
}

// labelPinned reports whether some pinned key speaks for a node labelled
// label, whatever its id: `@label` must then reach only an advertisement
// that key verified, not another node that merely carries the label.
func labelPinned(c *config.TLS, label string) bool {
	for i := range c.Peers {
		if cl := c.Peers[i].EffectiveClaims(); !cl.Any && slices.Contains(cl.Labels, label) {
			return true
		}
	}
	return false
}

// reloadTrust applies a new tls.peers to the links already up: a link
// whose key is no longer pinned is closed, and so is one whose entry now
// lets it claim other nodes (its advertisements were judged by the old
// one); the others stay. Then every advertisement held is judged anew
// against the new keys.
func (r *Router) reloadTrust(old, newer *config.Config) {
	if reflect.DeepEqual(old.TLS.Peers, newer.TLS.Peers) {
		return
	}
	r.mu.Lock()
	links := r.linkList()
	r.mu.Unlock()
	for _, l := range links {
		key := l.trust.tlsKey
		if key == nil {
			continue
		}
		was, now := old.TLS.PeerByKey(key), newer.TLS.PeerByKey(key)
		switch {
		case now == nil:
			l.conn.Logger().Warn("link closed: its key was removed from tls.peers", l.trustFields()...)
			r.metrics.TrustRefused(metrics.TrustKeyRemoved)
			l.conn.Close()
		case was == nil || !reflect.DeepEqual(was.EffectiveClaims(), now.EffectiveClaims()):
			l.conn.Logger().Warn("link closed: the nodes its tls.peers entry speaks for changed; it is judged anew when it reconnects",
				append(l.trustFields(), zap.String("entry", now.Name))...)
			l.conn.Close()
		}
	}
	r.engine.Reverify(r.rejudge)
}
