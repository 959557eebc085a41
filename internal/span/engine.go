package span

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// DefaultMaxRelays is K when Config.MaxRelays is 0 (docs/PROTOCOL.md 4.3).
const DefaultMaxRelays = 2

// MaxDist is the largest dist a relay may carry. A link is relayed only
// while its dist is below it, which is what bounds every loop.
const MaxDist = 16

// Config configures an Engine.
type Config struct {
	MaxRelays int  // K, DefaultMaxRelays when 0
	Symmetric bool // also relay links beyond K while (dist,rnss) equal the K-th's
	// Rnss is this router's random non-zero rnss; New picks one when 0.
	Rnss uint32
	// Self is the router's own advertisement (nil = none). It is sent with
	// Dist 0 and Rnss = Config.Rnss whatever the span holds.
	Self *dmsg.Span
	// SignSelf, when set, signs our own advertisement as it is sent
	// (dist 0, our rnss): its Proof travels with every relay of it
	// (docs/PROTOCOL.md 11.3). It is called under the engine's mutex whenever
	// the advertisement changes, and must not call the engine.
	SignSelf func(dmsg.Span) Proof
	// MaxSpansPerConn bounds the spans one neighbor may hold open with
	// us; SpanReceived beyond it fails with ErrTooManySpans. 0 = unlimited.
	MaxSpansPerConn int
	// Budget bounds what all neighbors together make the engine hold
	// (budget.go).
	Budget Budget
	// Logger receives topology events: neighbors at info, spans at
	// debug. nil = nop. The daemon must not sample it.
	Logger *zap.Logger
	// Metrics counts limits hit; nil counts nothing.
	Metrics *metrics.Metrics
	// Events logs the budget events a peer can repeat at will, once per
	// kind and window; nil drops them.
	Events *ratelog.Logger
}

// Stats counts what an Engine holds. A router that has lost every
// neighbor and advertises nothing is all zero.
type Stats struct {
	Clusters int
	Nodes    int
	Links    int // received advertisements plus our own advertisement
	Relays   int // open relays (LNK_SPAN transactions we opened)
	Conns    int // neighbors with an open LNK_CONN
	Starved  int // nodes waiting for Budget.MaxRelays to open their relays
}

// Errors returned by SpanReceived. Each one means the daemon must refuse
// the span (REPLY|DELETE); ErrDuplicate is also a protocol violation that
// closes the link.
// The budget refusals are in budget.go.
var (
	ErrDuplicate  = errors.New("span: LNK_SPAN CREATE for a msgid already open on this connection")
	ErrConnDown   = errors.New("span: connection is down")
	ErrZeroMsgID  = errors.New("span: LNK_SPAN with msgid 0")
	ErrRnssChange = errors.New("span: rnss cannot change while running")
)

// ErrOwnNode refuses an advertisement of this router's own node that came
// back from a peer: holding or relaying it would only feed loops
// (docs/PROTOCOL.md 4.4). It is routine, not a violation.
var ErrOwnNode = errors.New("span: advertisement of this router's own node")

// Engine is the span engine of one router. The zero value is not usable;
// call New.
type Engine struct {
	mu  sync.Mutex // the cluster mutex: guards everything below
	log *zap.Logger

	rnss      uint32
	maxRelays int
	symmetric bool
	budget    budgetState
	signSelf  func(dmsg.Span) Proof

	clusters map[clusterKey]*cluster
	nodes    []*node     // every node, so ConnUp can walk them without the maps
	conns    []*Neighbor // open neighbors; order is arrival order until one leaves
	byPeer   map[Peer]*Neighbor
	self     *Advert

	slots     int   // slots handed out so far (see Neighbor.slot)
	freeSlots []int // slots of neighbors gone, for reuse

	seq     uint64    // tie-breaker for links and arrival order of conns
	links   int       // received advertisements + self
	relays  int       // open relays
	scratch []*Advert // selection buffer, reused under mu to avoid allocating per event
	work    uint64    // (node, conn) selections made: tests bound each event's cost with it
	closed  uint64    // relays closed, ever: with work and budget.opened, the cost (steps.go)
	holds   uint64    // times a stepped call released the mutex midway (steps.go)
	longest uint64    // the most work done in one hold of the mutex, for tests
}

// New returns an Engine configured by cfg. If cfg.Self is set, the
// advertisement exists immediately and is offered to every neighbor that
// comes up.
func New(cfg Config) *Engine {
	e := &Engine{
		log:      cfg.Logger,
		rnss:     cfg.Rnss,
		clusters: make(map[clusterKey]*cluster),
		byPeer:   make(map[Peer]*Neighbor),
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.budget.events, e.budget.metrics, e.budget.now = cfg.Events, cfg.Metrics, time.Now
	for e.rnss == 0 {
		e.rnss = rand.Uint32()
	}
	e.signSelf = cfg.SignSelf
	e.setLimits(cfg)
	if cfg.Self != nil {
		e.addSelf(*cfg.Self)
	}
	return e
}

func (e *Engine) setLimits(cfg Config) {
	e.maxRelays = cfg.MaxRelays
	if e.maxRelays <= 0 {
		e.maxRelays = DefaultMaxRelays
	}
	e.symmetric = cfg.Symmetric
	e.budget.lim.Store(&limits{Budget: cfg.Budget, spansPerConn: cfg.MaxSpansPerConn})
}

// Rnss returns this router's rnss (the one to put in our LNK_CONN).
func (e *Engine) Rnss() uint32 { return e.rnss }

// Reconfigure applies a reloaded configuration: MaxRelays, Symmetric,
// MaxSpansPerConn, Budget and Self. Rnss cannot change (every relay would have to
// be re-sent), so a different non-zero Rnss is refused with ErrRnssChange
// and nothing changes. The Logger is kept.
//
// Changing K or Symmetric re-selects every node on every neighbor: it is
// an operator action, so the full pass is acceptable here and nowhere else.
// A lower MaxSpansPerConn or Budget does not evict what is already held:
// it refuses what comes next until enough is withdrawn. A higher
// Budget.MaxRelays opens the relays that were waiting for it.
func (e *Engine) Reconfigure(cfg Config) error {
	e.mu.Lock()
	defer e.unlock()
	if cfg.Rnss != 0 && cfg.Rnss != e.rnss {
		return ErrRnssChange
	}
	k, sym := e.maxRelays, e.symmetric
	e.setLimits(cfg)
	e.replaceSelf(cfg.Self)
	if k != e.maxRelays || sym != e.symmetric {
		for _, n := range append([]*node(nil), e.nodes...) {
			e.updateNode(n)
		}
	}
	return nil
}

// SetSelf replaces the router's own advertisement (nil withdraws it).
func (e *Engine) SetSelf(s *dmsg.Span) {
	e.mu.Lock()
	defer e.unlock()
	e.replaceSelf(s)
}

func (e *Engine) replaceSelf(s *dmsg.Span) {
	old := e.self
	if old != nil && s != nil && old.span == selfSpan(*s, e.rnss) {
		return // unchanged: keep the relays (a reload must not flap them)
	}
	e.self = nil
	if s != nil {
		// The new one goes out before the old one is withdrawn, so peers
		// never see the node vanish when only its details changed.
		e.addSelf(*s)
	}
	if old != nil {
		e.detachLink(old)
		e.nodeChanged(old.node)
		e.log.Info("span: self advertisement withdrawn", zap.String("fs_label", old.span.FsLabel))
	}
}

func (e *Engine) addSelf(s dmsg.Span) {
	l := &Advert{span: selfSpan(s, e.rnss), seq: e.nextSeq()}
	if e.signSelf != nil {
		l.proof = e.signSelf(l.span)
	}
	e.self = l
	e.attachLink(l)
	e.nodeChanged(l.node)
	e.log.Info("span: self advertisement", zap.String("fs_label", s.FsLabel),
		zap.Stringer("pfs_fsid", s.PfsFsid), zap.Uint32("rnss", e.rnss))
}

// selfSpan is our advertisement as it is held and sent: dist 0 and our
// rnss, never accumulated (docs/PROTOCOL.md 4.3).
func selfSpan(s dmsg.Span, rnss uint32) dmsg.Span {
	s.Dist = 0
	s.Rnss = rnss
	return s
}

// Stats returns counts of what the engine holds.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Clusters: len(e.clusters),
		Nodes:    len(e.nodes),
		Links:    e.links,
		Relays:   e.relays,
		Conns:    len(e.conns),
		Starved:  e.budget.starved,
	}
}

func (e *Engine) nextSeq() uint64 {
	e.seq++
	return e.seq
}
