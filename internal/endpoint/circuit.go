package endpoint

import (
	"context"
	"fmt"
	"sync"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Circuit is one end of a virtual circuit (docs/PROTOCOL.md section 5):
// its LNK_CIRC transaction on the link and the scope inside it, where
// transactions and one-way messages travel with their own state tables
// and, when it is in force on the link, their own flow control.
type Circuit struct {
	link   *iocom.Link
	opener bool
	h      iocom.Handler // what arrives inside; nil refuses it
	onEnd  func(*Circuit)

	up   chan struct{} // closed once accepted
	done chan struct{} // closed once the LNK_CIRC ended here

	shellMu sync.Mutex // one shell command at a time in the circuit
	shell   shellOutput

	mu     sync.Mutex // also held while the opener sets tx and scope
	tx     *iocom.Tx
	scope  *iocom.Scope
	target uint64
	endCmd uint32
	endErr uint32
	failed error // the far end broke the protocol inside the circuit
}

// CircuitError reports how a circuit ended: the command and error of the
// LNK_CIRC's terminating message.
type CircuitError struct {
	Cmd  uint32
	Code uint32
}

func (e *CircuitError) Error() string { return "circuit failed: " + dmsg.ErrorString(e.Code) }

// Refused reports a circuit refused during setup (REPLY|CREATE|DELETE).
func (e *CircuitError) Refused() bool {
	return e.Cmd&(dmsg.FlagCreate|dmsg.FlagReply) == dmsg.FlagCreate|dmsg.FlagReply
}

func newCircuit(link *iocom.Link, opener bool, h iocom.Handler) *Circuit {
	return &Circuit{link: link, opener: opener, h: h, up: make(chan struct{}), done: make(chan struct{})}
}

// OpenCircuit opens a circuit on link toward the span whose LNK_SPAN the
// link's peer sent with msgid target. h receives what the far end sends
// inside (nil refuses its transactions and ignores its one-way
// messages). It does not wait for the answer (Wait does). A router's
// `@node` opens its circuits this way, on one of its own links.
func OpenCircuit(link *iocom.Link, target uint64, h iocom.Handler) (*Circuit, error) {
	c := newCircuit(link, true, h)
	c.target = target
	// The LNK_CIRC's handler may run before the scope exists (an
	// immediate refusal); c.mu makes it wait until both are set.
	c.mu.Lock()
	defer c.mu.Unlock()
	tx, err := link.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: target}), c.circMsg)
	if err != nil {
		return nil, fmt.Errorf("open circuit: %w", err)
	}
	c.tx = tx
	scope, err := link.OpenScope(tx.MsgID(), true, (*scopeHandler)(c))
	if err != nil {
		tx.Abort(dmsg.ErrLostLink)
		return nil, fmt.Errorf("open circuit scope: %w", err)
	}
	c.scope = scope
	return c, nil
}

// OpenCircuit opens a circuit toward the span the router sent with msgid
// target (Span.MsgID), as the package's OpenCircuit does on the
// endpoint's link.
func (e *Endpoint) OpenCircuit(target uint64, h iocom.Handler) (*Circuit, error) {
	c, err := OpenCircuit(e.link, target, h)
	if err != nil {
		return nil, err
	}
	e.track(c)
	return c, nil
}

// track keeps c among the endpoint's circuits until it ends. Under c.mu,
// which circMsg holds while it ends the circuit: either the circuit ended
// already and is not tracked, or its end will find onEnd set.
func (e *Endpoint) track(c *Circuit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	c.onEnd = e.untrack
	e.mu.Lock()
	e.circuits[c] = true
	e.notifyLocked()
	e.mu.Unlock()
}

func (e *Endpoint) untrack(c *Circuit) {
	e.mu.Lock()
	delete(e.circuits, c)
	e.notifyLocked()
	e.mu.Unlock()
}

// acceptCircuit accepts a circuit aimed at one of our advertisements if
// Config.AcceptCircuit gives it a handler, and refuses it with CANTCIRC
// otherwise.
func (e *Endpoint) acceptCircuit(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	body, err := m.Circ()
	if err != nil || e.advertFor(body.Target) == nil || e.cfg.AcceptCircuit == nil {
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c := newCircuit(e.link, false, nil)
	c.tx, c.target = tx, body.Target
	scope, err := e.link.OpenScope(tx.MsgID(), false, (*scopeHandler)(c))
	if err != nil {
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c.scope = scope
	// Asked once the scope exists, so that AcceptCircuit may already
	// send into the circuit; what it sends goes after the answer below.
	if c.h = e.cfg.AcceptCircuit(c); c.h == nil {
		scope.Close(dmsg.ErrCantCirc)
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	close(c.up)
	e.mu.Lock()
	e.accepted = append(e.accepted, c)
	e.mu.Unlock()
	e.track(c)
	return c.circMsg
}

// Accepted returns the circuits the endpoint accepted, in order, ended
// ones included. It is a record for tests and tools that live as long as
// their endpoint: a long-lived endpoint takes its circuits as
// AcceptCircuit hands them over, since the record keeps every one.
func (e *Endpoint) Accepted() []*Circuit {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Circuit(nil), e.accepted...)
}

// OpenCircuits returns how many of the endpoint's circuits have not ended.
func (e *Endpoint) OpenCircuits() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.circuits)
}

// circMsg handles the circuit's LNK_CIRC at either end: the answer to
// ours, and the end of the circuit from either side.
func (c *Circuit) circMsg(tx *iocom.Tx, m *dmsg.Msg) {
	c.mu.Lock() // wait until OpenCircuit has set the scope
	scope := c.scope
	c.mu.Unlock()
	if m.Cmd&dmsg.FlagDelete == 0 {
		if c.opener && m.Cmd&dmsg.FlagCreate != 0 {
			close(c.up)
		}
		return
	}
	// Children first: every transaction inside ends before the circuit.
	code := m.Error
	if code == 0 {
		code = dmsg.ErrLostLink
	}
	if scope != nil {
		scope.Close(code)
	}
	tx.Close()
	c.mu.Lock()
	c.endCmd, c.endErr = m.Cmd, m.Error
	onEnd := c.onEnd
	close(c.done)
	c.mu.Unlock()
	c.shell.wake()
	if onEnd != nil {
		onEnd(c)
	}
}

// Up is closed once the circuit is accepted.
func (c *Circuit) Up() <-chan struct{} { return c.up }

// Done is closed once the circuit's LNK_CIRC has ended at this end.
func (c *Circuit) Done() <-chan struct{} { return c.done }

// Wait waits until the far end accepted the circuit, and returns why it
// did not if it ended first: a *CircuitError, or the far end's protocol
// violation.
func (c *Circuit) Wait(ctx context.Context) error {
	select {
	case <-c.up:
		return nil
	case <-c.done:
		select {
		case <-c.up: // accepted, then ended
			return nil
		default:
		}
		if err := c.Err(); err != nil {
			return err
		}
		cmd, code := c.End()
		return &CircuitError{Cmd: cmd, Code: code}
	case <-ctx.Done():
		return fmt.Errorf("circuit %d not accepted: %w", c.tx.MsgID(), ctx.Err())
	}
}

// Err returns how the circuit ended: nil while it is open or when it was
// closed without an error; the far end's protocol violation if it broke
// the protocol inside the circuit; a *CircuitError otherwise.
func (c *Circuit) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endErr == 0 && c.failed == nil {
		return nil
	}
	if c.failed != nil {
		return c.failed
	}
	return &CircuitError{Cmd: c.endCmd, Code: c.endErr}
}

// End returns the command and error of the LNK_CIRC's terminating
// message, once Done is closed.
func (c *Circuit) End() (cmd, code uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endCmd, c.endErr
}

// Tx returns the circuit's LNK_CIRC transaction.
func (c *Circuit) Tx() *iocom.Tx { return c.tx }

// Scope returns the scope inside the circuit.
func (c *Circuit) Scope() *iocom.Scope { return c.scope }

// ID returns the circuit's id on the link: the msgid of its LNK_CIRC.
func (c *Circuit) ID() uint64 { return c.tx.MsgID() }

// Target returns the msgid of the span the circuit was opened toward.
func (c *Circuit) Target() uint64 { return c.target }

// Open opens a transaction inside the circuit.
func (c *Circuit) Open(m *dmsg.Msg, h iocom.TxHandler) (*iocom.Tx, error) {
	return c.scope.Open(m, h)
}

// SendOneWay sends a one-way message inside the circuit.
func (c *Circuit) SendOneWay(m *dmsg.Msg) error { return c.scope.SendOneWay(m) }

// WaitRoom waits until what waits in the circuit for the far end's credit
// is below the link's queue budget.
func (c *Circuit) WaitRoom(ctx context.Context) error { return c.scope.WaitRoom(ctx) }

// Close closes the circuit normally: this end DELETEs its LNK_CIRC, and
// the circuit ends when the far end answers.
func (c *Circuit) Close() error { return c.tx.Close() }

// Abort tears the circuit down with code (LNK_ERROR|ABORT|DELETE).
func (c *Circuit) Abort(code uint32) error { return c.tx.Abort(code) }

// scopeHandler is the circuit as its scope's iocom.Handler, kept out of
// the circuit's own API.
type scopeHandler Circuit

// Accept hands transactions the far end opens inside the circuit to the
// circuit's handler.
func (h *scopeHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	if h.h == nil {
		return nil
	}
	return h.h.Accept(tx, m)
}

// OneWay takes debug shell output once a Shell command was sent, and
// hands every other one-way message to the circuit's handler.
func (h *scopeHandler) OneWay(l *iocom.Link, m *dmsg.Msg) {
	c := (*Circuit)(h)
	if c.shell.active() && c.shell.take(m) {
		if c.shell.overLimit() {
			// On the reader goroutine, as Scope.Close wants: what the
			// far end still sends on the circuit is dropped from now.
			c.tx.Abort(dmsg.ErrIO)
			c.scope.Close(dmsg.ErrIO)
		}
		return
	}
	if c.h != nil {
		c.h.OneWay(l, m)
	}
}

// ScopeFailed records a far end that broke the protocol inside the
// circuit, tells the handler if it wants to know, ends a Shell command
// waiting in it, and aborts the circuit with PARAM.
func (h *scopeHandler) ScopeFailed(s *iocom.Scope, err error) {
	c := (*Circuit)(h)
	failed := fmt.Errorf("circuit %d: far end broke the protocol: %w", c.tx.MsgID(), err)
	c.mu.Lock()
	c.failed = failed
	c.mu.Unlock()
	if f, ok := c.h.(iocom.ScopeFailer); ok {
		f.ScopeFailed(s, err)
	}
	c.shell.fail(failed)
	c.tx.Abort(dmsg.ErrParam)
}
