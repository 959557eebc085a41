package span

import (
	"slices"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Proof is what the daemon learned checking the signature of an
// advertisement (docs/PROTOCOL.md 11.3). The engine does no cryptography:
// it ranks and relays by what the daemon tells it.
type Proof struct {
	// Verified says the advertisement is signed by a key the router pins
	// for its node, along a path whose every hop is signed.
	Verified bool
	// Seq is the origin's sequence number (meaningful when Verified).
	Seq uint64
	// Record is the signed record as received, which relays carry on
	// (the daemon appends its hop); nil for an unsigned advertisement.
	// It is never modified.
	Record []byte
}

// Trust, in the order links of a node are ranked (docs/PROTOCOL.md 11.3): our
// own advertisement first, then verified links before every other, then
// (dist, rnss). A verified link is trusted only while its Seq is the
// newest verified Seq of its node: an older one is a replay of what the
// node signed before it signed anew. When a node has a trusted link, only
// trusted links are selected for relaying: an advertisement that cannot
// be verified never travels beside, or instead of, one that can.

// trusted reports whether l counts as verified for ranking and selection.
func (l *Advert) trusted() bool {
	return l.proof.Verified && l.node != nil && l.proof.Seq >= l.node.maxSeq
}

// Verified reports whether l counts as verified: signed by a key pinned
// for its node, with the node's newest sequence number. Call it with the
// engine's mutex held (from a Peer method) or on a Snapshot instead.
func (l *Advert) Verified() bool { return l.trusted() }

// Proof returns what the daemon said of the advertisement a relay
// carries: for our own, what Config.SignSelf made. It is for Peer.OpenSpan,
// which runs under the engine's mutex.
func (r *Relay) Proof() Proof { return r.link.proof }

// SpanReceivedWith is SpanReceived for an advertisement whose signature
// the daemon checked: p says what it found.
func (e *Engine) SpanReceivedWith(c *Neighbor, msgid uint64, s dmsg.Span, p Proof) (*Advert, error) {
	if err := e.precheck(c); err != nil {
		return nil, e.refuse(c, err)
	}
	e.mu.Lock()
	defer e.unlockFor(c, e.cost()) // the span's fan-out is billed to c (steps.go)
	return e.spanReceived(c, msgid, s, p)
}

// hasTrusted reports whether the node has a trusted received advertisement. Adverts
// are ranked trusted first after our own, so the first received one
// tells.
func (n *node) hasTrusted() bool {
	for _, l := range n.links {
		if l.conn != nil {
			return l.trusted()
		}
	}
	return false
}

// refreshTrust recomputes the node's newest verified Seq and, when it
// changed, re-sorts its links. It reports whether the order may have
// changed.
func (n *node) refreshTrust() bool {
	var newest uint64
	for _, l := range n.links {
		if l.proof.Verified && l.proof.Seq > newest {
			newest = l.proof.Seq
		}
	}
	if newest == n.maxSeq {
		return false
	}
	n.maxSeq = newest
	n.sortLinks()
	return true
}

// sortLinks restores the node's link order after trust changed.
func (n *node) sortLinks() {
	slices.SortStableFunc(n.links, func(a, b *Advert) int {
		switch {
		case a.before(b):
			return -1
		case b.before(a):
			return 1
		}
		return 0
	})
}

// Reverify asks judge anew about every received advertisement, after the
// keys the router pins changed: judge returns the Proof that now holds
// (it is called under the engine's mutex and must not call the engine).
// Nodes whose ranking changed are re-selected on every neighbor. It is
// an operator action (a reload), so the full pass is acceptable. Relays
// it closes free relay budget for those waiting, as any engine call does.
func (e *Engine) Reverify(judge func(s dmsg.Span, old Proof) Proof) {
	e.mu.Lock()
	defer e.unlock()
	for _, n := range slices.Clone(e.nodes) {
		before := slices.Clone(n.links)
		trustedBefore := trustSet(n)
		for _, l := range n.links {
			if l.conn != nil {
				l.proof = judge(l.span, l.proof)
			}
		}
		n.refreshTrust()
		n.sortLinks()
		if !slices.Equal(before, n.links) || !slices.Equal(trustedBefore, trustSet(n)) {
			e.updateNode(n)
		}
	}
}

// trustSet lists which of the node's links are trusted, in link order.
func trustSet(n *node) []bool {
	out := make([]bool, len(n.links))
	for i, l := range n.links {
		out[i] = l.trusted()
	}
	return out
}
