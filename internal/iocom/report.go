package iocom

import (
	"errors"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Everything a peer can repeat at will is logged through the router's
// rate-limited event log (Config.Events): at most two lines per kind and
// window, however many links misbehave. The link's own "link down" line
// stays an unsampled info line with the reason: an operator must never
// lose a link going away. A link closed for a violation is counted by
// whoever reaps it, from Err (metrics.ProtocolError says so); what only
// closes a circuit inside the link is counted here.

// framingErrors are the decoder's errors: the peer broke the framing.
var framingErrors = []error{dmsg.ErrBadMagic, dmsg.ErrHeaderSize, dmsg.ErrAuxSize,
	dmsg.ErrHeaderCRC, dmsg.ErrAuxCRC, dmsg.ErrSequence, dmsg.ErrAuxDescr}

func isFramingError(err error) bool {
	for _, e := range framingErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reportPeerFault logs a fault of the peer that ends the link or, inside
// a circuit, that circuit (and counts the latter). The slow-consumer check
// reports its own (budget.go).
func (c *Link) reportPeerFault(err error, circuit uint64) {
	fields := []zap.Field{zap.String("link", c.cfg.ID), zap.String("peer", c.remote), zap.Error(err)}
	var pe *ProtocolError
	var te *TxBudgetError
	switch {
	case errors.As(err, &te):
		c.txBudgetFailed(te, circuit)
	case errors.As(err, &pe) && circuit != 0:
		c.cfg.Metrics.ProtocolError("transaction")
		c.cfg.Events.Warn("circuit_violation", "circuit closed: its far end violated the protocol",
			append(fields, zap.Uint64("circuit", circuit))...)
	case errors.As(err, &pe):
		c.cfg.Events.Warn("protocol_violation", "link closed: peer violated the protocol", fields...)
	case isFramingError(err):
		c.cfg.Events.Warn("framing_error", "link closed: framing error", fields...)
	}
}
