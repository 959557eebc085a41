package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/circ"
	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
	"github.com/dmsgd/dmsgd/internal/span"
	"github.com/dmsgd/dmsgd/internal/volconf"
)

// Locking. A router's locks, from outermost to innermost; a goroutine
// holding one may take only those below it:
//
//	span.Engine.mu       the cluster mutex; the engine calls link.OpenSpan
//	                     and relayTx.Close under it, which only queue
//	circ.Circuit.mu      one forwarded circuit, held through its setup
//	circ.Switch.mu       the table of every forwarded circuit (register)
//	circ.Table.mu        one link's circuit ends
//	iocom.Link.mu        one link's state machine and outbound queue
//
// Router.mu (links, listeners, VOLCONF slots), link.mu (its peer's
// LNK_CONN), the admission and source buckets (admit.go, churn.go) and
// the signature caches (sigspan.go, hopsign.go) are leaves: nothing else
// is taken while one is held, and none is held across a call into the
// engine, the circuit relay, iocom or the outbound target manager. The
// circuit relay resolves a LNK_CIRC's target through the engine before
// taking any lock of its own.
//
// iocom handlers run on their link's reader with no iocom lock held, so
// they may send on any link. A reader that relays circuit data may write a
// small burst into another link's socket itself: it takes that link's
// write lock (iocom.Link.wmu) with TryLock only, never waiting for it, and
// holds nothing above it.

// Router is one running dmsgd.
type Router struct {
	log      *zap.Logger
	engine   *span.Engine
	signer   *signer // our key, when we have one (sigspan.go)
	circuits *circ.Switch
	media    *volconf.Manager
	nodeID   uuid.UUID
	label    string

	cfg atomic.Pointer[config.Config]

	// events logs what peers can repeat at will once per kind and window;
	// metrics counts it. Both are shared by every link.
	events  *ratelog.Logger
	metrics *metrics.Metrics

	mu        sync.Mutex
	links     map[string]*link
	listeners []*listener
	volconf   volconf.Slots // peers' LNK_VOLCONF slots (volconf.go)
	closing   bool
	peers     peerBook // traffic and churn of closed links, by peer identity
	serving   bool     // Serve is accepting on every listener
	stopped   []string // listeners whose accept loop gave up, and why
	served    bool     // Serve was called: it may be called once

	health prober // /healthz (health.go)

	metricsSrv  *http.Server // nil when metrics.listen is empty
	metricsAddr net.Addr

	admit  admitter      // link admission counts (admit.go)
	work   sourceWork    // engine work charged to each source (churn.go)
	memory memoryReturn  // freed memory handed back after large teardowns (memreturn.go)
	txPool *iocom.TxPool // transactions all peers hold open
	failed chan error    // the first listener whose accept loop gave up: Serve stops with it

	// ctx ends when Shutdown or Close begins: the work the router does
	// for links outside their readers (TLS handshakes, turns under the
	// accept rate, the shell's dials and `@node` circuits) derives from
	// it, so none of it outlives the router (lifecycle.go).
	ctx       context.Context
	cancel    context.CancelFunc
	stopOnce  sync.Once // the first steps of stopping (beginStop)
	finalOnce sync.Once // the last (finish)

	nextLink   atomic.Uint64
	shellTasks atomic.Int64   // background shell commands of peers (shellenv.go)
	wg         sync.WaitGroup // accept loops, links, shell tasks
}

// listener is one bound listening socket.
type listener struct {
	net.Listener
	addr  string
	shell bool // the shell socket: every peer may use the shell
}

// New builds a router from a validated configuration. It binds nothing
// until Listen.
func New(cfg *config.Config, log *zap.Logger) *Router {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Router{
		log:     log,
		nodeID:  cfg.Node.ID,
		label:   cfg.Node.Label,
		links:   make(map[string]*link),
		peers:   make(peerBook),
		events:  ratelog.New(log, 0),
		metrics: metrics.New(),
		txPool:  iocom.NewTxPool(cfg.Limits.MaxTransactions),
		failed:  make(chan error, 1),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.signer = loadSigner(cfg, log)
	if cfg.Node.IDFromKey && r.signer.id != nil {
		r.nodeID = config.KeyNodeID(r.signer.id.Pub)
		c := *cfg
		c.Node.ID = r.nodeID
		cfg = &c
	}
	r.cfg.Store(cfg)
	r.engine = span.New(r.spanConfig(cfg, 0))
	r.circuits = circ.New(r.circuitConfig(cfg), r.resolveCircuit, r)
	r.media = volconf.New(volconf.Options{Connect: r.connectTarget, Logger: log,
		PeerSource: isVolconfSource, Events: r.events})
	r.metrics.Registry().MustRegister(collector{r})
	return r
}

// circuitConfig derives the circuit relay's configuration from the file.
func (r *Router) circuitConfig(cfg *config.Config) circ.Config {
	return circ.Config{
		QueueBytes:  int(cfg.Limits.CircuitQueueBytes),
		Stall:       cfg.Limits.CircuitStall,
		MaxCircuits: cfg.Limits.MaxCircuits,
		MaxPerLink:  cfg.Limits.MaxCircuitsPerLink,
		Memory:      int64(cfg.Limits.CircuitMemory),
		Logger:      r.log,
		Events:      r.events,
		Metrics:     r.metrics,
	}
}

// spanConfig derives the engine's configuration from the file.
func (r *Router) spanConfig(cfg *config.Config, rnss uint32) span.Config {
	sc := span.Config{
		MaxRelays:       cfg.Span.MaxRelays,
		Symmetric:       cfg.Span.Symmetric,
		Rnss:            rnss,
		MaxSpansPerConn: cfg.Limits.MaxSpansPerLink,
		Budget: span.Budget{
			MaxNodes:        cfg.Limits.MaxNodes,
			MaxSpans:        cfg.Limits.MaxSpans,
			MaxRelays:       cfg.Limits.MaxRelays,
			MaxSpansPerNode: cfg.Limits.MaxSpansPerNode,
			MaxRefusals:     cfg.Limits.MaxSpanRefusals,
		},
		Logger:  r.log,
		Metrics: r.metrics,
		Events:  r.events,
	}
	if r.signer.id != nil {
		sc.SignSelf = r.signer.signSelf
	}
	if cfg.Node.Advertise {
		sc.Self = &dmsg.Span{
			PfsClid:      cfg.Node.ClusterID,
			PfsFsid:      cfg.Node.ID,
			PeerType:     uint8(cfg.Node.PeerType),
			ProtoVersion: 1,
			ClLabel:      cfg.Node.ClusterLabel,
			FsLabel:      cfg.Node.Label,
		}
	}
	return sc
}

// Config returns the configuration in force.
func (r *Router) Config() *config.Config { return r.cfg.Load() }

// Engine returns the router's span engine.
func (r *Router) Engine() *span.Engine { return r.engine }

// Listen binds every configured listener and the shell socket, and adopts
// already-bound listeners (socket activation, activation.go): one that a
// listen entry or the shell socket names is served as such instead of
// being bound again. On error nothing stays bound, the inherited
// listeners included.
func (r *Router) Listen(inherited []net.Listener) error {
	cfg := r.Config()
	var ls []*listener
	fail := func(err error) error {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	adopted, err := r.adoptInherited(cfg, inherited)
	taken := make(map[int]bool)
	shellTaken := false
	for _, in := range adopted {
		ls = append(ls, in.listener)
		taken[in.entry] = true
		shellTaken = shellTaken || in.shell
	}
	if err != nil {
		for _, l := range inherited[len(adopted):] {
			if l != nil {
				l.Close()
			}
		}
		return fail(err)
	}
	for i, pl := range cfg.Listeners {
		if taken[i] {
			continue
		}
		nl, err := r.listen(pl)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, &listener{Listener: nl, addr: pl.String()})
	}
	if cfg.Shell.Socket != "" && !shellTaken {
		nl, err := iocom.Listen("unix", cfg.Shell.Socket)
		if err != nil {
			return fail(fmt.Errorf("shell socket: %w", err))
		}
		ls = append(ls, &listener{Listener: nl, addr: "unix://" + cfg.Shell.Socket, shell: true})
	}
	r.mu.Lock()
	r.listeners = ls
	r.mu.Unlock()
	if err := r.listenMetrics(); err != nil {
		return fail(err)
	}
	return nil
}

// listen binds one configured listener; tls:// ones need the tls section.
func (r *Router) listen(pl config.Listener) (net.Listener, error) {
	switch pl.Network {
	case config.NetworkTLS:
		tc, err := tlsConfig(r.Config().TLS, r.pins)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", pl, err)
		}
		return r.listenTLS(pl, tc)
	case config.NetworkUnix:
		return iocom.Listen("unix", pl.Address)
	}
	return iocom.Listen("tcp", pl.Address)
}

// Addrs returns the bound listener addresses, for logs and tests.
func (r *Router) Addrs() []net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]net.Addr, 0, len(r.listeners))
	for _, l := range r.listeners {
		out = append(out, l.Addr())
	}
	return out
}

func (r *Router) acceptLoop(l *listener) {
	defer r.wg.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				r.events.Warn("accept_failed", "accept failed; retrying", zap.String("addr", l.addr), zap.Error(err), zap.Duration("in", delay))
				time.Sleep(delay)
				continue
			}
			r.log.Error("accept failed; listener stopped", zap.String("addr", l.addr), zap.Error(err))
			r.listenerStopped(l, err)
			return
		}
		delay = 0
		r.accepted(nc, l)
	}
}

// isTemporary reports accept errors worth retrying (descriptor exhaustion
// and the like) rather than giving up on the listener.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// newLinkID returns the next link id, "L1", "L2", ...
func (r *Router) newLinkID() string {
	return "L" + strconv.FormatUint(r.nextLink.Add(1), 10)
}

// linkList returns the open links. Called with r.mu held.
func (r *Router) linkList() []*link {
	out := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		out = append(out, l)
	}
	return out
}
