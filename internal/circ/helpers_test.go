package circ_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// The waiting, logging and router-starting helpers are shared with the
// router's tests (internal/testnet).
const waitTimeout = testnet.Timeout

var (
	eventually = testnet.Eventually
	poll       = testnet.Poll
	waitChan   = testnet.WaitChan
	testLogger = testnet.Logger
)

// routerOption adjusts a test router's configuration before it starts.
type routerOption = testnet.Option

func withCircuitLimits(queueBytes int, stall time.Duration) routerOption {
	return func(c *config.Config) {
		c.Limits.CircuitQueueBytes = config.ByteSize(queueBytes)
		c.Limits.CircuitStall = stall
	}
}

func withMaxCircuits(n int) routerOption {
	return func(c *config.Config) { c.Limits.MaxCircuits = n }
}

func withShellRemote(on bool) routerOption {
	return func(c *config.Config) { c.Shell.Remote = on }
}

func withoutKeepalive() routerOption {
	return func(c *config.Config) { c.Keepalive.Interval, c.Keepalive.Timeout = 0, 0 }
}

// testRouter is one router serving on loopback for the length of a test,
// with the short names these tests use.
type testRouter struct {
	*testnet.Router
	label string
	port  int
}

// newRouter starts a router labelled label (testnet.Start); the test's
// cleanup stops it.
func newRouter(tb testing.TB, label string, opts ...routerOption) *testRouter {
	tb.Helper()
	return newRouterLog(tb, label, testLogger(tb), opts...)
}

func newRouterLog(tb testing.TB, label string, log *zap.Logger, opts ...routerOption) *testRouter {
	tb.Helper()
	r := testnet.Start(tb, label, log, opts...)
	return &testRouter{Router: r, label: label, port: r.Port}
}

func (r *testRouter) stop() { r.Stop() }

func (r *testRouter) addr() string { return r.Addr() }

// circuits returns the circuits the router relays.
func (r *testRouter) circuits() []shell.Circuit { return r.Tree().Circuits }

// noCircuits reports an error while any router relays a circuit.
func noCircuits(rs ...*testRouter) error {
	for _, r := range rs {
		if cs := r.circuits(); len(cs) != 0 {
			return fmt.Errorf("%s still relays %d circuit(s): %+v", r.label, len(cs), cs)
		}
	}
	return nil
}

// spanTo links a to the router (or proxy) at addr the way the shell's
// `span <host>` does.
func spanTo(tb testing.TB, a *testRouter, addr string) {
	tb.Helper()
	if out := a.Span(addr); !strings.HasPrefix(out, "Connected to ") {
		tb.Fatalf("%s: span %s: %q", a.label, addr, out)
	}
}

// line starts n routers r1..rn linked in a line and waits until every
// router holds every other.
func line(tb testing.TB, n int, opts ...routerOption) []*testRouter {
	tb.Helper()
	rs := make([]*testRouter, n)
	for i := range rs {
		rs[i] = newRouter(tb, fmt.Sprintf("r%d", i+1), opts...)
	}
	for i := 1; i < n; i++ {
		spanTo(tb, rs[i-1], rs[i].addr())
	}
	waitConverged(tb, rs)
	return rs
}

// waitConverged waits until every router holds every other.
func waitConverged(tb testing.TB, rs []*testRouter) {
	tb.Helper()
	for _, r := range rs {
		for _, o := range rs {
			eventually(tb, r.label+" holds "+o.label, func() error { return r.Holds(o.label) })
		}
	}
}

// ---------------------------------------------------------------------------
// proxy: a TCP relay between two routers that can tap the frames it
// forwards and be cut, for circuit-id checks and abrupt link loss.

// tapFrame is one frame a proxy forwarded, decoded.
type tapFrame struct {
	dir int // 0: dialer -> target, 1: target -> dialer
	m   *dmsg.Msg
}

type proxy struct {
	tb     testing.TB
	ln     net.Listener
	target string
	tap    bool

	mu     sync.Mutex
	conns  []net.Conn
	frames []tapFrame
	wg     sync.WaitGroup
}

// newProxy listens on loopback and relays every accepted connection to
// target; with tap it decodes and records each frame it forwards.
func newProxy(tb testing.TB, target string, tap bool) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{tb: tb, ln: ln, target: target, tap: tap}
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			a.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, a, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(0, a, b)
		go p.pipe(1, b, a)
	}
}

// pipe copies src to dst; when tapping it decodes the stream as it goes
// (the decoder's read-ahead is what is forwarded, so nothing is delayed
// beyond one read).
func (p *proxy) pipe(dir int, src, dst net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	if !p.tap {
		io.Copy(dst, src)
		return
	}
	dec := dmsg.NewDecoder(io.TeeReader(src, dst))
	for {
		m, err := dec.Decode()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.frames = append(p.frames, tapFrame{dir, m})
		p.mu.Unlock()
	}
}

// cut closes every connection the proxy relays: abrupt link loss for
// both routers.
func (p *proxy) cut() {
	p.mu.Lock()
	cs := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// tapped returns a copy of the frames recorded so far.
func (p *proxy) tapped() []tapFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]tapFrame(nil), p.frames...)
}

func (p *proxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}
