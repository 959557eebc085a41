package iocom

import (
	"errors"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// ErrScopeExists is returned when a circuit scope is opened twice.
var ErrScopeExists = errors.New("circuit scope already open")

// Relay queues a message a router forwards on a circuit: m goes out as it
// is (msgid, cmd, error and aux untouched) apart from what the caller set
// (circuit and REVCIRC) and what every link recomputes (salt, hdr_crc). It
// bypasses the state machine: the transactions inside a circuit belong to
// its two ends. acct is told when m has left the queue; m is then
// released for reuse (dmsg.Msg.Release), so the caller must not keep it.
func (c *Conn) Relay(m *dmsg.Msg, acct Accounter) error {
	return c.RelayFrom(nil, m, acct)
}

// RelayFrom is Relay called from the reader of link from (in its Forward
// hook). The writer of c is then woken only once from's input is drained,
// not for every message: a burst decoded from one read leaves in one
// batch and one write, which is what makes relaying cheap.
func (c *Conn) RelayFrom(from *Conn, m *dmsg.Msg, acct Accounter) error {
	if acct == nil {
		acct = noAccount{}
	}
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return ErrClosed
	}
	c.q = append(c.q, outMsg{m: m, acct: acct, release: true})
	c.qBytes += m.EncodedSize()
	first := len(c.q) == 1
	c.mu.Unlock()
	switch {
	case !first: // a wake-up is already due
	case from == nil:
		c.kick()
	default:
		from.deferWake(c)
	}
	return nil
}

// deferWake records that c's writer must be woken when this link's input
// is drained. Only this link's reader goroutine calls it.
func (c *Conn) deferWake(w *Conn) {
	for _, x := range c.relayedTo {
		if x == w {
			return
		}
	}
	c.relayedTo = append(c.relayedTo, w)
}

// wakeRelayed wakes the writers this link relayed to since its input was
// last drained; with direct, it sends small bursts itself (writeNow). Only
// this link's reader goroutine calls it.
func (c *Conn) wakeRelayed(direct bool) {
	for i, w := range c.relayedTo {
		if direct {
			w.writeNow()
		} else {
			w.kick()
		}
		c.relayedTo[i] = nil
	}
	c.relayedTo = c.relayedTo[:0]
}

// OpenScope makes this side an end of circuit id: messages arriving on it
// run through their own state tables and reach h. local says whether this
// side opened the circuit (its LNK_CIRC). Circuit 0 always exists.
func (c *Conn) OpenScope(id uint64, local bool, h Handler) (*Scope, error) {
	if h == nil {
		h = refuseAll{}
	}
	key := circuitKey{id: id, local: local}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return nil, ErrClosed
	}
	if id == 0 || c.scopes[key] != nil {
		return nil, ErrScopeExists
	}
	s := newScope(c, key, h)
	c.scopes[key] = s
	return s, nil
}

// Close ends the circuit scope: every transaction still open in it is
// terminated once with code (children of the circuit before the circuit
// itself is gone), and later messages on the circuit are dropped. It must
// run on the Conn's reader goroutine, from one of its handlers (typically
// the handler of the circuit's LNK_CIRC transaction), so that handlers of
// one Conn never run concurrently. Closing circuit 0 or a closed scope does
// nothing.
func (s *Scope) Close(code uint32) {
	c := s.conn
	c.mu.Lock()
	if s.key == rootKey || s.closed {
		c.mu.Unlock()
		return
	}
	delete(c.scopes, s.key)
	txs := drainScopes([]*Scope{s})
	c.mu.Unlock()
	for _, tx := range txs {
		c.terminate(tx, code)
	}
}

// SendOneWay sends a one-way message inside the circuit.
func (s *Scope) SendOneWay(m *dmsg.Msg) error {
	m.MsgID = 0
	m.Circuit = s.key.id
	m.Cmd &^= dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagRevTrans | dmsg.FlagRevCirc
	if !s.key.local {
		m.Cmd |= dmsg.FlagRevCirc
	}
	if err := checkSend(m); err != nil {
		return err
	}
	c := s.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || s.closed {
		return ErrClosed
	}
	c.enqueueLocked(m)
	return nil
}

// Conn returns the link the scope lives on.
func (s *Scope) Conn() *Conn { return s.conn }

// Closed reports whether the scope has been closed.
func (s *Scope) Closed() bool {
	s.conn.mu.Lock()
	defer s.conn.mu.Unlock()
	return s.closed
}

// noAccount is the Accounter of relayed messages nobody counts.
type noAccount struct{}

func (noAccount) Written(int) {}
