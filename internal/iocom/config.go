package iocom

import (
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// Defaults of docs/PROTOCOL.md 3.2 and the config file's limits.
const (
	DefaultKeepaliveInterval = time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
	DefaultQueueBytes        = 16 << 20
)

// Config configures one Link. The zero value is usable apart from Handler,
// which defaults to refusing every transaction.
type Config struct {
	// ID names the link in logs and dumps, e.g. "L3".
	ID string

	// Remote names the peer in logs; the stream's remote address when
	// empty (unix socket peers have none worth printing).
	Remote string

	// KeepaliveInterval is how long the link may stay silent before a
	// LNK_PING is sent: 0 means the default, negative disables pings.
	KeepaliveInterval time.Duration

	// KeepaliveTimeout closes a link that received nothing for this long:
	// 0 means the default, negative disables the check (for peers that
	// never ping).
	KeepaliveTimeout time.Duration

	// QueueBytes is the link's outbound queue budget (budget.go): senders
	// that wait for room (WaitRoom) wait for the queue to fall below it,
	// the reader stops reading while the replies queued for the peer
	// exceed it, and a queue over it that does not drain for
	// SlowConsumerGrace closes the link. Queueing itself never blocks or
	// fails.
	QueueBytes int

	// SlowConsumerGrace is how long the queue may stay over QueueBytes
	// without shrinking before the link is closed as a slow consumer: 0
	// means DefaultSlowConsumerGrace, negative disables the check.
	SlowConsumerGrace time.Duration

	// MaxTransactions bounds the transactions the peer may hold open on
	// the link, in every circuit scope, refused ones included until the
	// peer closes them (txbudget.go); 0 bounds nothing.
	MaxTransactions int

	// Transactions is the router-wide pool those transactions are also
	// taken from, shared by all of a router's links; nil bounds nothing.
	Transactions *TxPool

	// WorkRate is how many units of work per second the peer may make
	// the link's reader do, in bursts of WorkBurst (rate.go): one unit
	// per message handled, plus what handlers add with Link.Spend. A
	// peer past it is slowed: its reader waits. 0 meters nothing;
	// WorkBurst 0 means one second's worth.
	WorkRate  int
	WorkBurst int

	// Handler receives new transactions and one-way messages.
	Handler Handler

	// Forward, if set, is offered every message whose circuit is not 0
	// before the state machine sees it, with only its header read. It
	// consumes the message by relaying it (Frame.RelayTo) and then returns
	// true; returning false leaves the message to this link. A router
	// relays circuits this way.
	Forward func(c *Link, f *Frame) bool

	// Logger receives link events; nil means no logging.
	Logger *zap.Logger

	// Events logs what a peer can repeat at will (refusals, violations)
	// once per kind and window; nil drops those lines. It is shared by
	// the router's links.
	Events *ratelog.Logger

	// Metrics counts limits hit and protocol errors; nil counts nothing.
	Metrics *metrics.Metrics
}

func (cfg *Config) keepaliveInterval() time.Duration {
	if cfg.KeepaliveInterval == 0 {
		return DefaultKeepaliveInterval
	}
	return cfg.KeepaliveInterval
}

func (cfg *Config) keepaliveTimeout() time.Duration {
	if cfg.KeepaliveTimeout == 0 {
		return DefaultKeepaliveTimeout
	}
	return cfg.KeepaliveTimeout
}

func (cfg *Config) slowConsumerGrace() time.Duration {
	if cfg.SlowConsumerGrace == 0 {
		return DefaultSlowConsumerGrace
	}
	return cfg.SlowConsumerGrace
}

func (cfg *Config) queueBytes() int {
	if cfg.QueueBytes <= 0 {
		return DefaultQueueBytes
	}
	return cfg.QueueBytes
}

// TxHandler receives the messages of one transaction after its opening
// message: in-stream messages, and exactly one terminating message (the
// peer's DELETE, or a synthesized ABORT|DELETE with LOSTLINK when the link
// or circuit dies). It runs on the Link's reader goroutine.
type TxHandler func(tx *Tx, m *dmsg.Msg)

// Handler receives what arrives on a Link outside existing transactions.
type Handler interface {
	// Accept is called with each transaction the peer opens and its
	// CREATE message (which may also carry DELETE). It returns the
	// handler for the transaction's later messages, or nil to refuse it:
	// the Link then answers LNK_ERROR|REPLY|CREATE|DELETE with NOSUPP
	// unless Accept already replied.
	Accept(tx *Tx, m *dmsg.Msg) TxHandler

	// OneWay is called with each one-way message except LNK_PAD and the
	// LNK_PINGs the Link answers itself (their replies are passed on).
	OneWay(c *Link, m *dmsg.Msg)
}

// refuseAll is the Handler of a Link configured without one.
type refuseAll struct{}

func (refuseAll) Accept(*Tx, *dmsg.Msg) TxHandler { return nil }
func (refuseAll) OneWay(*Link, *dmsg.Msg)         {}
