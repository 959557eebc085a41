package circ

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// Defaults of the config file's limits.
const (
	DefaultQueueBytes  = 4 << 20
	DefaultStall       = 30 * time.Second
	DefaultMaxCircuits = 65536
	DefaultMemory      = 1 << 30
)

// Config configures a Switch.
type Config struct {
	// QueueBytes bounds, per circuit and direction, what a router holds
	// for a link without CIRC_WINDOW (docs/PROTOCOL.md 11.2): the window of a
	// legacy next hop, the backlog of a legacy sender. DefaultQueueBytes
	// when 0.
	QueueBytes int
	// Stall is how long a circuit may wait for credit (or, from a legacy
	// sender, stay over QueueBytes) before it is aborted with IO.
	// DefaultStall when 0.
	Stall       time.Duration
	MaxCircuits int // DefaultMaxCircuits when 0; circuits ending here count
	MaxPerLink  int // circuits one link's peer may open; DefaultMaxPerLink when 0
	// Memory bounds what all relayed circuits may make the router hold:
	// each reserves, per direction, the window it grants upstream (or
	// QueueBytes for a legacy sender) when it is set up, and a circuit
	// that does not fit is refused. DefaultMemory when 0.
	Memory int64
	Logger *zap.Logger
	// Events logs refusals a peer can repeat at will, once per kind and
	// window; nil drops them.
	Events *ratelog.Logger
	// Metrics counts limits hit; nil counts nothing.
	Metrics *metrics.Metrics
}

// limits are the Config's bounds in force; a reload may change them while
// circuits forward, so they are read atomically.
type limits struct {
	queueBytes  atomic.Int64
	stall       atomic.Int64
	maxCircuits atomic.Int64
	memory      atomic.Int64
}

func (l *limits) set(cfg Config) {
	l.queueBytes.Store(int64(cmp.Or(max(cfg.QueueBytes, 0), DefaultQueueBytes)))
	l.stall.Store(int64(cmp.Or(max(cfg.Stall, 0), DefaultStall)))
	l.maxCircuits.Store(int64(cmp.Or(max(cfg.MaxCircuits, 0), DefaultMaxCircuits)))
	l.memory.Store(cmp.Or(max(cfg.Memory, 0), DefaultMemory))
}

// NextHop is where the advertisement a LNK_CIRC names leads: the link it
// was received on, or this router itself.
type NextHop struct {
	Next      *Table // the link the span was received on; nil when Local
	NextMsgID uint64 // the span's msgid there
	Label     string // the node's fs_label, for dumps
	Local     bool   // the span is this router's own advertisement
	// NoCircuits says the next hop cannot carry circuits: it speaks the
	// libdmsg 2014+ form of the protocol, which has no LNK_CIRC
	// (docs/PROTOCOL.md section 10). The LNK_CIRC is refused with CANTCIRC
	// here and nothing is sent toward it.
	NoCircuits bool
}

// Resolver finds the span we sent on a link with a msgid. ok is false when
// there is no such open span (the LNK_CIRC gets CANTCIRC).
type Resolver func(on *Table, spanMsgID uint64) (t NextHop, ok bool)

// LocalNode accepts circuits that end at this router (its own node).
type LocalNode interface {
	AcceptCircuit(tx *iocom.Tx) iocom.TxHandler
}

// Locks of the circuit relay, outermost first: a Circuit's mu (held through
// its setup and its aborts), then the Switch's mu or a Table's mu, then the
// iocom link's. The span engine's mutex, when held, is outside them all
// (SpanGone runs under it). The router's lock order is written in full at
// the top of its router.go.

// Switch is a router's set of the circuits it forwards (a circuit switch).
type Switch struct {
	limits  limits
	log     *zap.Logger
	events  *ratelog.Logger
	resolve Resolver
	local   LocalNode
	metrics *metrics.Metrics
	adm     admission // admit.go

	mu       sync.Mutex
	circuits map[uint64]*Circuit
	bySpan   map[spanRef][]*Circuit
	nextID   uint64
	reserved int64 // limits.memory charged by the circuits in the tables
}

// spanRef names a span on a link: one we sent (side a) or received (b).
type spanRef struct {
	t     *Table
	msgid uint64
}

// New returns an empty Switch.
func New(cfg Config, resolve Resolver, local LocalNode) *Switch {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Switch{log: log, events: cfg.Events, resolve: resolve, local: local, metrics: cfg.Metrics,
		circuits: make(map[uint64]*Circuit), bySpan: make(map[spanRef][]*Circuit)}
	r.limits.set(cfg)
	r.adm.events, r.adm.metrics = cfg.Events, cfg.Metrics
	r.adm.setMaxPerLink(cfg.MaxPerLink)
	return r
}

// SetLimits applies reloaded limits (cfg's limit fields) to circuits set
// up from now on; a stall limit applies to waits that start from now on.
func (r *Switch) SetLimits(cfg Config) {
	r.limits.set(cfg)
	r.adm.setMaxPerLink(cfg.MaxPerLink)
}

// Len returns the number of relayed circuits.
func (r *Switch) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.circuits)
}

// Accept handles a LNK_CIRC the peer on link t opens: it ends here, is
// relayed one hop further, or is refused with CANTCIRC.
func (r *Switch) Accept(t *Table, tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	h := r.accept(t, tx, m)
	if h != nil && m.Cmd&dmsg.FlagDelete != 0 {
		// Opened and closed in one message: the close must be passed on
		// like a later DELETE, or the circuit would stay set up (and
		// never reach its handler again) until a link under it dies.
		h(tx, m)
	}
	return h
}

func (r *Switch) accept(t *Table, tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	body, err := m.Circ()
	if err != nil {
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	if limit := r.reserve(t); limit != "" {
		r.refuse(t, tx, limit)
		return nil
	}
	dst, ok := r.resolve(t, body.Target)
	switch {
	case !ok:
		r.release(t)
		t.conn.Logger().Debug("LNK_CIRC refused: no such span", zap.String("target", fmt.Sprintf("%016x", body.Target)))
		r.metrics.CircuitRefused("no_span")
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	case dst.Local:
		return r.acceptLocal(t, tx)
	case dst.NoCircuits:
		r.release(t)
		t.conn.Logger().Debug("LNK_CIRC refused: the next hop speaks libdmsg 2014+, which has no LNK_CIRC",
			zap.String("target", dst.Label), zap.String("next", dst.Next.name))
		r.metrics.CircuitRefused("libdmsg_next_hop")
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	return r.setup(t, tx, body.Target, dst)
}

// setup opens the next hop of a circuit and pairs it with the arriving one.
// The opener gets no answer until the target's reply comes back. The
// circuit's slot (reserve) and memory (reserveMemory) are released when
// it leaves the tables.
func (r *Switch) setup(t *Table, tx *iocom.Tx, spanMsgID uint64, dst NextHop) iocom.TxHandler {
	c := &Circuit{r: r, target: dst.Label, since: time.Now(), done: make(chan struct{})}
	c.a = &end{c: c, table: t, key: key{id: tx.MsgID()}, tx: tx, span: spanMsgID}
	c.b = &end{c: c, table: dst.Next, span: dst.NextMsgID}
	if !r.reserveMemory(c) {
		r.release(t)
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	// The next hop may answer as soon as the LNK_CIRC is queued, on its
	// link's reader. c.mu, held until the circuit is registered, makes
	// fromB wait: an abort it carried would otherwise unregister the
	// circuit before register put it in the tables for good. The next
	// link's table lock, held across Open and the insertion of its end,
	// makes the target's first messages on the circuit (it may answer and
	// send at once) find the end instead of being dropped as unknown.
	c.mu.Lock()
	defer c.mu.Unlock()
	next := dst.Next
	next.mu.Lock()
	btx, err := next.conn.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: dst.NextMsgID}),
		func(tx *iocom.Tx, m *dmsg.Msg) { c.fromB(m) })
	if err != nil {
		next.mu.Unlock()
		r.metrics.CircuitRefused("next_hop_down")
		r.release(t)
		r.unreserveMemory(c)
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c.b.tx, c.b.key = btx, key{id: btx.MsgID(), local: true}
	next.ends[c.b.key] = c.b
	next.mu.Unlock()
	r.register(c)
	return func(tx *iocom.Tx, m *dmsg.Msg) { c.fromA(m) }
}

func (r *Switch) register(c *Circuit) {
	r.mu.Lock()
	r.nextID++
	c.id = r.nextID
	r.circuits[c.id] = c
	for _, e := range []*end{c.a, c.b} {
		ref := spanRef{e.table, e.span}
		r.bySpan[ref] = append(r.bySpan[ref], c)
	}
	r.mu.Unlock()
	c.a.table.add(c.a)
	c.b.table.add(c.b)
	r.metrics.CircuitRelayed()
	r.log.Debug("circuit relayed", c.fields()...)
}

// unregister takes c out of every table once, counting how it ended
// ("closed", or abortReason), drops what its flows hold and gives back its
// slot and memory; later messages on it are dropped. It reports whether
// this call did it.
func (r *Switch) unregister(c *Circuit, reason string) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	r.metrics.CircuitClosed(reason)
	r.release(c.a.table)
	c.a.table.remove(c.a)
	c.b.table.remove(c.b)
	c.a.in.close()
	c.b.in.close()
	r.mu.Lock()
	r.reserved -= c.reserved
	delete(r.circuits, c.id)
	for _, e := range []*end{c.a, c.b} {
		ref := spanRef{e.table, e.span}
		cs := slices.DeleteFunc(r.bySpan[ref], func(x *Circuit) bool { return x == c })
		if len(cs) == 0 {
			delete(r.bySpan, ref)
		} else {
			r.bySpan[ref] = cs
		}
	}
	r.mu.Unlock()
	return true
}

// reserveMemory sets up c's flows and charges what they may hold to
// limits.circuit_memory; a circuit that does not fit is refused.
func (r *Switch) reserveMemory(c *Circuit) bool {
	qb := r.limits.queueBytes.Load()
	ab := newFlow(c, c.a, c.b, qb)
	ba := newFlow(c, c.b, c.a, qb)
	need := ab.reserve(qb) + ba.reserve(qb)
	limit := r.limits.memory.Load()
	r.mu.Lock()
	ok := r.reserved+need <= limit
	if ok {
		r.reserved += need
		c.reserved = need
	}
	used := r.reserved
	r.mu.Unlock()
	if !ok {
		r.metrics.LimitHit("circuit_memory")
		r.events.Warn("circuit_memory", "LNK_CIRC refused: limits.circuit_memory reached",
			zap.String("link", c.a.table.name), zap.String("peer", c.a.table.conn.RemoteAddr()),
			zap.Int64("circuit_memory", limit), zap.Int64("reserved", used), zap.Int64("needed", need))
	}
	return ok
}

// unreserveMemory gives back the memory of a circuit that never made it
// into the tables.
func (r *Switch) unreserveMemory(c *Circuit) {
	r.mu.Lock()
	r.reserved -= c.reserved
	c.reserved = 0
	r.mu.Unlock()
}

// SpanGone aborts, with LOSTLINK, every circuit built on a span that went
// away: one we sent on t with msgid (a relay we closed) or one we received
// on t (withdrawn). It only queues messages, so it may run under the span
// engine's mutex.
func (r *Switch) SpanGone(t *Table, msgid uint64) {
	r.mu.Lock()
	cs := slices.Clone(r.bySpan[spanRef{t, msgid}])
	r.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		code := dmsg.ErrCantCirc // still being set up
		if c.open {
			code = dmsg.ErrLostLink
		}
		c.mu.Unlock()
		// Both spans under a circuit may go at once (the target's
		// withdrawal ends the span we received and the relay we sent):
		// only the first abort is sent and logged.
		if r.abort(c, code) {
			r.log.Info("circuit aborted: its span went away", c.fields()...)
		}
	}
}

// Info describes one relayed circuit for dumps.
type Info struct {
	ID           uint64
	ALink, BLink string
	ACirc, BCirc uint64
	Target       string
	Open         bool
	Since        time.Time
	Msgs, Bytes  uint64
}

// Snapshot lists the relayed circuits by id.
func (r *Switch) Snapshot() []Info {
	r.mu.Lock()
	cs := make([]*Circuit, 0, len(r.circuits))
	for _, c := range r.circuits {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	slices.SortFunc(cs, func(a, b *Circuit) int { return cmp.Compare(a.id, b.id) })
	out := make([]Info, 0, len(cs))
	for _, c := range cs {
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		out = append(out, Info{ID: c.id, ALink: c.a.table.name, BLink: c.b.table.name,
			ACirc: c.a.key.id, BCirc: c.b.key.id, Target: c.target, Open: open,
			Since: c.since, Msgs: c.msgs.Load(), Bytes: c.bytes.Load()})
	}
	return out
}

func (c *Circuit) fields() []zap.Field {
	return []zap.Field{zap.Uint64("circuit", c.id), zap.String("a", c.a.table.name),
		zap.String("b", c.b.table.name), zap.String("target", c.target)}
}
