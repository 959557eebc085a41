package span

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// Budget bounds what peers can make the engine hold, across all of its
// neighbors. Each field is 0 for "unlimited" and is named after its key
// under limits: in the configuration. The per-neighbor bound on spans is
// Config.MaxSpansPerConn.
//
// Sharing: a cluster-wide budget spent first come, first served would let
// one flooding peer take all of it and lock every later advertisement out,
// a well-behaved leaf's included. So every budget is charged to the
// neighbor that asked for it (spans and nodes to the neighbor they
// arrived on, relays to the neighbor of the span they re-advertise) and
// no neighbor may hold more than what is still free: a neighbor
// holding h of a budget of max with total in use is refused once
// h >= max-total. One neighbor alone can take half of a budget; n
// neighbors flooding together take n/(n+1) of it, and the last
// 1/(n+1) stays free for everyone holding less, which is exactly the
// light, well-behaved peers. (This is the dynamic threshold of shared
// buffer switches: no eviction, O(1) per check, and it adapts to however
// many neighbors compete.) A router's link may hold twice what is free
// (Neighbor.share), so that a flood held to half of a budget at the router it
// reaches first still leaves room at the next one. Operators size each
// budget at twice what the busiest neighbour legitimately needs.
type Budget struct {
	// MaxNodes bounds the nodes held (our own included). A span that would
	// create a node beyond it is refused.
	MaxNodes int
	// MaxSpans bounds the spans received on all neighbors. A span beyond
	// it is refused.
	MaxSpans int
	// MaxRelays bounds the relays open on all neighbors (Config.MaxRelays
	// is K, per node and neighbor). A relay beyond it is not opened; its
	// node waits until relays close (see resume).
	MaxRelays int
	// MaxSpansPerNode bounds the spans one neighbor may hold for one node
	// (its paths to that node). A dmsgd neighbour sends at most its own K
	// per node, plus ties with the symmetric option; the bound keeps the
	// per-node work of every span event (insertion in the sorted link list,
	// selection) from growing with what one peer sends.
	MaxSpansPerNode int
	// MaxRefusals is how many spans a neighbor may have refused per
	// RefusalWindow (a token bucket: that many at once, refilled evenly
	// over the window). A neighbor that keeps opening spans past its
	// budget is a flood: SpanReceived then answers ErrRefusalFlood and the
	// daemon closes the link.
	MaxRefusals int
}

// RefusalWindow is the period over which Budget.MaxRefusals refills.
const RefusalWindow = time.Minute

// limitError is a span refused because a budget is spent. limit is the
// config key under limits: that is counted and logged.
type limitError struct{ limit, what string }

func (e *limitError) Error() string { return "span: " + e.what + " (limits." + e.limit + ")" }

// Refusals for a spent budget. Each one means the daemon refuses the span
// (REPLY|DELETE with PARAM) and leaves the link up, except
// ErrRefusalFlood, which closes it.
var (
	ErrTooManySpans = &limitError{"max_spans_per_link", "too many spans on this connection"}
	ErrSpanBudget   = &limitError{"max_spans", "cluster-wide span budget spent, or this connection's share of it"}
	ErrNodeBudget   = &limitError{"max_nodes", "cluster-wide node budget spent, or this connection's share of it"}
	ErrNodeSpans    = &limitError{"max_spans_per_node", "too many spans for one node on this connection"}
	ErrRefusalFlood = &limitError{"max_span_refusals", "connection keeps opening spans past its budget"}
)

// Limit returns the config key under limits: of a budget refusal from
// SpanReceived ("max_spans", ...), or "" when err is not one.
func Limit(err error) string {
	var le *limitError
	if errors.As(err, &le) {
		return le.limit
	}
	return ""
}

// budgetState is the engine's side of the budgets. The counts that the
// cheap check before the cluster mutex reads are atomics written under it;
// everything else is guarded by the cluster mutex.
type budgetState struct {
	lim     atomic.Pointer[limits]
	spans   atomic.Int64 // spans received and held, all neighbors
	events  *ratelog.Logger
	metrics *metrics.Metrics
	now     func() time.Time // tests replace it

	opened   uint64 // relays opened, ever: resume's measure of progress
	starved  int    // nodes on some neighbor's starved list
	rr       int    // where the next resume pass starts among the conns
	resuming bool   // a resume pass is retrying: do not count refusals again
}

// limits is the Budget in force plus the per-neighbor span bound, as one
// immutable value so the check before the mutex sees a consistent set.
type limits struct {
	Budget
	spansPerConn int
}

func (b *budgetState) limits() *limits { return b.lim.Load() }

// connCharge is what one neighbor is charged for.
type connCharge struct {
	spans    atomic.Int64 // mirrors len(Neighbor.links) for the check before the mutex
	nodes    int          // nodes it owns (see nodeBudget)
	relays   int          // open relays of spans received on it
	starved  starvedList  // nodes waiting for relay budget because of its spans
	refusals refusalBucket
}

// nodeBudget is a node's share of the budget bookkeeping.
type nodeBudget struct {
	// owner is the neighbor charged for the node: the one whose span
	// created it, then, when its last span of the node goes, the
	// neighbor of another span still held. nil for our own node.
	owner *Neighbor
	// starvedOn is the neighbor whose starved list holds the node; prev
	// and next link it there.
	starvedOn  *Neighbor
	prev, next *node
}

// fits reports whether c, holding held of a budget of max with total in
// use, may take one more: no neighbor may hold more than what is still
// free, or twice that for a router (see Budget).
func (c *Neighbor) fits(held, total, max int) bool {
	return max <= 0 || held < c.share()*(max-total)
}

// share is how many times what is still free of a budget the neighbor
// may hold. A router's link carries the advertisements of everything
// behind it, a flood at its far end included: that flood holds at most
// half of the far router's budgets (share 1), which must still leave room
// here for the rest of what that router relays, so a router may hold up to
// twice what is free (two thirds of a budget alone). A peer that claims
// to be a router to get more gets that, and no more: n of them leave
// 1/(2n+1) of each budget free.
func (c *Neighbor) share() int {
	if c.info.PeerType == dmsg.PeerRouter {
		return 2
	}
	return 1
}

// precheck refuses, without the cluster mutex, a span that the
// neighbor's own counts already rule out: a peer flooding past its
// budget is then refused without delaying any other link's span events.
// The counts may be a moment stale; admitSpan decides exactly.
func (e *Engine) precheck(c *Neighbor) error {
	lim := e.budget.limits()
	held := int(c.charge.spans.Load())
	switch {
	case lim.spansPerConn > 0 && held >= lim.spansPerConn:
		return ErrTooManySpans
	case !c.fits(held, int(e.budget.spans.Load()), lim.MaxSpans):
		return ErrSpanBudget
	}
	return nil
}

// admitSpan checks a span against every budget before anything is
// allocated for it. Called with the cluster mutex held.
func (e *Engine) admitSpan(c *Neighbor, n *node) error {
	lim := e.budget.limits()
	held := len(c.links)
	switch {
	case lim.spansPerConn > 0 && held >= lim.spansPerConn:
		return ErrTooManySpans
	case !c.fits(held, int(e.budget.spans.Load()), lim.MaxSpans):
		return ErrSpanBudget
	case n == nil && !c.fits(c.charge.nodes, len(e.nodes), lim.MaxNodes):
		return ErrNodeBudget
	case n != nil && lim.MaxSpansPerNode > 0 && n.heldBy(c) >= lim.MaxSpansPerNode:
		return ErrNodeSpans
	}
	return nil
}

// refuse counts a budget refusal and charges it to c's refusal bucket; it
// returns ErrRefusalFlood once the bucket is empty. Other errors pass
// through uncounted.
func (e *Engine) refuse(c *Neighbor, err error) error {
	limit := Limit(err)
	if limit == "" {
		return err
	}
	e.budget.metrics.LimitHit(limit)
	if max := e.budget.limits().MaxRefusals; max > 0 && !c.charge.refusals.take(e.budget.now(), max) {
		e.budget.metrics.LimitHit(ErrRefusalFlood.limit)
		return ErrRefusalFlood
	}
	return err
}

// findNode returns the node a span is for, nil when it is new.
func (e *Engine) findNode(ck clusterKey, nk nodeKey) *node {
	if cl := e.clusters[ck]; cl != nil {
		return cl.nodes[nk]
	}
	return nil
}

// heldBy counts the spans c holds for n.
func (n *node) heldBy(c *Neighbor) int {
	if nc := n.stateFor(c); nc != nil {
		return int(nc.held)
	}
	return 0
}

// chargeLink books a link that was just attached to its node.
func (e *Engine) chargeLink(l *Advert, created bool) {
	c := l.conn
	if c == nil {
		return // our own advertisement is never charged
	}
	l.node.grow(c).held++
	c.charge.spans.Add(1)
	e.budget.spans.Add(1)
	if created {
		l.node.budget.owner = c
		c.charge.nodes++
	}
}

// unchargeLink undoes chargeLink for a link just detached; when it was
// the owner's last span of the node, the node is charged to the
// neighbor of another span still held, if any.
func (e *Engine) unchargeLink(l *Advert) {
	c, n := l.conn, l.node
	if c == nil {
		// Our own advertisement withdrawn: the node, if others still
		// advertise it, is charged like any other from now on.
		e.recharge(n)
		return
	}
	nc := n.stateFor(c)
	nc.held--
	last := nc.held == 0
	n.tidy(c)
	c.charge.spans.Add(-1)
	e.budget.spans.Add(-1)
	if n.budget.owner != c || !last {
		return
	}
	c.charge.nodes--
	n.budget.owner = nil
	e.recharge(n)
}

// recharge charges an unowned node to the neighbor of a span of it
// still held, if any. The span detached last is no longer in n.links.
func (e *Engine) recharge(n *node) {
	if n.budget.owner != nil {
		return
	}
	for _, x := range n.links {
		if x.conn == nil {
			return // our own node is never charged
		}
		if !x.dead {
			n.budget.owner = x.conn
			x.conn.charge.nodes++
			return
		}
	}
}

// relayAllowed reports whether a relay of l may be opened now. Our own
// advertisement always may: it is one relay per neighbor, bounded by
// the link limit. When it may not, l's node waits on the starved list of
// l's neighbor until relays close.
func (e *Engine) relayAllowed(l *Advert, to *Neighbor) bool {
	src := l.conn
	max := e.budget.limits().MaxRelays
	if src == nil || src.fits(src.charge.relays, e.relays, max) {
		return true
	}
	e.starve(l.node, src)
	if !e.budget.resuming {
		e.budget.metrics.LimitHit("max_relays")
		e.budget.events.Warn("span.max_relays", "span relays held back: limits.max_relays reached; they are opened as relays close",
			zap.String("link", src.peer.ID()), zap.String("to", to.peer.ID()), zap.String("fs_label", l.span.FsLabel),
			zap.Int("relays", e.relays), zap.Int("charged_to_link", src.charge.relays), zap.Int("max_relays", max))
	}
	return false
}

// chargeRelay and unchargeRelay keep the relay counts.
func (e *Engine) chargeRelay(r *Relay) {
	e.relays++
	e.budget.opened++
	if src := r.link.conn; src != nil {
		src.charge.relays++
	}
}

func (e *Engine) unchargeRelay(r *Relay) {
	e.relays--
	if src := r.link.conn; src != nil {
		src.charge.relays--
	}
}

// starve puts n on src's starved list. A node held back for the spans of
// several neighbors waits on the list of the one charged least, whose
// turn in resume is likely to come first, and moves off the list of a
// neighbor that no longer holds any span of it.
func (e *Engine) starve(n *node, src *Neighbor) {
	if on := n.budget.starvedOn; on != nil {
		if on == src || on.charge.relays <= src.charge.relays && n.heldBy(on) > 0 {
			return
		}
		e.unstarve(n)
	}
	src.charge.starved.push(n, src)
	e.budget.starved++
}

// unstarve takes n off the starved list it is on.
func (e *Engine) unstarve(n *node) {
	if c := n.budget.starvedOn; c != nil {
		c.charge.starved.remove(n)
		e.budget.starved--
	}
}

// takeStarved empties c's starved list (c is going down) and returns the
// nodes that were on it, for rehomeStarved once c's spans are withdrawn.
func (e *Engine) takeStarved(c *Neighbor) []*node {
	var out []*node
	for n := c.charge.starved.head; n != nil; n = c.charge.starved.head {
		e.unstarve(n)
		out = append(out, n)
	}
	return out
}

// rehomeStarved re-selects, on every neighbor, the nodes taken off a
// departed neighbor's starved list that are still held: a node may have
// waited there for another neighbor's spans too, and must wait on that
// one's list now.
func (e *Engine) rehomeStarved(ns []*node) {
	for _, n := range ns {
		if n.idx >= len(e.nodes) || e.nodes[n.idx] != n {
			continue // removed with the neighbor's spans
		}
		for _, c := range e.conns {
			e.reconcile(n, c)
		}
	}
}

// resume opens relays held back by the relay budget, now that some may
// fit: it is called at the end of every engine call that can close relays
// or raise the budget. It visits the neighbors with starved nodes in
// turn, starting one further each time so that none is always served
// first, and re-selects each waiting node on every neighbor while the
// neighbor's spans fit the budget. A node that gets no relay opened and
// waits again on the same neighbor ends that neighbor's turn (its
// share is spent). Every step opens a relay or shortens a list, so a pass
// costs what it opens plus one check per neighbor.
func (e *Engine) resume() {
	max := e.budget.limits().MaxRelays
	if e.budget.starved == 0 || len(e.conns) == 0 || (max > 0 && e.relays >= max) {
		return
	}
	e.budget.resuming = true
	defer func() { e.budget.resuming = false }()
	e.budget.rr++
	for i := range len(e.conns) {
		c := e.conns[(e.budget.rr+i)%len(e.conns)]
		for c.charge.starved.head != nil && c.fits(c.charge.relays, e.relays, max) {
			n := c.charge.starved.head
			e.unstarve(n)
			before := e.budget.opened
			for _, dst := range e.conns {
				e.reconcile(n, dst)
			}
			if n.budget.starvedOn == c && e.budget.opened == before {
				break
			}
		}
	}
}

// unlock ends an engine call that may have freed relay budget: waiting
// relays are opened first.
func (e *Engine) unlock() {
	e.resume()
	e.mu.Unlock()
}

// starvedList is a FIFO of nodes, linked through their nodeBudget so that
// a node leaving the engine leaves its list in O(1).
type starvedList struct {
	head, tail *node
}

func (s *starvedList) push(n *node, c *Neighbor) {
	n.budget.prev, n.budget.next = s.tail, nil
	if s.tail != nil {
		s.tail.budget.next = n
	} else {
		s.head = n
	}
	s.tail = n
	n.budget.starvedOn = c
}

func (s *starvedList) remove(n *node) {
	if n.budget.prev != nil {
		n.budget.prev.budget.next = n.budget.next
	} else {
		s.head = n.budget.next
	}
	if n.budget.next != nil {
		n.budget.next.budget.prev = n.budget.prev
	} else {
		s.tail = n.budget.prev
	}
	n.budget.prev, n.budget.next, n.budget.starvedOn = nil, nil, nil
}

// refusalBucket is a neighbor's token bucket of refusals.
type refusalBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// take spends one refusal of a bucket of size max refilled over
// RefusalWindow, and reports false when none is left.
func (b *refusalBucket) take(now time.Time, max int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = float64(max)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(max), b.tokens+float64(max)*d.Seconds()/RefusalWindow.Seconds())
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
