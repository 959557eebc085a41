package router_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/router"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
)

// waitTimeout bounds every wait in these tests. Everything here converges
// in milliseconds on loopback; reaching it means a hang or a lost event.
const waitTimeout = 10 * time.Second

// eventually polls cond until it returns nil, failing tb with cond's last
// complaint after waitTimeout.
func eventually(tb testing.TB, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s: %v", waitTimeout, what, err)
		}
		time.Sleep(delay)
	}
}

// waitChan waits for ch to be closed, failing tb after waitTimeout.
func waitChan(tb testing.TB, what string, ch <-chan struct{}) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		tb.Fatalf("timed out after %v waiting until %s", waitTimeout, what)
	}
}

// testLogger logs to the test at warn level (shown only for failing tests
// or with -v); DMSGD_TEST_LOG=debug|info turns up the volume.
func testLogger(tb testing.TB) *zap.Logger {
	level := zapcore.WarnLevel
	if s := os.Getenv("DMSGD_TEST_LOG"); s != "" {
		if err := level.Set(s); err != nil {
			tb.Fatalf("DMSGD_TEST_LOG=%q: %v", s, err)
		}
	}
	return zaptest.NewLogger(tb, zaptest.Level(level))
}

// routerOption adjusts a test router's configuration before it starts.
type routerOption func(*config.Config)

func withMaxRelays(k int) routerOption { return func(c *config.Config) { c.Span.MaxRelays = k } }
func withShellTCP(p string) routerOption {
	return func(c *config.Config) { c.Shell.TCP = p }
}
func withMaxLinks(n int) routerOption { return func(c *config.Config) { c.Limits.MaxLinks = n } }
func withMaxSpansPerLink(n int) routerOption {
	return func(c *config.Config) { c.Limits.MaxSpansPerLink = n }
}

// withoutKeepalive turns both keepalive checks off, for tests that assert
// every message on a link and must not see keepalive pings.
func withoutKeepalive() routerOption {
	return func(c *config.Config) { c.Keepalive.Interval, c.Keepalive.Timeout = 0, 0 }
}

// withKeepaliveTimeout sets the dead-link timeout: long enough, it cannot
// be what closes a link a test expects the router to close for cause.
func withKeepaliveTimeout(d time.Duration) routerOption {
	return func(c *config.Config) { c.Keepalive.Timeout = d }
}

// withTarget adds a static media copy: the router keeps an outbound link
// to addr (host:port).
func withTarget(tb testing.TB, addr string) routerOption {
	return func(c *config.Config) {
		path := "span:" + addr
		t, err := config.ParseSpanPath(path)
		if err != nil {
			tb.Fatalf("target %s: %v", path, err)
		}
		t.Name = "lab"
		c.Media = append(c.Media, config.Media{Name: "lab",
			Copies: []config.Copy{{CopyID: len(c.Media) + 1, Path: path, Target: t}}})
	}
}

// testRouter is one router serving on loopback for the length of a test.
type testRouter struct {
	*router.Router
	tb     testing.TB
	label  string
	cfg    *config.Config
	port   int
	socket string // shell socket path

	cancel   context.CancelFunc
	served   chan struct{}
	serveErr error
	stopOnce sync.Once
}

// newRouter starts a router labelled label: a tcp listener on a free
// loopback port, a shell socket in a temporary directory, short
// keepalives. The test's cleanup stops it and checks it shut down.
func newRouter(tb testing.TB, label string, opts ...routerOption) *testRouter {
	tb.Helper()
	cfg := config.Defaults()
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	cfg.Shell.Socket = filepath.Join(shortTempDir(tb), "shell.sock")
	cfg.Node.Label = label
	cfg.Node.ID = config.NodeIDFor(label)
	cfg.Node.ClusterID = config.NodeIDFor(cfg.Node.ClusterLabel)
	cfg.Keepalive.Interval = 100 * time.Millisecond
	cfg.Keepalive.Timeout = 5 * time.Second
	for _, o := range opts {
		o(cfg)
	}
	for _, l := range cfg.Listen {
		pl, err := config.ParseListen(l)
		if err != nil {
			tb.Fatalf("listen %s: %v", l, err)
		}
		cfg.Listeners = append(cfg.Listeners, pl)
	}

	r := &testRouter{Router: router.New(cfg, testLogger(tb)), tb: tb, label: label, cfg: cfg,
		socket: cfg.Shell.Socket, served: make(chan struct{})}
	if err := r.Listen(nil); err != nil {
		tb.Fatalf("router %s: Listen: %v", label, err)
	}
	for _, a := range r.Addrs() {
		if ta, ok := a.(*net.TCPAddr); ok {
			r.port = ta.Port
		}
	}
	if r.port == 0 {
		tb.Fatalf("router %s: no tcp listener among %v", label, r.Addrs())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.served)
		r.serveErr = r.Serve(ctx)
	}()
	panics := iocom.Panics()
	tb.Cleanup(func() {
		r.stop()
		if n := iocom.Panics() - panics; n != 0 {
			tb.Errorf("router %s: link code recovered from %d panic(s)", label, n)
		}
	})
	return r
}

// shortTempDir is a per-test temporary directory whose paths stay well
// under the 108-byte limit of unix socket addresses.
func shortTempDir(tb testing.TB) string {
	dir := tb.TempDir()
	if len(dir) < 80 {
		return dir
	}
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stop cancels Serve's context and waits for Serve to return; it returns
// Serve's error. Calling it again returns the same result.
func (r *testRouter) stop() error {
	r.tb.Helper()
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case <-r.served:
		case <-time.After(waitTimeout):
			r.tb.Errorf("router %s: Serve did not return within %v of its context ending", r.label, waitTimeout)
		}
	})
	return r.serveErr
}

func (r *testRouter) addr() string     { return "127.0.0.1:" + strconv.Itoa(r.port) }
func (r *testRouter) tcpURL() string   { return "tcp://" + r.addr() }
func (r *testRouter) shellURL() string { return "unix://" + r.socket }
func (r *testRouter) nodeID() string   { return r.cfg.Node.ID.String() }
func (r *testRouter) rnss() uint32     { return r.Engine().Rnss() }

// linkTo returns the id of the router's link whose peer announced label.
func (r *testRouter) linkTo(label string) (string, error) {
	var ids []string
	for _, l := range r.Tree().Links {
		if l.PeerLabel == label && l.State == "up" {
			ids = append(ids, l.ID)
		}
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("%s: links to %q: %v", r.label, label, ids)
	}
	return ids[0], nil
}

// mustLinkTo is linkTo for a link that must exist by now.
func (r *testRouter) mustLinkTo(label string) string {
	r.tb.Helper()
	id, err := r.linkTo(label)
	if err != nil {
		r.tb.Fatal(err)
	}
	return id
}

// findNode returns the node labelled label in the cluster of peerType
// ("router", "hammer2", ...) of tree t, or nil.
func findNode(t *shell.Tree, peerType, label string) *shell.Node {
	for ci := range t.Clusters {
		c := &t.Clusters[ci]
		if c.PeerType != peerType {
			continue
		}
		for ni := range c.Nodes {
			if c.Nodes[ni].Label == label {
				return &c.Nodes[ni]
			}
		}
	}
	return nil
}

// bestDist is the dist of the best link the router holds for the router
// node labelled label.
func (r *testRouter) bestDist(label string) (uint32, error) {
	n := findNode(r.Tree(), "router", label)
	if n == nil || len(n.Links) == 0 {
		return 0, fmt.Errorf("%s does not hold node %s", r.label, label)
	}
	return n.Links[0].Dist, nil
}

// holds reports an error unless the router holds a node labelled label
// (of any peer type).
func (r *testRouter) holds(label string) error {
	for _, c := range r.Tree().Clusters {
		for _, n := range c.Nodes {
			if n.Label == label {
				return nil
			}
		}
	}
	return fmt.Errorf("%s does not hold node %s", r.label, label)
}

// lacks reports an error while the router holds a node labelled label.
func (r *testRouter) lacks(label string) error {
	if r.holds(label) == nil {
		return fmt.Errorf("%s still holds node %s", r.label, label)
	}
	return nil
}

// connect links a to b the way the shell's `span <host>` does and waits
// until each holds the other's advertisement at dist 0 over that link.
func connect(tb testing.TB, a, b *testRouter) {
	tb.Helper()
	if out := a.Span(b.addr()); !strings.HasPrefix(out, "Connected to ") {
		tb.Fatalf("%s: span %s: %q", a.label, b.addr(), out)
	}
	waitLinked(tb, a, b)
}

// waitLinked waits until a and b hold each other at dist 0 over a link.
func waitLinked(tb testing.TB, a, b *testRouter) {
	tb.Helper()
	for _, p := range [][2]*testRouter{{a, b}, {b, a}} {
		x, y := p[0], p[1]
		eventually(tb, x.label+" holds "+y.label+" at dist 0", func() error {
			n := findNode(x.Tree(), "router", y.label)
			if n == nil {
				return fmt.Errorf("no node %s", y.label)
			}
			for _, l := range n.Links {
				if l.Dist == 0 && l.Via != span.ViaLocal {
					return nil
				}
			}
			return fmt.Errorf("node %s links: %+v", y.label, n.Links)
		})
	}
}

// line starts n routers r1..rn linked in a line, r1-r2-...-rn, and waits
// until every router holds every node.
func line(tb testing.TB, n int, opts ...routerOption) []*testRouter {
	tb.Helper()
	rs := make([]*testRouter, n)
	for i := range rs {
		rs[i] = newRouter(tb, fmt.Sprintf("r%d", i+1), opts...)
	}
	for i := 1; i < n; i++ {
		connect(tb, rs[i-1], rs[i])
	}
	for _, r := range rs {
		for _, o := range rs {
			eventually(tb, r.label+" holds "+o.label, func() error { return r.holds(o.label) })
		}
	}
	return rs
}

// hammer2Span is a leaf's own advertisement of a HAMMER2 node.
func hammer2Span(label, clusterLabel string, pfsType uint8, rnss uint32) dmsg.Span {
	return dmsg.Span{
		PfsClid:      config.NodeIDFor(clusterLabel),
		PfsFsid:      config.NodeIDFor(label),
		PfsType:      pfsType,
		PeerType:     dmsg.PeerHammer2,
		ProtoVersion: 1,
		Rnss:         rnss,
		ClLabel:      clusterLabel,
		FsLabel:      label,
	}
}
