package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Socket activation: the listeners systemd passes (dmsgd.socket) are
// judged by the same transport rule as configured ones. An inherited
// socket whose address a listen entry names is served as that entry says
// (a tls:// entry with TLS) and the entry is not bound again; an inherited
// socket the configuration does not name is plain, allowed off loopback
// only with tls.insecure_plain_tcp. The shell socket may be inherited too.

// inherited is how one passed listener is served: as the listen entry it
// matched (entry >= 0), as the shell socket, or as itself.
type inherited struct {
	*listener
	entry int // index in config.Listen, -1 when none matched
}

// adoptInherited decides how each inherited listener is served. It
// refuses, naming the socket and the way out, a plain TCP socket off
// loopback that neither a listen entry nor tls.insecure_plain_tcp
// allows, and a passed descriptor that is not a stream listener.
func (r *Router) adoptInherited(cfg *config.Config, passed []net.Listener) ([]inherited, error) {
	var out []inherited
	taken := make(map[int]bool)
	for i, nl := range passed {
		if nl == nil {
			return out, fmt.Errorf("socket activation: passed socket #%d is not a stream listener (ListenStream=)", i+1)
		}
		addr := nl.Addr().Network() + "://" + nl.Addr().String()
		in := inherited{listener: &listener{Listener: nl, addr: addr}, entry: -1}
		switch a := nl.Addr().(type) {
		case *net.UnixAddr:
			in.entry = matchUnix(cfg, a.Name)
			in.shell = in.entry < 0 && cfg.Shell.Socket != "" && samePath(cfg.Shell.Socket, a.Name)
		case *net.TCPAddr:
			in.entry = matchTCP(cfg, a)
			if err := r.serveInheritedTCP(cfg, &in, a); err != nil {
				return out, err
			}
		default:
			return out, fmt.Errorf("socket activation: passed socket %s is neither TCP nor a unix socket", addr)
		}
		if in.entry >= 0 {
			if taken[in.entry] {
				return out, fmt.Errorf("socket activation: two passed sockets match listen[%d] %s", in.entry, cfg.Listen[in.entry])
			}
			taken[in.entry] = true
			in.addr = cfg.Listen[in.entry]
		}
		out = append(out, in)
	}
	return out, nil
}

// serveInheritedTCP wraps an inherited TCP socket as its listen entry
// says, or applies the plain-TCP rule to one no entry names.
func (r *Router) serveInheritedTCP(cfg *config.Config, in *inherited, a *net.TCPAddr) error {
	if in.entry >= 0 {
		if cfg.Listeners[in.entry].Network != config.NetworkTLS {
			return nil // a tcp:// entry: config validation applied the rule
		}
		tc, err := tlsConfig(cfg.TLS, r.pins)
		if err != nil {
			return fmt.Errorf("socket activation: %s for listen[%d] %s: %w", in.addr, in.entry, cfg.Listen[in.entry], err)
		}
		in.Listener = tls.NewListener(in.Listener, tc)
		return nil
	}
	switch {
	case a.IP.IsLoopback():
		return nil
	case !cfg.TLS.InsecurePlainTCP:
		return fmt.Errorf("socket activation: passed socket %s is plain TCP off loopback: name it in listen as "+
			"tls://%s to serve it with TLS, pass a loopback address (ListenStream=127.0.0.1:PORT), "+
			"or set tls.insecure_plain_tcp: true", in.addr, a)
	}
	r.log.Warn("socket activation: serving plain TCP off loopback (tls.insecure_plain_tcp)", zap.String("addr", in.addr))
	return nil
}

// matchTCP returns the index of the tcp:// or tls:// entry naming the
// address a TCP socket is bound to, -1 if none: the same port, and the
// same IP, or both unspecified (0.0.0.0 and [::] both mean every
// address: systemd's ListenStream=987 binds [::]), or a host name that
// resolves to that IP.
func matchTCP(cfg *config.Config, a *net.TCPAddr) int {
	bound, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return -1
	}
	bound = bound.Unmap()
	for i, l := range cfg.Listeners {
		if l.Network != config.NetworkTCP && l.Network != config.NetworkTLS {
			continue
		}
		host, port, err := net.SplitHostPort(l.Address)
		if err != nil || port != fmt.Sprint(a.Port) {
			continue
		}
		if hostMatches(host, bound) {
			return i
		}
	}
	return -1
}

// hostMatches reports whether a listen entry's host names the address a
// socket is bound to.
func hostMatches(host string, bound netip.Addr) bool {
	if host == "" {
		return bound.IsUnspecified()
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return ip == bound || ip.IsUnspecified() && bound.IsUnspecified()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.Unmap() == bound {
			return true
		}
	}
	return false
}

// matchUnix returns the index of the unix:// entry naming path, -1 if
// none.
func matchUnix(cfg *config.Config, path string) int {
	for i, l := range cfg.Listeners {
		if l.Network == config.NetworkUnix && samePath(l.Address, path) {
			return i
		}
	}
	return -1
}

// samePath reports whether two socket paths name the same file.
func samePath(a, b string) bool {
	abs := func(p string) string {
		if q, err := filepath.Abs(p); err == nil {
			return q
		}
		return filepath.Clean(p)
	}
	return abs(a) == abs(b)
}
