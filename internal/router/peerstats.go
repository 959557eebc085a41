package router

import (
	"errors"
	"io"
	"strings"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// Metrics name a link by who is at the other end, never by its link id:
// the id is new on every reconnect, the identity is not. peerIdent is that
// identity: the label and peer type the peer's LNK_CONN announced and
// which side dialled.
type peerIdent struct {
	peer      string // fs_label of the peer's LNK_CONN; "" until it arrives
	peerType  string // shell.PeerTypeName, or "unknown" until then
	direction string // "inbound" or "outbound"
}

// Directions.
const (
	dirInbound  = "inbound"
	dirOutbound = "outbound"
)

// maxPeerIdents bounds the identities the metrics keep series for. Labels
// are chosen by peers; beyond this many, new ones are counted under
// overflowPeer so that no peer can grow the scrape without bound.
const (
	maxPeerIdents = 256
	overflowPeer  = "_other"
)

// Why links go down: the reason label of dmsgd_link_downs_total.
const (
	downPeerClosed    = "peer_closed"       // end of stream, or the peer reset the connection
	downShutdown      = "shutdown"          // this router is stopping
	downTargetRemoved = "target_removed"    // an outbound target no longer wanted
	downSelfLink      = "self_link"         // the peer is this router itself
	downKeepalive     = "keepalive_timeout" // nothing received for keepalive.timeout
	downProtocol      = "protocol_error"    // the peer broke docs/PROTOCOL.md section 3
	downFraming       = "framing_error"     // bad magic, CRC, sequence or sizes (section 1)
	downInternalError = "internal_error"    // a panic in link code
	downFlood         = "limit"             // the peer kept going past a limit's refusals
	downIO            = "io_error"          // anything else the socket reported
	downSlowConsumer  = "slow_consumer"     // did not read what was queued for it (limits.queue_bytes_per_link)
	downOverBudget    = "over_budget"       // kept opening transactions past limits.max_transactions*
	downConnTimeout   = "conn_timeout"      // no LNK_CONN within limits.conn_timeout
	downDisplaced     = "displaced"         // pending, its slot taken by another source (pending.go)
)

// peerTotals are the counters of one identity over every link it ever
// had that has closed; the links still open are added at scrape time.
type peerTotals struct {
	rxMsgs, txMsgs, rxBytes, txBytes uint64
	ups                              uint64
	downs                            map[string]uint64 // by reason
}

func (t *peerTotals) add(s iocom.Stats) {
	t.rxMsgs += s.RxMsgs
	t.txMsgs += s.TxMsgs
	t.rxBytes += s.RxBytes
	t.txBytes += s.TxBytes
}

// peerBook is the totals of every identity seen. The router's mu guards
// it together with the link table, so that a closing link's traffic moves
// from "open" to "total" in one step a scrape cannot see half of.
type peerBook map[peerIdent]*peerTotals

// entry returns id's totals, folding a new identity into overflowPeer
// once maxPeerIdents exist. It reports the identity used and whether it
// was folded.
func (b peerBook) entry(id peerIdent) (peerIdent, *peerTotals, bool) {
	folded := false
	if b[id] == nil && len(b) >= maxPeerIdents {
		id.peer, folded = overflowPeer, true
	}
	t := b[id]
	if t == nil {
		t = &peerTotals{downs: make(map[string]uint64)}
		b[id] = t
	}
	return id, t, folded
}

// clone copies the book for a scrape.
func (b peerBook) clone() map[peerIdent]peerTotals {
	out := make(map[peerIdent]peerTotals, len(b))
	for id, t := range b {
		c := *t
		c.downs = make(map[string]uint64, len(t.downs))
		for k, v := range t.downs {
			c.downs[k] = v
		}
		out[id] = c
	}
	return out
}

// direction names which side set the link up.
func (l *link) direction() string {
	if l.opts.outbound {
		return dirOutbound
	}
	return dirInbound
}

// identify records the peer's identity when its LNK_CONN arrives and
// counts the link up. Called once per link.
func (l *link) identify(info dmsg.Conn) {
	id := peerIdent{peer: info.FsLabel, peerType: shell.PeerTypeName(info.PeerType), direction: l.direction()}
	r := l.r
	r.mu.Lock()
	id, t, folded := r.peers.entry(id)
	t.ups++
	l.mu.Lock()
	l.ident = id
	l.mu.Unlock()
	r.mu.Unlock()
	if folded {
		r.metrics.PeerSeriesOverflow()
	}
}

// identity returns the link's identity; links whose peer never sent a
// LNK_CONN are "unknown".
func (l *link) identity() (peerIdent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ident.peerType == "" {
		return peerIdent{peerType: "unknown", direction: l.direction()}, false
	}
	return l.ident, true
}

// closeFor closes the link for a reason of the router's own, which its
// down count then reports instead of what the socket says.
func (l *link) closeFor(reason string) {
	l.mu.Lock()
	if l.closeReason == "" {
		l.closeReason = reason
	}
	l.mu.Unlock()
	l.conn.Close()
}

// downReason says why the link went down, once it has.
func (l *link) downReason() string {
	l.mu.Lock()
	reason := l.closeReason
	l.mu.Unlock()
	if reason != "" {
		return reason
	}
	return linkErrorReason(l.conn.Err())
}

// linkErrorReason classifies the error a link went down with.
func linkErrorReason(err error) string {
	var pe *iocom.ProtocolError
	var dead *iocom.DeadLinkError
	var slow *iocom.SlowConsumerError
	var over *iocom.TxBudgetError
	switch {
	case err == nil:
		// An orderly end of stream, or our own Close without a reason.
		return downPeerClosed
	case errors.Is(err, iocom.ErrPeerClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return downPeerClosed
	case errors.As(err, &dead):
		return downKeepalive
	case errors.As(err, &slow):
		return downSlowConsumer
	case errors.As(err, &over):
		return downOverBudget
	case errors.As(err, &pe):
		return downProtocol
	case isFramingError(err):
		return downFraming
	case strings.Contains(err.Error(), "panic"):
		return downInternalError
	}
	return downIO
}

func isFramingError(err error) bool {
	for _, e := range []error{dmsg.ErrBadMagic, dmsg.ErrHeaderSize, dmsg.ErrAuxSize,
		dmsg.ErrHeaderCRC, dmsg.ErrAuxCRC, dmsg.ErrSequence, dmsg.ErrAuxDescr} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// countDown books a link that went down: its final traffic and why, and
// a protocol error when that was the reason. Called with r.mu held, in
// the same critical section that removes the link from r.links.
func (r *Router) countDown(l *link, reason string) {
	id, _ := l.identity()
	_, t, _ := r.peers.entry(id)
	t.add(l.conn.Stats())
	t.downs[reason]++
	switch reason {
	case downProtocol:
		r.metrics.ProtocolError("transaction")
	case downFraming:
		r.metrics.ProtocolError("framing")
	}
}
