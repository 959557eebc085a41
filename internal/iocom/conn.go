package iocom

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Locks of a Link: mu guards the state machine and the outbound queue and
// is the innermost lock of a router (nothing is taken while it is held, no
// handler runs under it). wmu owns the socket's write side; it is taken
// before mu, never under it, by the writer goroutine, or with TryLock
// only by another link's relaying reader, so that only the writer ever
// waits for its peer's socket.

// Link is one DMSG link over a byte stream.
type Link struct {
	cfg    Config
	nc     net.Conn
	log    *zap.Logger
	remote string
	since  time.Time

	mu        sync.Mutex
	dead      bool // no new states or messages: the link is going down
	root      *Scope
	scopes    map[circuitKey]*Scope
	nextMsgID uint64
	win       windows  // per-circuit flow control in force (window.go)
	ctl       []outMsg // outbound control class, in send order (queue.go)
	q         []outMsg // outbound circuit data class, in send order, from qHead
	qHead     int
	qBytes    int // queued plus being written
	finishing int // queued messages with a finish (OpenFinished): the writer's alone
	qb        queueBudget
	txs       txCounts // transactions the peer holds open (txbudget.go)
	room      chan struct{}
	drained   chan struct{} // closed when the queue is empty and flushed

	wake       chan struct{} // cap 1: the queue has new messages
	closing    chan struct{} // closed by Close
	closeOnce  sync.Once
	writerDone chan struct{}
	done       chan struct{}
	err        atomic.Pointer[error]

	// The reader goroutine's own.
	dec         *dmsg.Decoder
	rxDebug     bool                         // log every message received
	rx          struct{ msgs, bytes uint64 } // counted here, published to rxMsgs, rxBytes
	frame       Frame                        // the circuit message offered to Forward
	stages      []*stage                     // relayed, not yet queued on the links relayed to
	spareStages []*stage
	relayedTo   []*Link // writers to wake when our input drains
	work        workMeter

	// The write side of the socket belongs to whoever holds wmu: the
	// writer goroutine, or a relaying reader sending a small burst itself.
	wmu              sync.Mutex
	out              *outBuf
	enc              *dmsg.Encoder
	wbatch           []outMsg
	lastSend         atomic.Int64 // unix nanoseconds of the last write, for keepalive
	repliesOver      atomic.Bool  // replies queued exceed the budget (budget.go)
	rxMsgs, txMsgs   atomic.Uint64
	rxBytes, txBytes atomic.Uint64
}

// NewLink wraps an established stream. Call Start to run it.
func NewLink(nc net.Conn, cfg Config) *Link {
	if cfg.Handler == nil {
		cfg.Handler = refuseAll{}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	remote := cfg.Remote
	if a := nc.RemoteAddr(); remote == "" && a != nil && a.String() != "" && a.String() != "@" {
		remote = a.String()
	}
	if remote == "" {
		remote = "?"
	}
	c := &Link{
		cfg: cfg, nc: nc, remote: remote, since: time.Now(),
		log:        log.With(zap.String("link", cfg.ID), zap.String("peer", remote)),
		scopes:     make(map[circuitKey]*Scope),
		wake:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.work.init(float64(cfg.WorkRate), cfg.WorkBurst)
	c.out = newOutBuf(nc)
	c.enc = dmsg.NewEncoder(c.out)
	c.lastSend.Store(time.Now().UnixNano())
	c.root = newScope(c, rootKey, cfg.Handler)
	c.scopes[rootKey] = c.root
	return c
}

// Start runs the link's reader and writer goroutines.
func (c *Link) Start() {
	go c.writeLoop()
	go c.readLoop()
}

// ID returns the link's id.
func (c *Link) ID() string { return c.cfg.ID }

// RemoteAddr returns the peer's address as text.
func (c *Link) RemoteAddr() string { return c.remote }

// Since returns when the link was set up.
func (c *Link) Since() time.Time { return c.since }

// Logger returns the link's logger, which names the link and the peer.
func (c *Link) Logger() *zap.Logger { return c.log }

// Done is closed once the link is down: both goroutines have exited and
// every state on it has been terminated.
func (c *Link) Done() <-chan struct{} { return c.done }

// Err returns why the link went down (nil for a clean end of stream or a
// local Close), valid once Done is closed.
func (c *Link) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats counts the link's traffic.
type Stats struct {
	RxMsgs, TxMsgs, RxBytes, TxBytes uint64
	OpenTx                           int
}

// Stats returns the link's counters.
func (c *Link) Stats() Stats {
	c.mu.Lock()
	n := 0
	for _, s := range c.scopes {
		n += len(s.local) + len(s.remote)
	}
	c.mu.Unlock()
	return Stats{RxMsgs: c.rxMsgs.Load(), TxMsgs: c.txMsgs.Load(),
		RxBytes: c.rxBytes.Load(), TxBytes: c.txBytes.Load(), OpenTx: n}
}

// Close takes the link down at once: queued messages are dropped. It is
// safe to call from any goroutine, any number of times; the states on the
// link are terminated by the reader before Done is closed.
func (c *Link) Close() error {
	c.fail(nil)
	return nil
}

// Shutdown waits until everything queued so far has been written (or ctx
// ends), then closes the link.
func (c *Link) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if c.drained == nil {
		c.drained = make(chan struct{})
		if c.queueEmptyLocked() && c.qBytes == 0 {
			close(c.drained)
		}
	}
	ch := c.drained
	c.mu.Unlock()
	c.kick()
	var err error
	select {
	case <-ch:
	case <-c.closing:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.Close()
	return err
}

// fail records the first reason the link goes down and closes the stream,
// which ends both goroutines.
func (c *Link) fail(err error) {
	c.closeOnce.Do(func() {
		if err != nil {
			c.err.Store(&err)
		}
		c.mu.Lock()
		c.dead = true
		c.stopSlowCheckLocked()
		c.mu.Unlock()
		close(c.closing)
		c.nc.Close()
	})
}

// panics counts recovered panics in link code, so tests can fail on them.
var panics atomic.Int64

// Panics returns how many panics links have recovered from since start.
func Panics() int64 { return panics.Load() }

// errPanic marks a link closed because its code panicked.
var errPanic = errors.New("internal error (panic) in link code")

// Closing reports whether the link is going down or down.
func (c *Link) Closing() bool { return c.isClosing() }

// Closed is closed when the link starts going down, for handlers that
// wait on something else to stop waiting.
func (c *Link) Closed() <-chan struct{} { return c.closing }

// Pausing tells the link that its reader is about to wait for other links
// to drain (a router pausing a legacy link while a circuit's queue is
// full, so TCP pushes back on the sender). The writers it relayed to are
// woken first: they are what must drain. The dead-link check needs no
// telling: it counts as silence only the time the reader waits on the
// socket (receive.go).
//
// Call it from the reader's own goroutine (its Forward hook).
func (c *Link) Pausing() { c.wakeRelayed(false) }
