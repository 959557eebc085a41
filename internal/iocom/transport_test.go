package iocom_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmsgd/dmsgd/internal/iocom"
)

func TestParseAddr(t *testing.T) {
	cases := []struct {
		addr             string
		network, address string // empty network: an error is expected
	}{
		{"tcp://127.0.0.1:987", "tcp", "127.0.0.1:987"},
		{"tcp://[::1]:987", "tcp", "[::1]:987"},
		{"tcp://localhost:0", "tcp", "localhost:0"},
		{"tcp://:987", "tcp", ":987"},
		{"tcp://127.0.0.1", "", ""},
		{"tcp://", "", ""},
		{"tcp://::1:987", "", ""},
		{"unix:///run/dmsgd/dmsgd.sock", "unix", "/run/dmsgd/dmsgd.sock"},
		{"unix://./run/x.sock", "unix", "./run/x.sock"},
		{"unix://relative.sock", "unix", "relative.sock"},
		{"unix://", "", ""},
		{"udp://127.0.0.1:987", "", ""},
		{"TCP://127.0.0.1:987", "", ""},
		{"127.0.0.1:987", "", ""},
		{"/run/dmsgd.sock", "", ""},
		{"", "", ""},
	}
	for _, tc := range cases {
		name := tc.addr + " is " + tc.network + " " + tc.address
		if tc.network == "" {
			name = tc.addr + " is refused"
		}
		t.Run(name, func(t *testing.T) {
			network, address, err := iocom.ParseAddr(tc.addr)
			if tc.network == "" {
				if err == nil {
					t.Fatalf("ParseAddr(%q) = %q, %q, want an error", tc.addr, network, address)
				}
				if !strings.Contains(err.Error(), tc.addr) {
					t.Errorf("error %q does not name the address %q", err, tc.addr)
				}
				return
			}
			if err != nil || network != tc.network || address != tc.address {
				t.Fatalf("ParseAddr(%q) = %q, %q, %v, want %q, %q", tc.addr, network, address, err, tc.network, tc.address)
			}
		})
	}
}

// checkServes dials addr and checks l accepts the connection.
func checkServes(t *testing.T, l net.Listener, addr string) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err == nil {
			nc.Close()
		}
		accepted <- err
	}()
	nc, err := dialURL(context.Background(), addr)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	nc.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("Accept: %v", err)
	}
}

// staleSocket leaves a socket file at path that nobody listens on, as a
// daemon killed without cleaning up does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Fatalf("no stale socket left at %s: %v", path, err)
	}
}

func TestListenOnAUnixSocket(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, path string) (cleanup func())
		wantErr string // empty: Listen must succeed
	}{
		{"creates the socket, and its missing directory, with mode 0660", func(t *testing.T, path string) func() {
			return func() {}
		}, ""},
		{"replaces a stale socket nobody listens on", func(t *testing.T, path string) func() {
			os.MkdirAll(filepath.Dir(path), 0o750)
			staleSocket(t, path)
			return func() {}
		}, ""},
		{"refuses a socket another listener serves", func(t *testing.T, path string) func() {
			live, err := listenURL("unix://" + path)
			if err != nil {
				t.Fatal(err)
			}
			return func() {
				// The live listener was left alone and still works.
				checkServes(t, live, "unix://"+path)
				live.Close()
			}
		}, "another process is serving"},
		{"refuses a path that is a regular file", func(t *testing.T, path string) func() {
			os.MkdirAll(filepath.Dir(path), 0o750)
			if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			return func() {
				if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
					t.Errorf("the regular file was touched: %q, %v", b, err)
				}
			}
		}, "not a socket"},
		{"refuses a path that is a directory", func(t *testing.T, path string) func() {
			if err := os.MkdirAll(path, 0o750); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, "not a socket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			guard(t)
			path := filepath.Join(t.TempDir(), "run", "dmsgd.sock")
			after := tc.prepare(t, path)
			l, err := listenURL("unix://" + path)
			if tc.wantErr != "" {
				if err == nil {
					l.Close()
					t.Fatalf("Listen succeeded, want an error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Listen: %v, want an error containing %q", err, tc.wantErr)
				}
				after()
				return
			}
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer l.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
				t.Fatalf("socket file mode %v, want a socket with 0660", fi.Mode())
			}
			checkServes(t, l, "unix://"+path)
			after()
			l.Close()
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("closing the listener left the socket file behind: %v", err)
			}
		})
	}
}

// A unix socket is never reachable at its path with any mode but 0660,
// whatever the umask: under umask 0, a socket bound there and chmod-ed
// afterwards is world-writable in between, and a local user connecting
// then keeps its link (on the shell socket, every command).
func TestAUnixSocketIsNeverReachableBeforeItHasItsMode(t *testing.T) {
	guard(t)
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "shell.sock")
	var seen []fs.FileMode
	defer iocom.SetUnixBound(func(p string) {
		if fi, err := os.Lstat(p); err == nil {
			seen = append(seen, fi.Mode())
		}
	})()
	l, err := listenURL("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(seen) != 1 || seen[0]&fs.ModeSocket == 0 || seen[0].Perm() != 0o660 {
		t.Fatalf("when the socket could first be reached at its path its mode was %v, want one socket with 0660", seen)
	}
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr() = %s, want the socket's path %s", got, path)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "shell.sock" {
		t.Errorf("the socket's directory holds %v, want the socket alone", entries)
	}
	checkServes(t, l, "unix://"+path)
}

// A socket path too long to be bound under its temporary name first is
// refused with an error saying so, not bound in two steps with a window.
func TestAUnixSocketPathTooLongIsRefusedClearly(t *testing.T) {
	guard(t)
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("d", max(100-len(dir), 1)), "x.sock")
	l, err := listenURL("unix://" + path)
	if err == nil {
		l.Close()
		t.Fatalf("Listen(%d-byte path) succeeded, want an error", len(path))
	}
	if !strings.Contains(err.Error(), "too long") {
		t.Errorf("Listen: %v, want it to say the path is too long", err)
	}
}

func TestListenAndDialOverTCP(t *testing.T) {
	guard(t)
	l, err := listenURL("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkServes(t, l, "tcp://"+l.Addr().String())
}

func TestListenAndDialErrors(t *testing.T) {
	guard(t)
	// A port that was just free and nobody listens on any more.
	l, err := listenURL("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "tcp://" + l.Addr().String()
	l.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		err  func() error
	}{
		{"Listen on a malformed address", func() error { _, err := listenURL("tcp://nope"); return err }},
		{"Listen on an unsupported scheme", func() error { _, err := listenURL("udp://127.0.0.1:0"); return err }},
		{"Listen on an address that is not ours", func() error { _, err := listenURL("tcp://192.0.2.1:0"); return err }},
		{"Dial a malformed address", func() error { _, err := dialURL(context.Background(), "tcp:/x"); return err }},
		{"Dial a port nobody listens on", func() error { _, err := dialURL(context.Background(), closed); return err }},
		{"Dial a socket file that does not exist", func() error {
			_, err := dialURL(context.Background(), "unix://"+filepath.Join(t.TempDir(), "none.sock"))
			return err
		}},
		{"Dial with a cancelled context", func() error { _, err := dialURL(cancelled, closed); return err }},
	}
	for _, tc := range cases {
		if err := tc.err(); err == nil {
			t.Errorf("%s succeeded, want an error", tc.name)
		}
	}
}

// listenURL and dialURL take a link address in URL form, as tests write
// them.
func listenURL(addr string) (net.Listener, error) {
	network, address, err := iocom.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	return iocom.Listen(network, address)
}

func dialURL(ctx context.Context, addr string) (net.Conn, error) {
	network, address, err := iocom.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	return iocom.Dial(ctx, network, address)
}
