package circ

import (
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// DefaultMaxPerLink is Config.MaxPerLink when 0.
const DefaultMaxPerLink = 16384

// admission counts the circuits a router holds against limits.max_circuits
// and limits.max_circuits_per_link. Every circuit is charged to the link
// whose peer opened it: one relayed further, and one ending at this router
// (its shell endpoint holds a scope and a session for it) alike.
//
// A slot is reserved with compare-and-swap before the LNK_CIRC's target is
// even looked up, so concurrent setups on different links can never take
// more than the limit between them, and a link flooding LNK_CIRCs past
// its bound is refused without taking the span engine's mutex. As with
// the span budgets, a link may hold no more circuits than are still free
// (own < max - total), so one link alone takes at most half and the last
// share stays free for links holding fewer. A link to a router carries the
// circuits of everything behind it, a flood at its far end included, so
// it gets twice both bounds (Table.SetRouterPeer): a flood held to one
// link's bounds at the router it reached first still leaves room here.
type admission struct {
	maxPerLink atomic.Int64
	held       atomic.Int64 // circuits held, relayed and local
	events     *ratelog.Logger
	metrics    *metrics.Metrics
}

func (a *admission) setMaxPerLink(n int) {
	if n <= 0 {
		n = DefaultMaxPerLink
	}
	a.maxPerLink.Store(int64(n))
}

// SetMaxPerLink applies a reloaded limits.max_circuits_per_link to
// circuits set up from now on; a lower bound closes nothing.
func (r *Switch) SetMaxPerLink(n int) { r.adm.setMaxPerLink(n) }

// Held returns the circuits the router holds: relayed ones and those
// ending at this router.
func (r *Switch) Held() int { return int(r.adm.held.Load()) }

// Held returns the circuits charged to the link: those its peer opened
// that the router relays or ends.
func (t *Table) Held() int { return int(t.held.Load()) }

// SetRouterPeer says whether the link's peer is a router (its LNK_CONN's
// peer_type): such a link gets twice the circuit bounds (see admission).
func (t *Table) SetRouterPeer(on bool) { t.routerPeer.Store(on) }

// reserve takes a slot for a circuit the peer on t opens. It returns the
// limit that refuses it, or "" with the slot taken: the caller either
// keeps it until the circuit ends or gives it back with release.
func (r *Switch) reserve(t *Table) string {
	share := int64(1)
	if t.routerPeer.Load() {
		share = 2
	}
	per := share * r.adm.maxPerLink.Load()
	var own int64
	for {
		own = t.held.Load()
		if own >= per {
			return "max_circuits_per_link"
		}
		if t.held.CompareAndSwap(own, own+1) {
			break
		}
	}
	max := r.limits.maxCircuits.Load()
	for {
		total := r.adm.held.Load()
		if own >= share*(max-total) {
			t.held.Add(-1)
			return "max_circuits"
		}
		if r.adm.held.CompareAndSwap(total, total+1) {
			return ""
		}
	}
}

// release gives back a slot reserve took on t.
func (r *Switch) release(t *Table) {
	t.held.Add(-1)
	r.adm.held.Add(-1)
}

// refuse answers a LNK_CIRC beyond limit with CANTCIRC, counts it and
// logs it at most twice per window, however fast a peer repeats it.
func (r *Switch) refuse(t *Table, tx *iocom.Tx, limit string) {
	r.adm.metrics.LimitHit(limit)
	r.adm.events.Warn("circ."+limit, "LNK_CIRC refused: limits."+limit+" reached",
		zap.String("link", t.name), zap.String("peer", t.conn.RemoteAddr()),
		zap.Int64("link_circuits", t.held.Load()), zap.Int64("circuits", r.adm.held.Load()),
		zap.Int64("max_circuits", r.limits.maxCircuits.Load()), zap.Int64("max_circuits_per_link", r.adm.maxPerLink.Load()))
	tx.CloseError(dmsg.ErrCantCirc)
}

// acceptLocal hands a circuit that ends here to the endpoint, keeping its
// slot until the transaction's terminating message (the peer's DELETE, or
// link loss) has reached the endpoint's handler, which runs only on t's
// reader goroutine.
func (r *Switch) acceptLocal(t *Table, tx *iocom.Tx) iocom.TxHandler {
	h := r.local.AcceptCircuit(tx)
	if h == nil {
		r.release(t)
		return nil
	}
	held := true
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		h(tx, m)
		if held && m.Cmd&dmsg.FlagDelete != 0 {
			held = false
			r.release(t)
		}
	}
}
