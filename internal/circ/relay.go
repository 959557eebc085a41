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
)

// Config configures a Relay.
type Config struct {
	QueueBytes  int           // per circuit and direction; DefaultQueueBytes when 0
	Stall       time.Duration // DefaultStall when 0
	MaxCircuits int           // DefaultMaxCircuits when 0; circuits ending here count
	MaxPerLink  int           // circuits one link's peer may open; DefaultMaxPerLink when 0
	Logger      *zap.Logger
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
}

func (l *limits) set(queueBytes int, stall time.Duration, maxCircuits int) {
	l.queueBytes.Store(int64(cmp.Or(max(queueBytes, 0), DefaultQueueBytes)))
	l.stall.Store(int64(cmp.Or(max(stall, 0), DefaultStall)))
	l.maxCircuits.Store(int64(cmp.Or(max(maxCircuits, 0), DefaultMaxCircuits)))
}

// Target is where the span a LNK_CIRC names leads.
type Target struct {
	Next      *Table // the link the span was received on; nil when Local
	NextMsgID uint64 // the span's msgid there
	Label     string // the node's fs_label, for dumps
	Local     bool   // the span is this router's own advertisement
	// NoCircuits says the next hop cannot carry circuits: it speaks the
	// libdmsg 2014+ form of the protocol, which has no LNK_CIRC
	// (PROTOCOL.md section 10). The LNK_CIRC is refused with CANTCIRC
	// here and nothing is sent toward it.
	NoCircuits bool
}

// Resolver finds the span we sent on a link with a msgid. ok is false when
// there is no such open span (the LNK_CIRC gets CANTCIRC).
type Resolver func(on *Table, spanMsgID uint64) (t Target, ok bool)

// Endpoint accepts circuits that end at this router (its own node).
type Endpoint interface {
	AcceptCircuit(tx *iocom.Tx) iocom.TxHandler
}

// Relay is a router's set of relayed circuits.
type Relay struct {
	limits  limits
	log     *zap.Logger
	resolve Resolver
	local   Endpoint
	metrics *metrics.Metrics
	adm     admission // admit.go

	mu       sync.Mutex
	circuits map[uint64]*Circuit
	bySpan   map[spanRef][]*Circuit
	nextID   uint64
}

// spanRef names a span on a link: one we sent (side a) or received (b).
type spanRef struct {
	t     *Table
	msgid uint64
}

// New returns an empty Relay.
func New(cfg Config, resolve Resolver, local Endpoint) *Relay {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Relay{log: log, resolve: resolve, local: local, metrics: cfg.Metrics,
		circuits: make(map[uint64]*Circuit), bySpan: make(map[spanRef][]*Circuit)}
	r.limits.set(cfg.QueueBytes, cfg.Stall, cfg.MaxCircuits)
	r.adm.events, r.adm.metrics = cfg.Events, cfg.Metrics
	r.adm.setMaxPerLink(cfg.MaxPerLink)
	return r
}

// SetLimits applies reloaded limits to circuits set up from now on.
func (r *Relay) SetLimits(queueBytes int, stall time.Duration, maxCircuits int) {
	r.limits.set(queueBytes, stall, maxCircuits)
}

// Len returns the number of relayed circuits.
func (r *Relay) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.circuits)
}

// Accept handles a LNK_CIRC the peer on link t opens: it ends here, is
// relayed one hop further, or is refused with CANTCIRC.
func (r *Relay) Accept(t *Table, tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	h := r.accept(t, tx, m)
	if h != nil && m.Cmd&dmsg.FlagDelete != 0 {
		// Opened and closed in one message: the close must be passed on
		// like a later DELETE, or the circuit would stay set up (and
		// never reach its handler again) until a link under it dies.
		h(tx, m)
	}
	return h
}

func (r *Relay) accept(t *Table, tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
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
// circuit's slot (reserve) is released when it leaves the tables.
func (r *Relay) setup(t *Table, tx *iocom.Tx, spanMsgID uint64, dst Target) iocom.TxHandler {
	c := &Circuit{r: r, target: dst.Label, since: time.Now(), done: make(chan struct{})}
	c.a = &end{c: c, table: t, key: key{id: tx.MsgID()}, tx: tx, span: spanMsgID}
	c.b = &end{c: c, table: dst.Next, span: dst.NextMsgID}
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
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c.b.tx, c.b.key = btx, key{id: btx.MsgID(), local: true}
	next.ends[c.b.key] = c.b
	next.mu.Unlock()
	r.register(c)
	return func(tx *iocom.Tx, m *dmsg.Msg) { c.fromA(m) }
}

func (r *Relay) register(c *Circuit) {
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
// ("closed", or abortReason); later messages on it are dropped.
func (r *Relay) unregister(c *Circuit, reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	r.metrics.CircuitClosed(reason)
	r.release(c.a.table)
	c.a.table.remove(c.a)
	c.b.table.remove(c.b)
	r.mu.Lock()
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
}

// fromA handles the opener side's LNK_CIRC messages.
func (c *Circuit) fromA(m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return
	}
	c.pass(c.b, m)
}

// fromB handles the target side's answers: its acceptance goes back to the
// opener, its DELETE too.
func (c *Circuit) fromB(m *dmsg.Msg) {
	// Taking c.mu also waits until setup has filled in b and registered
	// the circuit (setup holds it until then).
	accepted := m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagDelete == 0
	c.mu.Lock()
	if accepted {
		c.open = true
	}
	c.mu.Unlock()
	if accepted {
		c.a.tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError, Error: m.Error}})
		return
	}
	if m.Cmd&dmsg.FlagDelete != 0 {
		c.pass(c.a, m)
	}
}

// pass carries a DELETE from one side to the other. An abort (a link lost
// under one side arrives as ABORT|DELETE LOSTLINK) takes the circuit out
// of the tables at once; an orderly close frees it once both LNK_CIRC
// transactions are finished, so data may still flow in the direction not
// yet closed.
func (c *Circuit) pass(to *end, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagAbort != 0 {
		to.tx.Abort(m.Error)
		c.r.unregister(c, abortReason(m.Error))
		return
	}
	to.tx.CloseError(m.Error)
	if c.a.tx.Done() && c.b.tx.Done() {
		c.r.unregister(c, "closed")
	}
}

// abort tears c down at once with code sent to both sides.
func (r *Relay) abort(c *Circuit, code uint32) {
	r.unregister(c, abortReason(code))
	c.a.tx.Abort(code)
	c.b.tx.Abort(code)
}

// SpanGone aborts, with LOSTLINK, every circuit built on a span that went
// away: one we sent on t with msgid (a relay we closed) or one we received
// on t (withdrawn). It only queues messages, so it may run under the span
// engine's mutex.
func (r *Relay) SpanGone(t *Table, msgid uint64) {
	r.mu.Lock()
	cs := slices.Clone(r.bySpan[spanRef{t, msgid}])
	r.mu.Unlock()
	for _, c := range cs {
		r.log.Info("circuit aborted: its span went away", c.fields()...)
		c.mu.Lock()
		code := dmsg.ErrCantCirc // still being set up
		if c.open {
			code = dmsg.ErrLostLink
		}
		c.mu.Unlock()
		r.abort(c, code)
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
func (r *Relay) Snapshot() []Info {
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
