package router_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// The waiting, logging and router-starting helpers are shared with the
// circuit tests (internal/testnet).
const waitTimeout = testnet.Timeout

var (
	eventually = testnet.Eventually
	waitChan   = testnet.WaitChan
	testLogger = testnet.Logger
)

// routerOption adjusts a test router's configuration before it starts.
type routerOption = testnet.Option

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

// testRouter is one router serving on loopback for the length of a test,
// with the short names these tests use.
type testRouter struct {
	*testnet.Router
	tb     testing.TB
	label  string
	cfg    *config.Config
	port   int
	socket string // shell socket path
}

// newRouter starts a router labelled label (testnet.Start); the test's
// cleanup stops it and checks it shut down.
func newRouter(tb testing.TB, label string, opts ...routerOption) *testRouter {
	tb.Helper()
	r := testnet.Start(tb, label, testLogger(tb), opts...)
	return &testRouter{Router: r, tb: tb, label: label, cfg: r.Cfg, port: r.Port, socket: r.Socket}
}

// stop stops the router and returns Serve's error.
func (r *testRouter) stop() error { return r.Stop() }

func (r *testRouter) addr() string     { return r.Addr() }
func (r *testRouter) tcpURL() string   { return "tcp://" + r.addr() }
func (r *testRouter) shellURL() string { return "unix://" + r.socket }
func (r *testRouter) nodeID() string   { return r.cfg.Node.ID.String() }
func (r *testRouter) rnss() uint32     { return r.Engine().Rnss() }

// mustLinkTo is linkTo for a link that must exist by now.
func (r *testRouter) mustLinkTo(label string) string {
	r.tb.Helper()
	id, err := r.LinkTo(label)
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
	if n == nil || len(n.Adverts) == 0 {
		return 0, fmt.Errorf("%s does not hold node %s", r.label, label)
	}
	return n.Adverts[0].Dist, nil
}

// lacks reports an error while the router holds a node labelled label.
func (r *testRouter) lacks(label string) error {
	if r.Holds(label) == nil {
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
			for _, l := range n.Adverts {
				if l.Dist == 0 && l.Via != span.ViaLocal {
					return nil
				}
			}
			return fmt.Errorf("node %s links: %+v", y.label, n.Adverts)
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
			eventually(tb, r.label+" holds "+o.label, func() error { return r.Holds(o.label) })
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
