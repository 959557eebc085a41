package span

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Relay is a LNK_SPAN transaction we opened on one neighbor to
// re-advertise one link. The daemon keeps the *Relay it was given in
// Peer.OpenSpan with its transaction state, to hand it back to RelayClosed.
type Relay struct {
	link  *Advert
	conn  *Neighbor
	tx    SpanTx
	msgid uint64
	dead  bool // closed by us or by the peer; later calls naming it are no-ops
}

// relaySpan is what a relay of l carries: the span with dist+1 and our
// rnss added (wrapping), or our own advertisement unchanged (dist 0, our
// rnss), as docs/PROTOCOL.md 4.3 says.
func (e *Engine) relaySpan(l *Advert) *dmsg.Span {
	s := l.span
	if l.conn != nil {
		s.Dist++
		s.Rnss += e.rnss
	}
	return &s
}

// openRelay sends a relay of l on c. On failure the link is dying: the
// neighbor is marked so nothing more is opened on it until ConnDown.
func (e *Engine) openRelay(l *Advert, c *Neighbor) *Relay {
	r := &Relay{link: l, conn: c}
	tx, err := c.peer.OpenSpan(e.relaySpan(l), r)
	if err != nil {
		c.dying = true
		e.log.Info("span: relay failed, link dying", zap.String("link", c.peer.ID()), zap.Error(err))
		return nil
	}
	r.tx, r.msgid = tx, tx.MsgID()
	if old := c.sent[r.msgid]; old != nil {
		// The daemon reused a msgid that is still open: a bug there, but
		// the newest relay is the one the peer will see.
		e.log.Error("span: relay msgid reused while open", zap.String("link", c.peer.ID()), zap.Uint64("msgid", r.msgid))
	}
	c.sent[r.msgid] = r
	e.chargeRelay(r)
	return r
}

// closeRelay sends our DELETE and forgets r. The caller removes r from its
// nodeConn.
func (e *Engine) closeRelay(r *Relay) {
	e.closed++
	r.dead = true
	if r.conn.sent[r.msgid] == r {
		delete(r.conn.sent, r.msgid)
	}
	r.tx.Close()
	e.unchargeRelay(r)
}

// RelayClosed is called when the peer DELETEd one of our relays (it refused
// or dropped it). We DELETE back through SpanTx.Close, drop the relay, and
// do not offer that link to that neighbor again until the node's link
// set or the neighbor changes (docs/PROTOCOL.md 4.4); the next passing link, if
// any, is offered instead. A relay we already closed, or one of a
// neighbor that went down, is ignored: the daemon may report every
// relay transaction it sees terminated.
func (e *Engine) RelayClosed(r *Relay) {
	if r == nil {
		return
	}
	e.mu.Lock()
	defer e.unlockFor(r.conn, e.cost()) // the peer that refused it pays for the re-selection
	if r.dead || r.conn.down {
		return
	}
	c, n := r.conn, r.link.node
	e.closeRelay(r)
	nc := n.stateFor(c) // never nil while r is open
	nc.relays = removeRelay(nc.relays, r)
	nc.refused = append(nc.refused, r.link)
	e.reconcile(n, c)
	if ce := e.log.Check(zapcore.DebugLevel, "span: relay refused by peer"); ce != nil {
		ce.Write(zap.String("link", c.peer.ID()), zap.Uint64("msgid", r.msgid),
			zap.String("fs_label", r.link.span.FsLabel))
	}
}

func removeRelay(rs []relayRef, r *Relay) []relayRef {
	for i, x := range rs {
		if x.r == r {
			copy(rs[i:], rs[i+1:])
			rs[len(rs)-1] = relayRef{}
			return rs[:len(rs)-1]
		}
	}
	return rs
}

// Origin is where a span we sent comes from: what a virtual circuit aimed
// at that span must be built on.
type Origin struct {
	From  Peer   // the neighbor it was received on; nil for our own advertisement
	MsgID uint64 // its msgid on that neighbor
	Dist  uint32 // its dist as received
	Label string // the node's fs_label
}

// RelayOrigin resolves a span we sent on p (a relay, by its msgid) to the
// received advertisement it re-advertises. For our own advertisement From is nil
// and Dist 0. ok is false if msgid is not an open relay on p.
func (e *Engine) RelayOrigin(p Peer, msgid uint64) (o Origin, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.byPeer[p]
	if c == nil {
		return Origin{}, false
	}
	r := c.sent[msgid]
	if r == nil {
		return Origin{}, false
	}
	l := r.link
	o.Label = l.span.FsLabel
	if l.conn == nil {
		return o, true
	}
	o.From, o.MsgID, o.Dist = l.conn.peer, l.msgid, l.span.Dist
	return o, true
}
