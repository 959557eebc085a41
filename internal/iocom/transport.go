package iocom

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// ParseAddr splits a link address, "tcp://host:port" or "unix:///path"
// (a relative path such as "unix://./run/x.sock" is relative to the working
// directory), into the network and address net.Dial and net.Listen take.
func ParseAddr(addr string) (network, address string, err error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return "", "", fmt.Errorf("address %q: want tcp://host:port or unix:///path", addr)
	}
	switch scheme {
	case "tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("address %q: %w", addr, err)
		}
		return "tcp", rest, nil
	case "unix":
		if rest == "" {
			return "", "", fmt.Errorf("address %q: empty socket path", addr)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("address %q: unsupported scheme %q", addr, scheme)
}

// Listen listens on a link address. A unix socket's directory is created
// if missing, a stale socket file left by a dead daemon is replaced, and
// the socket is made group-accessible (0660).
func Listen(addr string) (net.Listener, error) {
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		return listenUnix(address)
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen unix://%s: %w", path, err)
	}
	return l, nil
}

// removeStaleSocket removes a socket file nobody answers on, and refuses to
// take over one that is alive or a path that is not a socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen unix://%s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("listen unix://%s: path exists and is not a socket", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("listen unix://%s: another process is serving this socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("listen unix://%s: remove stale socket: %w", path, err)
	}
	return nil
}

// Dial connects to a link address.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return nc, nil
}
