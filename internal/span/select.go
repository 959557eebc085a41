package span

import (
	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// relayRef keeps the link beside its relay so that comparing a selection
// with the relays in place touches no Relay.
type relayRef struct {
	link *Advert
	r    *Relay
}

func (nc *nodeConn) has(l *Advert) bool {
	for _, x := range nc.relays {
		if x.link == l {
			return true
		}
	}
	return false
}

func (nc *nodeConn) isRefused(l *Advert) bool {
	for _, x := range nc.refused {
		if x == l {
			return true
		}
	}
	return false
}

// updateNode re-selects n on every neighbor after its link set changed.
// A changed link set is also what lifts refusals (docs/PROTOCOL.md 4.4).
func (e *Engine) updateNode(n *node) {
	for _, c := range e.conns {
		if nc := n.stateFor(c); nc != nil {
			nc.refused = nil
		}
		e.reconcile(n, c)
	}
}

// reconcile makes the relays of (n, c) equal to the current selection. New
// relays are opened before unselected ones are closed (make before break):
// the peer then never sees the node vanish in between, which would send a
// needless withdrawal wave through the rest of the cluster.
//
// A selected link whose relay the relay budget holds back is missing; for
// each missing one, a relay of a link still held but no longer selected
// stays open in its place: a worse path is better than none while the
// budget is short. resume retries the missing ones.
func (e *Engine) reconcile(n *node, c *Neighbor) {
	e.work++
	nc := n.stateFor(c)
	want := e.selectLinks(n, c, nc, e.scratch[:0])
	missing := 0
	for _, l := range want {
		if c.dying {
			break
		}
		if nc != nil && nc.has(l) {
			continue
		}
		if !e.relayAllowed(l, c) {
			missing++
			continue
		}
		if r := e.openRelay(l, c); r != nil {
			if nc == nil {
				nc = n.grow(c)
			}
			nc.relays = append(nc.relays, relayRef{l, r})
		}
	}
	if nc != nil {
		e.dropUnselected(nc, want, missing)
		n.tidy(c)
	}
	clear(want) // the scratch buffer must not pin links
	e.scratch = want[:0]
}

// dropUnselected closes the relays of links no longer in want, except up
// to spare of them whose link is still held (stand-ins for missing ones).
func (e *Engine) dropUnselected(nc *nodeConn, want []*Advert, spare int) {
	kept := nc.relays[:0]
	for _, x := range nc.relays {
		switch {
		case containsLink(want, x.link):
			kept = append(kept, x)
		case spare > 0 && !x.link.dead:
			spare--
			kept = append(kept, x)
		default:
			e.closeRelay(x.r)
		}
	}
	clear(nc.relays[len(kept):])
	nc.relays = kept
	if len(kept) == 0 {
		nc.relays = nil // a node filtered out of c keeps no array for it
	}
}

func containsLink(ls []*Advert, l *Advert) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}

// selectLinks appends to buf the links of n that c should carry: the best
// K passing the filters, skipping (not stopping at) the ones that fail, plus
// with the symmetric option those tying with the K-th; only trusted ones
// when the node has any (verify.go).
func (e *Engine) selectLinks(n *node, c *Neighbor, nc *nodeConn, buf []*Advert) []*Advert {
	if !clusterPasses(n.cluster.key, &c.info) {
		return buf
	}
	var kth *Advert
	onlyTrusted := n.hasTrusted()
	for _, l := range n.links {
		if kth != nil && (!e.symmetric || !sameRank(l, kth)) {
			break // links are sorted: nothing after this can tie
		}
		if onlyTrusted && !l.trusted() && l.conn != nil {
			break // links are sorted: trusted ones come first, after our own
		}
		if !linkPasses(l, c) || (nc != nil && nc.isRefused(l)) {
			continue
		}
		buf = append(buf, l)
		if kth == nil && len(buf) == e.maxRelays {
			kth = l
		}
	}
	return buf
}

// clusterPasses applies the filters that depend only on the cluster:
// the peer_type bit of peer_mask (rule 3) and, when the neighbor is of
// the same peer type, its cluster id and label filters (rule 4).
func clusterPasses(k clusterKey, c *dmsg.Conn) bool {
	if !maskHas(c.PeerMask, k.peerType) {
		return false
	}
	if c.PeerType != k.peerType {
		return true
	}
	if c.PfsClid != uuid.Nil && c.PfsClid != k.clid {
		return false
	}
	return c.ClLabel == "" || c.ClLabel == k.label
}

// linkPasses applies the per-link filters: the dist limit (rule 1), never
// back where it came from (rule 2), the pfs_type bit (rule 3), and never
// to the node it advertises (rule 5: the neighbor's LNK_CONN names that
// node as its sender).
func linkPasses(l *Advert, c *Neighbor) bool {
	if l.span.Dist >= MaxDist || l.conn == c || isPeersOwn(l, c) {
		return false
	}
	return c.info.PfsMask == 0 && l.span.PfsType < 64 || maskHas(c.info.PfsMask, l.span.PfsType)
}

// maskHas reports whether bit t of mask is set; types of 64 and beyond
// have no bit and never pass.
func maskHas(mask uint64, t uint8) bool {
	return t < 64 && mask&(1<<t) != 0
}

// isPeersOwn reports whether l advertises the node at the other end of c:
// that peer never needs its own advertisement back, and a router refuses
// it (ErrOwnNode).
func isPeersOwn(l *Advert, c *Neighbor) bool {
	return c.info.PfsFsid != uuid.Nil && l.span.PfsFsid == c.info.PfsFsid
}
