package iocom

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// circuitKey names a circuit as one side of a link sees it: circuit ids are
// the msgids of LNK_CIRC transactions, which each side allocates, so the same
// number can name two circuits, told apart by who opened them (REVCIRC).
type circuitKey struct {
	id    uint64
	local bool // this side opened the circuit
}

// rootKey is circuit 0, the link itself.
var rootKey = circuitKey{}

// keyOf returns the circuit key a received message's circuit field names.
func keyOf(m *dmsg.Msg) circuitKey {
	if m.Circuit == 0 {
		return rootKey
	}
	return circuitKey{id: m.Circuit, local: m.Cmd&dmsg.FlagRevCirc != 0}
}

// Scope holds the two state tables of one circuit on one link: the
// transactions this side opened and those the peer opened. Msgids are
// unique within each table only.
type Scope struct {
	conn    *Link
	key     circuitKey
	handler Handler
	local   map[uint64]*Tx // opened by this side
	remote  map[uint64]*Tx // opened by the peer
	closed  bool
	flow    *scopeFlow // per-circuit flow control; nil on circuit 0 or without it
}

func newScope(c *Link, key circuitKey, h Handler) *Scope {
	return &Scope{conn: c, key: key, handler: h,
		local: make(map[uint64]*Tx), remote: make(map[uint64]*Tx)}
}

// Circuit returns the circuit id the scope serves (0 for the link itself).
func (s *Scope) Circuit() uint64 { return s.key.id }

func (s *Scope) table(local bool) map[uint64]*Tx {
	if local {
		return s.local
	}
	return s.remote
}

func (s *Scope) remove(tx *Tx) {
	tx.done = true
	delete(s.table(tx.local), tx.msgid)
	s.conn.releaseTxLocked(tx)
}

// ProtocolError is a peer's violation of docs/PROTOCOL.md section 3. It closes
// the link it arrived on and nothing else.
type ProtocolError struct {
	Reason  string
	Cmd     uint32
	MsgID   uint64
	Circuit uint64
}

func (e *ProtocolError) Error() string {
	s := fmt.Sprintf("protocol violation: %s (%s msgid %016x", e.Reason, dmsg.CmdString(e.Cmd), e.MsgID)
	if e.Circuit != 0 {
		s += fmt.Sprintf(" circuit %016x", e.Circuit)
	}
	return s + ")"
}

func violation(m *dmsg.Msg, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...), Cmd: m.Cmd, MsgID: m.MsgID, Circuit: m.Circuit}
}

// rxKind says what the reader does with a received message.
type rxKind int

const (
	rxOneWay  rxKind = iota // no transaction: one-way handling
	rxAccept                // the peer opened a transaction: Handler.Accept
	rxDeliver               // a message of an open transaction: its handler
	rxDrop                  // nothing to deliver to (legal: late ABORT, dead circuit)
	rxRefuse                // the peer opened a transaction over its budget: refuse it
)

// classify runs the receive half of the state machine for m: it finds or
// creates the transaction, checks the peer kept the rules and records
// CREATE/DELETE. It must be called with the Link's mutex held.
func (c *Link) classify(m *dmsg.Msg) (rxKind, *Tx, error) {
	f := m.Cmd & dmsg.FlagsMask
	if f&(dmsg.FlagCreate|dmsg.FlagDelete) == 0 && m.MsgID == 0 {
		return rxOneWay, nil, nil
	}
	abort := f&dmsg.FlagAbort != 0
	if m.MsgID == 0 {
		if abort {
			return rxDrop, nil, nil
		}
		return 0, nil, violation(m, "transaction message with msgid 0")
	}
	s := c.scopes[keyOf(m)]
	if s == nil {
		return rxDrop, nil, nil // circuit gone: its ends learn by the abort
	}
	var tx *Tx
	var kind rxKind
	var err error
	if f&(dmsg.FlagReply|dmsg.FlagRevTrans) != 0 {
		tx, kind, err = c.classifyLocal(s, m, abort)
	} else {
		tx, kind, err = c.classifyRemote(s, m, abort)
	}
	if err != nil || kind == rxDrop {
		return kind, nil, err
	}
	if f&dmsg.FlagDelete != 0 {
		tx.rxDelete = true
		if tx.txDelete {
			s.remove(tx)
		}
	}
	return kind, tx, nil
}

// classifyLocal handles a message inside a transaction this side opened.
func (c *Link) classifyLocal(s *Scope, m *dmsg.Msg, abort bool) (*Tx, rxKind, error) {
	tx := s.local[m.MsgID]
	switch {
	case tx == nil && abort:
		return nil, rxDrop, nil
	case tx == nil:
		return nil, 0, violation(m, "reply for a transaction we did not open")
	case tx.rxDelete && abort:
		return nil, rxDrop, nil
	case tx.rxDelete:
		return nil, 0, violation(m, "message after the peer's DELETE")
	case m.Cmd&dmsg.FlagCreate != 0 && tx.rxCreate:
		return nil, 0, violation(m, "second REPLY|CREATE")
	case m.Cmd&dmsg.FlagCreate != 0:
		tx.rxCreate = true
	case !tx.rxCreate && !abort:
		return nil, 0, violation(m, "reply before REPLY|CREATE")
	}
	return tx, rxDeliver, nil
}

// classifyRemote handles a message inside a transaction the peer opened,
// or opening one.
func (c *Link) classifyRemote(s *Scope, m *dmsg.Msg, abort bool) (*Tx, rxKind, error) {
	tx := s.remote[m.MsgID]
	if m.Cmd&dmsg.FlagCreate != 0 {
		if tx != nil {
			return nil, 0, violation(m, "CREATE for a transaction already open")
		}
		charge, err := c.chargeTxLocked()
		if err != nil {
			return nil, 0, err
		}
		tx = &Tx{conn: c, scope: s, msgid: m.MsgID, cmd: dmsg.Base(m.Cmd), rxCreate: true, charge: charge}
		s.remote[m.MsgID] = tx
		if _, over := charge.overBudget(); over {
			return tx, rxRefuse, nil
		}
		return tx, rxAccept, nil
	}
	switch {
	case tx == nil && abort:
		return nil, rxDrop, nil
	case tx == nil && m.Cmd&dmsg.FlagDelete != 0:
		return nil, 0, violation(m, "DELETE for a transaction that does not exist")
	case tx == nil:
		return nil, 0, violation(m, "message for a transaction that does not exist")
	case tx.rxDelete && abort:
		return nil, rxDrop, nil
	case tx.rxDelete:
		return nil, 0, violation(m, "message after the peer's DELETE")
	}
	return tx, rxDeliver, nil
}

// prepare runs the send half of the state machine for m in tx: it sets
// msgid, circuit and the CREATE/REPLY/REVTRANS/REVCIRC flags and records
// CREATE/DELETE. It must be called with the Link's mutex held.
func (tx *Tx) prepare(m *dmsg.Msg) error {
	abort := m.Cmd&dmsg.FlagAbort != 0
	switch {
	case tx.done:
		return ErrTxDone
	case tx.txDelete && !abort:
		return ErrTxDone
	}
	m.Cmd &^= dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans | dmsg.FlagRevCirc
	if !tx.txCreate {
		m.Cmd |= dmsg.FlagCreate
		tx.txCreate = true
	}
	if !tx.local {
		m.Cmd |= dmsg.FlagReply | dmsg.FlagRevTrans
	}
	if tx.scope.key.id != 0 && !tx.scope.key.local {
		m.Cmd |= dmsg.FlagRevCirc
	}
	m.MsgID = tx.msgid
	m.Circuit = tx.scope.key.id
	if m.Cmd&dmsg.FlagDelete != 0 {
		tx.txDelete = true
		if tx.rxDelete {
			tx.scope.remove(tx)
		}
	}
	return nil
}

// allocMsgID returns a msgid not in use among the transactions this side
// opened in s. Zero is reserved for one-way messages.
func (c *Link) allocMsgID(s *Scope) uint64 {
	for {
		c.nextMsgID++
		id := c.nextMsgID
		if id != 0 && s.local[id] == nil {
			return id
		}
	}
}

// drainScopes removes every open transaction of the given scopes and
// returns those that still need a terminating message, in termination
// order: circuits before the link itself, and within a scope LNK_CONN last,
// otherwise by msgid. A transaction whose peer already sent its DELETE
// (this side had not answered it yet) is removed but not returned: its
// handler has had its one terminating message, and a synthesized
// ABORT|DELETE would be dropped by the state machine anyway. Called with
// the mutex held; the caller delivers the terminations without it.
func drainScopes(scopes []*Scope) []*Tx {
	slices.SortFunc(scopes, func(a, b *Scope) int {
		if a.key.id == 0 || b.key.id == 0 {
			return cmp.Compare(b.key.id, a.key.id)
		}
		return cmp.Compare(a.key.id, b.key.id)
	})
	var out []*Tx
	for _, s := range scopes {
		start := len(out)
		for _, t := range []map[uint64]*Tx{s.local, s.remote} {
			for _, tx := range t {
				tx.done = true
				s.conn.releaseTxLocked(tx)
				if !tx.rxDelete {
					out = append(out, tx)
				}
			}
			clear(t)
		}
		slices.SortFunc(out[start:], func(a, b *Tx) int {
			if ac, bc := isConn(a.cmd), isConn(b.cmd); ac != bc {
				if ac {
					return 1
				}
				return -1
			}
			return cmp.Compare(a.msgid, b.msgid)
		})
		s.closed = true
	}
	return out
}

func isConn(base uint32) bool {
	return base == dmsg.LnkConn || base == dmsg.LnkConnV2
}
