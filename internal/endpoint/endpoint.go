package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Config says how an endpoint presents itself and what it accepts.
type Config struct {
	// Conn is the LNK_CONN the endpoint introduces itself with, sent as
	// given: PeerMask says which peer types' spans the router relays to
	// it (0: none, as a shell client asks), Caps and CircWindow offer
	// per-circuit flow control (dmsg.CapCircWindow).
	Conn dmsg.Conn
	// V2 sends the libdmsg 2014+ (0x1106) form of LNK_CONN.
	V2 bool
	// NoConn sends no LNK_CONN at all.
	NoConn bool
	// RefuseRouterConn answers the router's LNK_CONN with NOSUPP, as
	// shell clients do: they are not nodes of the cluster.
	RefuseRouterConn bool
	// AcceptCircuit decides on a circuit aimed at one of the endpoint's
	// own advertisements: it returns the handler of what arrives inside
	// the circuit, or nil to refuse it with CANTCIRC. Nil refuses every
	// circuit. It runs on the link's reader goroutine.
	AcceptCircuit func(c *Circuit) iocom.Handler
	// Link configures the link under the endpoint (ID, keepalive, queue
	// bytes, logger). Its Handler is the endpoint's own and is ignored.
	Link iocom.Config
}

// Endpoint is one node's end of a link to a router. Its methods may be
// called from any goroutine, except that those that wait (Ready,
// WaitRouter, WaitRelay, Shell, Close) must not be called from a handler,
// which runs on the link's reader: they wait for that reader.
type Endpoint struct {
	cfg     Config
	link    *iocom.Link
	connTx  *iocom.Tx // our LNK_CONN; nil with NoConn
	connErr error     // why our LNK_CONN could not be sent

	shellMu sync.Mutex // one shell command at a time on the link
	shell   shellOutput

	mu          sync.Mutex
	conn        ConnState
	routerConns []*RouterConn
	relays      map[uint64]*Relay  // relays the router holds open on us
	adverts     map[uint64]*Advert // our advertisements still open
	circuits    map[*Circuit]bool  // circuits not yet ended
	accepted    []*Circuit         // circuits accepted, in order
	changed     chan struct{}      // closed and replaced on every change
}

// ConnState is what the router did with the endpoint's LNK_CONN.
type ConnState struct {
	Acked  bool   // the router answered it and keeps it open
	Closed bool   // it ended (refused, closed or the link lost)
	Error  uint32 // the error of its terminating message
}

// RouterConn is one LNK_CONN the router opened on the endpoint.
type RouterConn struct {
	MsgID  uint64
	Base   uint32 // dmsg.LnkConn or dmsg.LnkConnV2
	Info   dmsg.Conn
	Closed bool   // its DELETE (or the link's loss) arrived
	Error  uint32 // of the terminating message
	Lost   bool   // ended by the link's loss rather than a DELETE on the wire
}

// Errors an endpoint returns.
var (
	// ErrLinkClosed reports a link that went down while waiting.
	ErrLinkClosed = errors.New("the link to the router is closed")
	// ErrConnRefused reports a LNK_CONN the router refused or closed.
	ErrConnRefused = errors.New("the router refused or closed our LNK_CONN")
)

// Dial connects to a router at address on network ("tcp" or "unix") and
// starts an endpoint over the link, as New does.
func Dial(ctx context.Context, network, address string, cfg Config) (*Endpoint, error) {
	nc, err := iocom.Dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return New(nc, cfg), nil
}

// New starts an endpoint over an established stream: it sends its
// LNK_CONN (unless cfg.NoConn) and starts the link. Close ends it.
func New(nc net.Conn, cfg Config) *Endpoint {
	e := &Endpoint{cfg: cfg, relays: make(map[uint64]*Relay), adverts: make(map[uint64]*Advert),
		circuits: make(map[*Circuit]bool), changed: make(chan struct{})}
	lc := cfg.Link
	lc.Handler = (*linkHandler)(e)
	if lc.Logger == nil {
		lc.Logger = zap.NewNop()
	}
	e.link = iocom.NewLink(nc, lc)
	if !cfg.NoConn {
		// Opened before the link starts, so it is the first message
		// on the wire. It fails only for a malformed LNK_CONN, which
		// Ready then reports.
		e.connTx, e.connErr = e.link.Open(dmsg.NewConnMsg(0, &cfg.Conn, cfg.V2), e.ourConnMsg)
	}
	e.link.Start()
	go func() {
		<-e.link.Done()
		e.notify()
	}()
	return e
}

// Link returns the link under the endpoint.
func (e *Endpoint) Link() *iocom.Link { return e.link }

// Done is closed once the link is down.
func (e *Endpoint) Done() <-chan struct{} { return e.link.Done() }

// Close leaves by closing the link, as shell clients do (no DELETE of
// anything open), and waits until it is down.
func (e *Endpoint) Close() error {
	err := e.link.Close()
	<-e.link.Done()
	return err
}

// Changes returns a channel closed at the next change the endpoint
// records: a relay, an advertisement's answer, a LNK_CONN, a circuit or
// the link's loss.
func (e *Endpoint) Changes() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// notify wakes everything waiting on Changes.
func (e *Endpoint) notify() {
	e.mu.Lock()
	e.notifyLocked()
	e.mu.Unlock()
}

func (e *Endpoint) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// wait waits until cond, called with the endpoint's state locked, holds;
// it fails when ctx ends or the link goes down first.
func (e *Endpoint) wait(ctx context.Context, what string, cond func() bool) error {
	for {
		e.mu.Lock()
		ok, ch := cond(), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-e.link.Done():
			e.mu.Lock()
			ok = cond()
			e.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("%s: %w", what, ErrLinkClosed)
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
	}
}

// ConnState reports what the router did with our LNK_CONN.
func (e *Endpoint) ConnState() ConnState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conn
}

// Ready waits until the router acknowledged our LNK_CONN.
func (e *Endpoint) Ready(ctx context.Context) error {
	if e.connErr != nil {
		return fmt.Errorf("LNK_CONN: %w", e.connErr)
	}
	var st ConnState
	err := e.wait(ctx, "LNK_CONN acknowledged", func() bool {
		st = e.conn
		return st.Acked || st.Closed
	})
	if err == nil && !st.Acked {
		err = fmt.Errorf("%w (%s)", ErrConnRefused, dmsg.ErrorString(st.Error))
	}
	return err
}

// ConnTx returns our LNK_CONN transaction (nil with NoConn): LNK_VOLCONF
// and other messages of the link's configuration travel inside it.
func (e *Endpoint) ConnTx() *iocom.Tx { return e.connTx }

// RouterConns returns copies of the router's LNK_CONNs received so far.
func (e *Endpoint) RouterConns() []RouterConn {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]RouterConn, len(e.routerConns))
	for i, rc := range e.routerConns {
		out[i] = *rc
	}
	return out
}

// WaitRouter waits for the router's first LNK_CONN and returns it.
func (e *Endpoint) WaitRouter(ctx context.Context) (RouterConn, error) {
	var rc RouterConn
	err := e.wait(ctx, "the router's LNK_CONN", func() bool {
		if len(e.routerConns) == 0 {
			return false
		}
		rc = *e.routerConns[0]
		return true
	})
	return rc, err
}

// ourConnMsg records the router's answers to our LNK_CONN.
func (e *Endpoint) ourConnMsg(tx *iocom.Tx, m *dmsg.Msg) {
	del := m.Cmd&dmsg.FlagDelete != 0
	e.mu.Lock()
	if m.Cmd&dmsg.FlagCreate != 0 && !del {
		e.conn.Acked = true
	}
	if del {
		e.conn.Closed, e.conn.Error = true, m.Error
	}
	e.notifyLocked()
	e.mu.Unlock()
	if del {
		tx.Close()
	}
}

// linkHandler is the endpoint as its link's iocom.Handler, kept out of
// the endpoint's own API.
type linkHandler Endpoint

// Accept handles the transactions the router opens on the link: its
// LNK_CONN, its relays and circuits aimed at our advertisements.
func (h *linkHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	e := (*Endpoint)(h)
	switch dmsg.Base(m.Cmd) {
	case dmsg.LnkConn, dmsg.LnkConnV2:
		return e.acceptRouterConn(tx, m)
	case dmsg.LnkSpan:
		return e.acceptSpan(tx, m)
	case dmsg.LnkCirc:
		return e.acceptCircuit(tx, m)
	}
	return nil
}

// OneWay takes the debug shell's output on the link itself.
func (h *linkHandler) OneWay(_ *iocom.Link, m *dmsg.Msg) { h.shell.take(m) }

// acceptRouterConn records the router's LNK_CONN, puts per-circuit flow
// control in force when both sides offered it (docs/PROTOCOL.md 11.1),
// before any circuit can exist, and answers it.
func (e *Endpoint) acceptRouterConn(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	info, _ := m.Conn()
	rc := &RouterConn{MsgID: tx.MsgID(), Base: dmsg.Base(m.Cmd), Info: info}
	if rc.Base == dmsg.LnkConn && !e.cfg.V2 && e.cfg.Conn.Shared(&info, dmsg.CapCircWindow) {
		e.link.SetCircWindows(int(e.cfg.Conn.CircWindow), int(info.CircWindow))
	}
	e.mu.Lock()
	e.routerConns = append(e.routerConns, rc)
	e.notifyLocked()
	e.mu.Unlock()
	if e.cfg.RefuseRouterConn {
		tx.CloseError(dmsg.ErrNoSupp)
		return nil
	}
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete == 0 {
			return
		}
		e.mu.Lock()
		rc.Closed, rc.Error = true, m.Error
		rc.Lost = m.Error == dmsg.ErrLostLink && m.Cmd&dmsg.FlagAbort != 0
		e.notifyLocked()
		e.mu.Unlock()
		tx.Close()
	}
}
