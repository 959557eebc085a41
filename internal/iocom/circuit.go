package iocom

import (
	"errors"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// ErrScopeExists is returned when a circuit scope is opened twice.
var ErrScopeExists = errors.New("circuit scope already open")

// OpenScope makes this side an end of circuit id: messages arriving on it
// run through their own state tables and reach h. local says whether this
// side opened the circuit (its LNK_CIRC). Circuit 0 always exists.
func (c *Link) OpenScope(id uint64, local bool, h Handler) (*Scope, error) {
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
	s.flow = newScopeFlow(c.win)
	c.scopes[key] = s
	return s, nil
}

// Close ends the circuit scope: every transaction still open in it is
// terminated once with code (children of the circuit before the circuit
// itself is gone), and later messages on the circuit are dropped. It must
// run on the Link's reader goroutine, from one of its handlers (typically
// the handler of the circuit's LNK_CIRC transaction), so that handlers of
// one Link never run concurrently. Closing circuit 0 or a closed scope does
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
	s.dropPendingLocked()
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
	s.queueLocked(m, false)
	return nil
}

// Link returns the link the scope lives on.
func (s *Scope) Link() *Link { return s.conn }

// Closed reports whether the scope has been closed.
func (s *Scope) Closed() bool {
	s.conn.mu.Lock()
	defer s.conn.mu.Unlock()
	return s.closed
}
