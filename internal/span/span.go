package span

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// SpanReceived records a LNK_SPAN CREATE that arrived on c with msgid and
// relays it where it is now among a node's best. On error nothing is
// recorded and the daemon refuses the span (REPLY|DELETE); ErrDuplicate is
// a protocol violation (docs/PROTOCOL.md 3) and should close the link, while
// ErrOwnNode (our own node's advertisement, looped back) is routine.
//
// A span beyond a budget (budget.go) is refused with an error that Limit
// names; a neighbor refused too often gets ErrRefusalFlood, and the
// daemon closes its link.
func (e *Engine) SpanReceived(c *Neighbor, msgid uint64, s dmsg.Span) (*Advert, error) {
	return e.SpanReceivedWith(c, msgid, s, Proof{})
}

// spanReceived is SpanReceived with the advertisement's proof (verify.go),
// called with the cluster mutex held.
func (e *Engine) spanReceived(c *Neighbor, msgid uint64, s dmsg.Span, p Proof) (*Advert, error) {
	if err := e.admit(c, msgid, &s); err != nil {
		return nil, e.refuse(c, err)
	}
	l := &Advert{conn: c, msgid: msgid, span: s, seq: e.nextSeq(), proof: p}
	c.links[msgid] = l
	e.attachLink(l)
	e.nodeChanged(l.node)
	if ce := e.log.Check(zapcore.DebugLevel, "span: received"); ce != nil {
		ce.Write(zap.String("link", c.peer.ID()), zap.Uint64("msgid", msgid),
			zap.String("fs_label", s.FsLabel), zap.Uint32("dist", s.Dist))
	}
	return l, nil
}

// admit checks a CREATE against the neighbor's state and limits before
// anything is allocated for it.
func (e *Engine) admit(c *Neighbor, msgid uint64, s *dmsg.Span) error {
	switch {
	case c.down:
		return ErrConnDown
	case msgid == 0:
		return ErrZeroMsgID
	case c.links[msgid] != nil:
		return ErrDuplicate
	case e.self != nil && s.PfsFsid == e.self.span.PfsFsid:
		return ErrOwnNode
	}
	return e.admitSpan(c, e.findNode(spanKeys(s)))
}

// SpanWithdrawn is called when the transaction of a received span ended
// (the peer's DELETE, or link loss): the link goes, every relay made from it
// is closed, and its node is re-selected (a worse path may now be relayed).
// A nil or already withdrawn link is ignored, so the daemon may call it for
// every span transaction it terminates even after ConnDown.
func (e *Engine) SpanWithdrawn(l *Advert) {
	if l == nil {
		return
	}
	e.mu.Lock()
	defer e.unlockFor(l.conn, e.cost()) // nil for our own: billed to no one
	if l.dead || l.conn == nil {
		return // our own advertisement is withdrawn with SetSelf(nil)
	}
	delete(l.conn.links, l.msgid)
	e.detachLink(l)
	e.nodeChanged(l.node)
	if ce := e.log.Check(zapcore.DebugLevel, "span: withdrawn"); ce != nil {
		ce.Write(zap.String("link", l.conn.peer.ID()), zap.Uint64("msgid", l.msgid),
			zap.String("fs_label", l.span.FsLabel))
	}
}
