package router_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/router"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// posing is an inherited listener that accepts on loopback but reports
// the address systemd bound it to: tests may not listen off loopback, and
// the router judges an inherited socket by its address alone.
type posing struct {
	net.Listener
	addr net.Addr
}

func (p posing) Addr() net.Addr { return p.addr }

func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// activatedRouter builds a router from cfg, as `dmsgd serve` does, and
// hands it inherited as systemd would. It returns Listen's error; on
// success the router serves until the test ends.
func activatedRouter(t *testing.T, cfg *config.Config, inherited ...net.Listener) (*router.Router, error) {
	t.Helper()
	cfg.Listeners = nil
	for _, l := range cfg.Listen {
		pl, err := config.ParseListen(l)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listeners = append(cfg.Listeners, pl)
	}
	r := router.New(cfg, testLogger(t))
	if err := r.Listen(inherited); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); waitChan(t, "Serve to return", served) })
	return r, nil
}

func activationConfig(t *testing.T, label string) *config.Config {
	cfg := config.Defaults()
	cfg.Node.Label, cfg.Node.ID = label, config.NodeIDFor(label)
	cfg.Node.ClusterID = config.NodeIDFor(cfg.Node.ClusterLabel)
	cfg.Shell.Socket = filepath.Join(testnet.ShortTempDir(t), "shell.sock")
	return cfg
}

// An inherited socket that a tls:// entry names is that listener: it is
// served with TLS (a pinned peer links, a plain one gets no LNK_CONN) and
// the entry is not bound a second time. systemd's ListenStream=987 binds
// [::]:987, which tls://0.0.0.0:987 names.
func TestAnInheritedSocketNamedByATLSEntryIsServedWithTLS(t *testing.T) {
	own, peer := newNodeKey(t, "a"), newNodeKey(t, "b")
	cfg := activationConfig(t, "a")
	withTLS(own, map[string]nodeKey{"b": peer})(cfg)
	cfg.Listen = []string{"tls://0.0.0.0:987"}
	l := loopbackListener(t)
	if _, err := activatedRouter(t, cfg, posing{l, &net.TCPAddr{IP: net.IPv6unspecified, Port: 987}}); err != nil {
		t.Fatalf("Listen: %v", err)
	}

	p := dialRawTLS(t, l.Addr().String(), peer)
	p.send(connMsg(routerLNKConn("b"), false, 0x1000))
	p.Expect("the router's LNK_CONN over TLS", isConnCreate)

	plain := dialRaw(t, "tcp://"+l.Addr().String(), false)
	plain.send(connMsg(routerLNKConn("c"), false, 0x1000))
	if err := plain.WaitEnd(); err == nil {
		t.Fatal("a plain peer's read ended without an error")
	}
	if got := plain.Len(); got != 0 {
		t.Fatalf("a plain peer on the TLS socket got %d DMSG messages:\n%s", got, plain.Transcript())
	}
}

// An inherited plain socket off loopback that no entry names is refused
// (serve fails, naming it and the way out) unless tls.insecure_plain_tcp
// allows plain TCP there; one on loopback is served as before.
func TestAnInheritedPlainSocketOffLoopbackNeedsInsecurePlainTCP(t *testing.T) {
	tests := []struct {
		name     string
		addr     *net.TCPAddr
		insecure bool
		wantErr  string
	}{
		{"every address is refused", &net.TCPAddr{IP: net.IPv6unspecified, Port: 987}, false, "plain TCP off loopback"},
		{"a public address is refused", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 987}, false, "tls.insecure_plain_tcp"},
		{"every address is served with tls.insecure_plain_tcp", &net.TCPAddr{IP: net.IPv4zero, Port: 987}, true, ""},
		{"loopback is served", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 987}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := activationConfig(t, "a")
			cfg.TLS.InsecurePlainTCP = tc.insecure
			l := loopbackListener(t)
			_, err := activatedRouter(t, cfg, posing{l, tc.addr})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.addr.String()) {
					t.Fatalf("Listen: %v, want an error naming %s and containing %q", err, tc.addr, tc.wantErr)
				}
				if _, aerr := l.Accept(); aerr == nil {
					t.Fatal("the refused inherited socket is still open")
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			p := dialRaw(t, "tcp://"+l.Addr().String(), true)
			p.send(connMsg(routerLNKConn("b"), false, 0x1000))
			p.Expect("the router's LNK_CONN", isConnCreate)
		})
	}
}

// An inherited unix socket at the shell socket's path is the shell socket:
// it is not bound again (which would fail: the path is served) and its
// peers run every command.
func TestAnInheritedShellSocketIsTheShellSocket(t *testing.T) {
	cfg := activationConfig(t, "a")
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	ul, err := net.Listen("unix", cfg.Shell.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	r, err := activatedRouter(t, cfg, ul)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if n := len(r.Addrs()); n != 2 {
		t.Fatalf("the router listens on %d sockets (%v), want the tcp entry and the inherited shell socket", n, r.Addrs())
	}
	p := dialRaw(t, "unix://"+cfg.Shell.Socket, true)
	p.send(connMsg(dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: ^uint64(0), ProtoVersion: 1, FsLabel: "op"}, false, 0x1000))
	p.Expect("the router's LNK_CONN", isConnCreate)
	p.send(dmsgtest.ShellLine("span 127.0.0.1:1"))
	out := p.Expect("the answer to span", func(m *dmsg.Msg) bool { return isShellReply(m) && dmsgtest.Text(m) != shell.Prompt })
	if !strings.HasPrefix(dmsgtest.Text(out), "Connection to 127.0.0.1:1 failed") {
		t.Fatalf("a privileged command on the inherited shell socket was not run: %q", dmsgtest.Text(out))
	}
}
