package router

import (
	"errors"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/span"
)

// acceptSpan handles a LNK_SPAN the peer opens: hand it to the engine and
// acknowledge it, or refuse it.
func (l *link) acceptSpan(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	l.mu.Lock()
	sc, connected := l.spanConn, l.peer != nil
	l.mu.Unlock()
	log := l.conn.Logger()
	if l.conn.Closing() {
		// Closed (a flood, a violation) with frames still being read:
		// refuse them without counting, logging or asking the engine.
		tx.CloseError(dmsg.ErrParam)
		return nil
	}
	if !connected {
		l.r.events.Warn("span.before_conn", "link closed: peer violated the protocol: LNK_SPAN before its LNK_CONN", l.fields()...)
		tx.CloseError(dmsg.ErrParam)
		l.closeFor(downProtocol)
		return nil
	}
	if sc == nil {
		l.r.events.Warn("span.after_conn", "LNK_SPAN after the peer closed its LNK_CONN refused", l.fields()...)
		tx.CloseError(dmsg.ErrParam)
		return nil
	}
	s, _ := m.Span()
	proof, err := l.judgeSpan(m, &s)
	if err != nil {
		l.spanRefusedForTrust(&s, err)
		tx.CloseError(dmsg.ErrParam)
		return nil
	}
	sl, err := l.r.engine.SpanReceivedWith(sc, tx.MsgID(), s, proof)
	l.chargeWork(sc, true) // its fan-out to every other link (churn.go)
	if err != nil {
		l.spanRefused(tx, &s, err)
		return nil
	}
	if m.Cmd&dmsg.FlagDelete != 0 { // a span withdrawn in its own CREATE
		l.r.engine.SpanWithdrawn(sl)
		l.r.circuits.SpanGone(l.circuits, tx.MsgID())
		tx.Close()
		return nil
	}
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	tx.Uncharge() // limits.max_spans_per_link and the span budgets hold it now
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete == 0 {
			log.Debug("in-stream message of a received span ignored", zap.String("cmd", dmsg.CmdString(m.Cmd)))
			return
		}
		l.r.engine.SpanWithdrawn(sl)
		l.chargeWork(sc, true)
		l.r.circuits.SpanGone(l.circuits, tx.MsgID())
		tx.Close()
	}
}

// spanRefused refuses a LNK_SPAN the engine did not take (REPLY|DELETE
// with PARAM), logging it once per kind and window: a flood of refusals
// writes two lines, the metric (counted by the engine) counts each. A link
// that keeps opening spans past its budget is closed.
func (l *link) spanRefused(tx *iocom.Tx, s *dmsg.Span, err error) {
	tx.CloseError(dmsg.ErrParam)
	fields := append(l.fields(), zap.String("fs_label", s.FsLabel))
	switch limit := span.Limit(err); {
	case errors.Is(err, span.ErrOwnNode):
		// Routine: a neighbour that has not yet seen our LNK_CONN, or a
		// libdmsg peer, offers our own advertisement back.
		l.r.metrics.SpanRefused("own_node")
		l.conn.Logger().Debug("LNK_SPAN refused: an advertisement of this router's own node",
			zap.String("fs_label", s.FsLabel), zap.Uint32("dist", s.Dist))
	case errors.Is(err, span.ErrRefusalFlood):
		l.r.metrics.SpanRefused("limit")
		l.r.events.Warn("span.refusal_flood", "link closed: it kept opening spans past its budget (limits.max_span_refusals)", fields...)
		l.closeFor(downFlood)
	case limit != "":
		// limit is one of the engine's constants, never peer text.
		l.r.metrics.SpanRefused("limit")
		l.r.events.Warn("span."+limit, "LNK_SPAN refused: limits."+limit+" reached", fields...)
	case errors.Is(err, span.ErrDuplicate):
		l.r.metrics.SpanRefused("duplicate")
		l.r.events.Warn("span.duplicate", "LNK_SPAN refused", append(fields, zap.Error(err))...)
	default:
		l.r.metrics.SpanRefused("other")
		l.r.events.Warn("span.refused", "LNK_SPAN refused", append(fields, zap.Error(err))...)
	}
}

// fields name the link in rate-limited log lines, as the link's own
// logger does in its lines.
func (l *link) fields() []zap.Field {
	return []zap.Field{zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr())}
}

// relayTx is the engine's handle on a relay transaction.
type relayTx struct {
	l  *link
	tx *iocom.Tx
}

func (t relayTx) MsgID() uint64 { return t.tx.MsgID() }

// Close withdraws the relay, and with it every circuit built on it.
func (t relayTx) Close() {
	t.tx.Close()
	t.l.r.circuits.SpanGone(t.l.circuits, t.tx.MsgID())
}

// OpenSpan sends a relay of a span on this link (span.Peer). It runs under
// the engine's mutex and only queues.
func (l *link) OpenSpan(s *dmsg.Span, rel *span.Relay) (span.SpanTx, error) {
	m := dmsg.NewSpanMsg(0, s)
	h := func(tx *iocom.Tx, m *dmsg.Msg) { l.relayMsg(tx, m, rel) }
	var tx *iocom.Tx
	var err error
	if finish := l.signRelay(m, rel); finish != nil {
		tx, err = l.conn.OpenFinished(m, finish, h)
	} else {
		tx, err = l.conn.Open(m, h)
	}
	if err != nil {
		return nil, err
	}
	return relayTx{l, tx}, nil
}

// relayMsg handles the peer's answers to one of our relays. A DELETE from
// the peer means it dropped the relay; the engine answers and picks
// another path. Relays of a link that is going down are cleaned up by the
// engine when the peer's LNK_CONN terminates.
func (l *link) relayMsg(tx *iocom.Tx, m *dmsg.Msg, rel *span.Relay) {
	if m.Cmd&dmsg.FlagDelete == 0 || m.Error == dmsg.ErrLostLink && l.conn.Closing() {
		return
	}
	l.r.engine.RelayClosed(rel)
	l.mu.Lock()
	sc := l.spanConn
	l.mu.Unlock()
	l.chargeWork(sc, true) // the peer refused it: the re-selection is its cost
	tx.Close()
}
