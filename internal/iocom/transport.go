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
	"sync"
)

// ParseAddr splits a link address, "tcp://host:port" or "unix:///path"
// (a relative path such as "unix://./run/x.sock" is relative to the working
// directory), into the network and address Dial and Listen take.
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

// Listen listens on network ("tcp" or "unix") at address, as net.Listen
// does. A unix socket's directory is created if missing, a stale socket
// file left by a dead daemon is replaced, and the socket is
// group-accessible (0660) from the moment it can be reached at its path
// (listenUnix).
func Listen(network, address string) (net.Listener, error) {
	if network == "unix" {
		return listenUnix(address)
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("listen %s://%s: %w", network, address, err)
	}
	return l, nil
}

// maxSocketPath is the longest unix socket path bind(2) takes: sun_path
// holds 108 bytes with the terminating NUL.
const maxSocketPath = 107

// unixBound, when set (tests), is called once the socket can be reached at
// its path, before listenUnix returns.
var unixBound func(path string)

// listenUnix binds a unix socket that nobody can connect to before it has
// its final mode: bind(2) creates the socket file with the process's umask
// (under umask 0, world-writable), so a socket bound at its path and then
// chmod-ed would let any local user connect in between and keep a link
// with the rights of the socket (the shell socket runs every command).
// The socket is therefore bound in a fresh directory of the same
// filesystem that only this user can enter, given mode 0660 there, and
// only then linked to its path; link(2) refuses to replace a path that
// appeared meanwhile. The umask is left alone: it is process-wide.
func listenUnix(path string) (net.Listener, error) {
	fail := func(err error) (net.Listener, error) {
		return nil, fmt.Errorf("listen unix://%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	private, err := os.MkdirTemp(dir, ".") // mode 0700
	if err != nil {
		return fail(fmt.Errorf("private directory to bind in: %w", err))
	}
	defer os.RemoveAll(private) // the socket's temporary name, once linked or on failure
	tmp := filepath.Join(private, "s")
	if len(tmp) > maxSocketPath {
		return fail(fmt.Errorf("path too long: the socket is bound as %s first, %d bytes, more than the %d a socket path may have",
			tmp, len(tmp), maxSocketPath))
	}
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return fail(err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // its name changes; Close removes the path instead
	if err := os.Chmod(tmp, 0o660); err != nil {
		l.Close()
		return fail(err)
	}
	if err := os.Link(tmp, path); err != nil {
		l.Close()
		if errors.Is(err, fs.ErrExist) {
			return fail(errors.New("another process bound this path meanwhile"))
		}
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return fail(err)
	}
	if unixBound != nil {
		unixBound(path)
	}
	return &unixListener{UnixListener: ul, path: path, file: fi}, nil
}

// unixListener is a unix socket bound under a temporary name and linked
// to path: it reports path as its address and removes it on Close, unless
// another socket has replaced it there since.
type unixListener struct {
	*net.UnixListener
	path string
	file fs.FileInfo

	closeOnce sync.Once
}

// Addr returns the socket's path, not the name it was bound under.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.closeOnce.Do(func() {
		if fi, lerr := os.Lstat(l.path); lerr == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return err
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

// Dial connects to network ("tcp" or "unix") at address, as net.Dial
// does, until ctx ends.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s://%s: %w", network, address, err)
	}
	return nc, nil
}
