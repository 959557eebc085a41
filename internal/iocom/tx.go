package iocom

import (
	"errors"
	"fmt"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Errors of the send path.
var (
	ErrClosed = errors.New("link closed")
	ErrTxDone = errors.New("transaction already closed in this direction")
)

// Tx is one transaction on a Link, seen from this side. Its flags are
// guarded by the Link's mutex; its handler is only called on the Link's
// reader goroutine.
type Tx struct {
	conn    *Link
	scope   *Scope
	msgid   uint64
	cmd     uint32 // base command of the CREATE
	local   bool   // this side opened it
	charge  txCharge
	handler TxHandler

	txCreate, txDelete bool // sent by us
	txAbort            bool // we sent ABORT|DELETE: nothing more, not even another abort
	rxCreate, rxDelete bool // received from the peer
	done               bool // removed from its table
}

// MsgID returns the transaction's msgid.
func (tx *Tx) MsgID() uint64 { return tx.msgid }

// Cmd returns the base command the transaction was opened with.
func (tx *Tx) Cmd() uint32 { return tx.cmd }

// Link returns the link the transaction runs on.
func (tx *Tx) Link() *Link { return tx.conn }

// Scope returns the circuit scope the transaction lives in.
func (tx *Tx) Scope() *Scope { return tx.scope }

// Local reports whether this side opened the transaction.
func (tx *Tx) Local() bool { return tx.local }

// Send sends m inside the transaction. The transaction sets msgid, circuit
// and the CREATE, REPLY, REVTRANS and REVCIRC flags; the caller sets
// DELETE to close its direction and ABORT as it means. The first message
// this side sends carries CREATE. m belongs to the link from now on.
func (tx *Tx) Send(m *dmsg.Msg) error {
	if err := checkSend(m); err != nil {
		return err
	}
	c := tx.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return ErrClosed
	}
	if err := tx.prepare(m); err != nil {
		return err
	}
	tx.scope.queueLocked(m, tx.isControl(m))
	return nil
}

// Close closes this side of the transaction with LNK_ERROR|DELETE and no
// error. Closing an already closed side is not an error.
func (tx *Tx) Close() error { return tx.CloseError(0) }

// CloseError closes this side of the transaction with LNK_ERROR|DELETE
// carrying code; a transaction the peer opened and this side never
// answered is refused (REPLY|CREATE|DELETE).
func (tx *Tx) CloseError(code uint32) error {
	return tx.end(dmsg.LnkError|dmsg.FlagDelete, code)
}

// Abort sends LNK_ERROR|ABORT|DELETE with code, which tears the
// transaction down even if this side already sent its DELETE. A
// transaction is aborted once: a second Abort sends nothing.
func (tx *Tx) Abort(code uint32) error {
	return tx.end(dmsg.LnkError|dmsg.FlagAbort|dmsg.FlagDelete, code)
}

func (tx *Tx) end(cmd, code uint32) error {
	c := tx.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	abort := cmd&dmsg.FlagAbort != 0
	if c.dead || tx.done || tx.txAbort || (tx.txDelete && !abort) {
		return nil
	}
	m := &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, Error: code}}
	if err := tx.prepare(m); err != nil {
		return err
	}
	tx.txAbort = abort
	if tx.cmd == dmsg.LnkCirc && tx.scope.key.id == 0 {
		// A LNK_CIRC's DELETE must not overtake its circuit's data: it
		// waits behind what waits for credit in the circuit. An abort
		// drops that data instead; the circuit is gone.
		if s := c.behindLocked(tx.msgid, tx.local); s != nil {
			if abort {
				s.dropPendingLocked()
			} else {
				s.queueLocked(m, false)
				return nil
			}
		}
	}
	tx.scope.queueLocked(m, tx.isControl(m))
	return nil
}

// Done reports whether the transaction is finished: DELETE both sent and
// received, or terminated by link loss.
func (tx *Tx) Done() bool {
	tx.conn.mu.Lock()
	defer tx.conn.mu.Unlock()
	return tx.done
}

// Open opens a transaction on the link itself (circuit 0) with m as its
// CREATE message. h receives the peer's replies and exactly one
// terminating message.
func (c *Link) Open(m *dmsg.Msg, h TxHandler) (*Tx, error) {
	return c.root.Open(m, h)
}

// OpenFinished is Open for a CREATE message that finish completes when
// the link's writer goroutine is about to encode it, outside every lock
// of the caller and of the link (a relaying reader leaves a queue holding
// one to the writer): work too slow to do while queueing (signing a
// relayed advertisement, docs/PROTOCOL.md 11.3) is done there, in the order
// the messages were queued. finish may fill m.Aux in place but not
// change its length, which the queue has charged, and must not seal it
// (SetAux): its CRC is computed as it is encoded. A message dropped with
// its link is never finished.
func (c *Link) OpenFinished(m *dmsg.Msg, finish func(*dmsg.Msg), h TxHandler) (*Tx, error) {
	return c.root.open(m, h, finish)
}

// Open opens a transaction in this circuit scope with m as its CREATE
// message; see Link.Open.
func (s *Scope) Open(m *dmsg.Msg, h TxHandler) (*Tx, error) { return s.open(m, h, nil) }

func (s *Scope) open(m *dmsg.Msg, h TxHandler, finish func(*dmsg.Msg)) (*Tx, error) {
	if err := checkSend(m); err != nil {
		return nil, err
	}
	c := s.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || s.closed {
		return nil, ErrClosed
	}
	tx := &Tx{conn: c, scope: s, msgid: c.allocMsgID(s), cmd: dmsg.Base(m.Cmd), local: true, handler: h}
	if err := tx.prepare(m); err != nil {
		return nil, err
	}
	s.local[tx.msgid] = tx
	if finish != nil {
		// Circuit 0 only (OpenFinished): no window holds the message back,
		// it goes straight to the link's queue.
		c.enqueueOutLocked(outMsg{m: m, finish: finish}, tx.isControl(m))
		return tx, nil
	}
	s.queueLocked(m, tx.isControl(m))
	return tx, nil
}

// lostLink builds the message that terminates tx when its link or circuit
// dies: what the peer would have sent to abort it.
func lostLink(tx *Tx, code uint32) *dmsg.Msg {
	cmd := dmsg.LnkError | dmsg.FlagAbort | dmsg.FlagDelete
	if tx.local {
		cmd |= dmsg.FlagReply | dmsg.FlagRevTrans
	}
	return &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, MsgID: tx.msgid, Circuit: tx.scope.key.id, Error: code}}
}

// checkSend refuses, before it is queued, a message the encoder could not
// send or the peer would reject as a framing error: failing in the writer
// would take the whole link and every transaction on it down for one bad
// local message.
func checkSend(m *dmsg.Msg) error {
	switch {
	case m.Cmd&dmsg.SizeMask == 0 || m.Cmd&dmsg.SizeMask > dmsg.MaxHeaderUnits:
		return fmt.Errorf("send %s: %w: %d units", dmsg.CmdString(m.Cmd), dmsg.ErrHeaderSize, m.Cmd&dmsg.SizeMask)
	case len(m.Aux) > dmsg.MaxAuxSize:
		return fmt.Errorf("send %s: %w: %d bytes", dmsg.CmdString(m.Cmd), dmsg.ErrAuxSize, len(m.Aux))
	case m.AuxDescr != 0:
		return fmt.Errorf("send %s: %w", dmsg.CmdString(m.Cmd), dmsg.ErrAuxDescr)
	}
	return nil
}
