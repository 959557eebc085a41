package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the DMSG TCP port used when a span target omits one.
const DefaultPort = 987

// Span path schemes.
const (
	spanScheme    = "span:"
	spanTLSScheme = "span+tls:"
)

// Target is an outbound link target parsed from a span path such as
// "span:10.0.0.2", "span+tls:node-b.example:987" or "span:[::1]:9871".
// Targets are comparable; two with equal TLS, Host and Port are the same
// link.
type Target struct {
	// Name is the media entry (or VOLCONF label) the target came from;
	// empty when it was parsed from a bare path.
	Name string
	// TLS is true for span+tls: targets.
	TLS bool
	// Host is a host name or an IP address, without brackets.
	Host string
	// Port is the TCP port, DefaultPort when the path omitted it.
	Port int
	// ConnForm is the LNK_CONN form to send (media copies' conn_form).
	ConnForm ConnForm
}

// Addr returns the target's dial address, host:port (IPv6 in brackets).
func (t Target) Addr() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

// String returns the target in canonical span path form, with the port
// always present.
func (t Target) String() string {
	if t.TLS {
		return spanTLSScheme + t.Addr()
	}
	return spanScheme + t.Addr()
}

// IsLoopback reports whether the target's host is a loopback address or
// "localhost".
func (t Target) IsLoopback() bool { return isLoopbackHost(t.Host) }

// ParseSpanPath parses a span path: "span:HOST[:PORT]" for plain TCP or
// "span+tls:HOST[:PORT]" for TLS. IPv6 hosts must be bracketed
// ("span:[::1]:987"); the port defaults to DefaultPort. The returned
// Target has an empty Name.
func ParseSpanPath(path string) (Target, error) {
	var t Target
	var rest string
	switch {
	case strings.HasPrefix(path, spanTLSScheme):
		t.TLS = true
		rest = path[len(spanTLSScheme):]
	case strings.HasPrefix(path, spanScheme):
		rest = path[len(spanScheme):]
	default:
		return Target{}, fmt.Errorf("span path %q: must start with %q or %q", path, spanScheme, spanTLSScheme)
	}
	host, port, err := splitHostPort(rest, DefaultPort)
	if err != nil {
		return Target{}, fmt.Errorf("span path %q: %w", path, err)
	}
	if port == 0 {
		return Target{}, fmt.Errorf("span path %q: port must be 1..65535", path)
	}
	t.Host, t.Port = host, port
	return t, nil
}

// splitHostPort splits "HOST", "HOST:PORT", "[IPV6]" or "[IPV6]:PORT",
// returning defPort when the port is omitted. The host is validated.
func splitHostPort(s string, defPort int) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("missing host")
	}
	var host, portStr string
	hasPort := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("missing ']' after IPv6 address")
		}
		host = s[1:end]
		after := s[end+1:]
		switch {
		case after == "":
		case strings.HasPrefix(after, ":"):
			portStr, hasPort = after[1:], true
		default:
			return "", 0, fmt.Errorf("unexpected %q after ']'", after)
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() {
			return "", 0, fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
			host = s
		case 1:
			i := strings.IndexByte(s, ':')
			host, portStr, hasPort = s[:i], s[i+1:], true
		default:
			return "", 0, errors.New("IPv6 addresses must be in brackets, as in [::1]:987")
		}
		if err := checkHostName(host); err != nil {
			return "", 0, err
		}
	}
	port := defPort
	if hasPort {
		p, err := parsePort(portStr)
		if err != nil {
			return "", 0, err
		}
		port = p
	}
	return host, port, nil
}

// parsePort parses a decimal port number 0..65535.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("missing port after ':'")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a number", s)
		}
	}
	p, err := strconv.Atoi(s)
	if err != nil || p > 65535 {
		return 0, fmt.Errorf("port %q is out of range 0..65535", s)
	}
	return p, nil
}

// checkHostName accepts an IPv4 address or a DNS host name.
func checkHostName(h string) error {
	if h == "" {
		return errors.New("missing host")
	}
	if len(h) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for _, c := range h {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_'
		if !ok {
			return fmt.Errorf("host %q contains %q", h, c)
		}
	}
	return nil
}

// isLoopbackHost reports whether h is "localhost" or a loopback IP.
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(h)
	return err == nil && addr.Unmap().IsLoopback()
}

// Listener networks.
const (
	NetworkTCP  = "tcp"
	NetworkTLS  = "tls"
	NetworkUnix = "unix"
)

// Listener is a parsed listen URL.
type Listener struct {
	// Network is NetworkTCP (plain), NetworkTLS or NetworkUnix.
	Network string
	// Address is host:port for tcp and tls (host may be empty for all
	// addresses, port 0 picks a free port) and the socket path for unix.
	// Relative unix paths are relative to the working directory.
	Address string
}

// String returns the listener in URL form.
func (l Listener) String() string { return l.Network + "://" + l.Address }

// IsLoopback reports whether a tcp or tls listener binds only a loopback
// address. Unix listeners are not network listeners and report false.
func (l Listener) IsLoopback() bool {
	if l.Network == NetworkUnix {
		return false
	}
	host, _, err := net.SplitHostPort(l.Address)
	return err == nil && isLoopbackHost(host)
}

// ParseListen parses "tcp://HOST:PORT", "tls://HOST:PORT" or
// "unix://PATH" (so "unix:///run/x.sock" is absolute and
// "unix://./run/x.sock" relative to the working directory).
func ParseListen(s string) (Listener, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Listener{}, fmt.Errorf("listen address %q: must be tcp://HOST:PORT, tls://HOST:PORT or unix:///PATH", s)
	}
	switch scheme {
	case NetworkUnix:
		if rest == "" {
			return Listener{}, fmt.Errorf("listen address %q: missing socket path", s)
		}
		if strings.ContainsRune(rest, 0) {
			return Listener{}, fmt.Errorf("listen address %q: socket path contains NUL", s)
		}
		return Listener{Network: NetworkUnix, Address: rest}, nil
	case NetworkTCP, NetworkTLS:
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return Listener{}, fmt.Errorf("listen address %q: must be %s://HOST:PORT", s, scheme)
		}
		if host != "" && !strings.Contains(host, ":") {
			if err := checkHostName(host); err != nil {
				return Listener{}, fmt.Errorf("listen address %q: %w", s, err)
			}
		} else if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				return Listener{}, fmt.Errorf("listen address %q: %q is not an IPv6 address", s, host)
			}
		}
		if _, err := parsePort(port); err != nil {
			return Listener{}, fmt.Errorf("listen address %q: %w", s, err)
		}
		return Listener{Network: scheme, Address: rest}, nil
	default:
		return Listener{}, fmt.Errorf("listen address %q: unknown scheme %q (want tcp, tls or unix)", s, scheme)
	}
}
