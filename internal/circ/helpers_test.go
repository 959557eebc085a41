package circ_test

import (
	"context"
	"fmt"
	"io"
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
	"github.com/dmsgd/dmsgd/internal/router"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// waitTimeout bounds every wait in these tests. Everything converges in
// milliseconds on loopback; reaching it means a hang or a lost event.
const waitTimeout = 15 * time.Second

// eventually polls cond until it returns nil, failing tb with cond's last
// complaint after waitTimeout.
func eventually(tb testing.TB, what string, cond func() error) {
	tb.Helper()
	if err := poll(waitTimeout, cond); err != nil {
		tb.Fatalf("timed out after %v waiting until %s: %v", waitTimeout, what, err)
	}
}

// poll calls cond until it returns nil or d has passed; it returns cond's
// last error.
func poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
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
// or with -v; benchmarks log nothing); DMSGD_TEST_LOG=debug|info turns the
// volume up.
func testLogger(tb testing.TB) *zap.Logger {
	level := zapcore.WarnLevel
	s := os.Getenv("DMSGD_TEST_LOG")
	if _, bench := tb.(*testing.B); bench && s == "" {
		return zap.NewNop()
	}
	if s != "" {
		if err := level.Set(s); err != nil {
			tb.Fatalf("DMSGD_TEST_LOG=%q: %v", s, err)
		}
	}
	return zaptest.NewLogger(tb, zaptest.Level(level))
}

// routerOption adjusts a test router's configuration before it starts.
type routerOption func(*config.Config)

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
	stopOnce sync.Once
}

// newRouter starts a router labelled label: a tcp listener on a free
// loopback port, a shell socket in a temporary directory, short
// keepalives. The test's cleanup stops it.
func newRouter(tb testing.TB, label string, opts ...routerOption) *testRouter {
	tb.Helper()
	return newRouterLog(tb, label, testLogger(tb), opts...)
}

func newRouterLog(tb testing.TB, label string, log *zap.Logger, opts ...routerOption) *testRouter {
	tb.Helper()
	cfg := config.Defaults()
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	cfg.Shell.Socket = filepath.Join(shortTempDir(tb), "shell.sock")
	cfg.Node.Label = label
	cfg.Node.ID = config.NodeIDFor(label)
	cfg.Node.ClusterLabel = "default"
	cfg.Node.ClusterID = config.NodeIDFor("default")
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
	r := &testRouter{Router: router.New(cfg, log), tb: tb, label: label, cfg: cfg,
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
		r.Serve(ctx)
	}()
	tb.Cleanup(func() { r.stop() })
	return r
}

// shortTempDir is a per-test temporary directory whose paths stay well
// under the 108-byte limit of unix socket addresses.
func shortTempDir(tb testing.TB) string {
	dir := tb.TempDir()
	if len(dir) < 80 {
		return dir
	}
	dir, err := os.MkdirTemp("", "ct")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stop cancels Serve's context and waits for Serve to return.
func (r *testRouter) stop() {
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case <-r.served:
		case <-time.After(waitTimeout):
			r.tb.Errorf("router %s: Serve did not return within %v of its context ending", r.label, waitTimeout)
		}
	})
}

func (r *testRouter) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// linkTo returns the id of the router's open link whose peer announced
// label.
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

// holds reports an error unless the router holds a node labelled label.
func (r *testRouter) holds(label string) error {
	for _, c := range r.Tree().Clusters {
		for _, n := range c.Nodes {
			if n.Label == label && len(n.Links) > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("%s does not hold node %s", r.label, label)
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
			eventually(tb, r.label+" holds "+o.label, func() error { return r.holds(o.label) })
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

// ---------------------------------------------------------------------------
// gatedConn: a net.Conn whose reads can be held, to play a consumer that
// stops reading its socket.

type gatedConn struct {
	net.Conn
	mu     sync.Mutex
	gate   chan struct{} // non-nil while reads are held; closed to release
	closed chan struct{}
	once   sync.Once
}

func newGatedConn(nc net.Conn) *gatedConn {
	return &gatedConn{Conn: nc, closed: make(chan struct{})}
}

func (g *gatedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	ch := g.gate
	g.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-g.closed:
			return 0, net.ErrClosed
		}
	}
	return g.Conn.Read(p)
}

// hold makes reads block until release.
func (g *gatedConn) hold() {
	g.mu.Lock()
	if g.gate == nil {
		g.gate = make(chan struct{})
	}
	g.mu.Unlock()
}

func (g *gatedConn) release() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Conn.Close()
}
