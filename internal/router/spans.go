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
	if !connected {
		log.Warn("link closed: peer violated the protocol: LNK_SPAN before its LNK_CONN")
		tx.CloseError(dmsg.ErrParam)
		l.closeFor(downProtocol)
		return nil
	}
	if sc == nil {
		log.Warn("LNK_SPAN after the peer closed its LNK_CONN refused")
		tx.CloseError(dmsg.ErrParam)
		return nil
	}
	s, _ := m.Span()
	sl, err := l.r.engine.SpanReceived(sc, tx.MsgID(), s)
	if err != nil {
		l.spanRefused(err, s)
		tx.CloseError(dmsg.ErrParam)
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
		l.r.circuits.SpanGone(l.circuits, tx.MsgID())
		tx.Close()
	}
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
	tx, err := l.conn.Open(dmsg.NewSpanMsg(0, s), func(tx *iocom.Tx, m *dmsg.Msg) {
		l.relayMsg(tx, m, rel)
	})
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
	tx.Close()
}

// spanRefused logs and counts a LNK_SPAN the engine would not hold. Our
// own advertisement coming back is routine wherever the cluster has a
// cycle and the peer did not know our node id: the refusal makes the peer
// stop offering it (PROTOCOL.md 4.4), and it is logged at debug.
func (l *link) spanRefused(err error, s dmsg.Span) {
	log := l.conn.Logger()
	switch {
	case errors.Is(err, span.ErrOwnNode):
		l.r.metrics.SpanRefused("own_node")
		log.Debug("LNK_SPAN refused: an advertisement of this router's own node", zap.String("fs_label", s.FsLabel),
			zap.Uint32("dist", s.Dist))
	case errors.Is(err, span.ErrTooManySpans):
		l.r.metrics.SpanRefused("limit")
		log.Warn("LNK_SPAN refused: limits.max_spans_per_link reached", zap.String("fs_label", s.FsLabel))
	case errors.Is(err, span.ErrDuplicate):
		l.r.metrics.SpanRefused("duplicate")
		log.Warn("LNK_SPAN refused", zap.Error(err))
	default:
		l.r.metrics.SpanRefused("other")
		log.Warn("LNK_SPAN refused", zap.Error(err))
	}
}
