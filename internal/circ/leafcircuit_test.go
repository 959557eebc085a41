package circ_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// The commands leaves use inside circuits: a transactional request in the
// HAMMER2 protocol space (routers never look inside a circuit, so any
// command works) and DBG_SHELL-style one-way data.
const (
	cmdInner  = dmsg.ProtoHM2 | 0x00001001 // HM2 cmd 0x10, 64-byte header
	cmdOneWay = dmsg.DbgShell
)

// Inner request kinds, the byte after the sequence number.
const (
	kindEcho  = 0 // the far end echoes the payload and closes
	kindCRC   = 1 // the far end answers seq + CRC-32C of the payload and closes
	kindHold  = 2 // the far end acknowledges and keeps the transaction open
	headerLen = 9 // seq (8) + kind (1)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// payload builds an inner request: seq, kind, then size-9 filler bytes
// derived from seq (so corruption anywhere shows).
func payload(seq uint64, kind byte, size int) []byte {
	size = max(size, headerLen)
	b := make([]byte, size)
	binary.LittleEndian.PutUint64(b, seq)
	b[8] = kind
	x := uint32(seq)*2654435761 + 1
	for i := headerLen; i < size; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// circuit is one end of a circuit at a leaf: the endpoint's circuit,
// which owns its LNK_CIRC, scope and flow control, and on top of it the
// inner request protocol these tests run and what has happened in it.
type circuit struct {
	l  *leaf
	ec *endpoint.Circuit

	mu         sync.Mutex
	ended      <-chan struct{} // ec.Done(), for the reader goroutine
	errs       []string
	lastRxSeq  uint64 // last inner request seq accepted (order check)
	rxRequests int
	lastOneWay uint64
	inner      map[*innerTx]bool // open inner transactions
	terms      map[uint32]int    // inner terminations by error

	sentIDs map[uint64]uint64      // request seq -> msgid we opened it with
	gotHdrs map[uint64]dmsg.Header // request seq -> header as received

	nextSeq atomic.Uint64 // sequence numbers of the requests this end sends

	oneWayMsgs, oneWayBytes atomic.Int64
}

// innerTx is one transaction inside a circuit.
type innerTx struct {
	local    bool
	seq      uint64
	ends     int    // terminating messages seen (must end at 1)
	endErr   uint32 // of the last one
	replied  bool
	heldOpen bool
}

func newCircuit(l *leaf) *circuit {
	return &circuit{l: l, inner: make(map[*innerTx]bool), terms: make(map[uint32]int),
		sentIDs: make(map[uint64]uint64), gotHdrs: make(map[uint64]dmsg.Header)}
}

// setEnd binds c to its endpoint circuit. The opener does so once
// OpenCircuit returned, when the far end may already be talking inside.
func (c *circuit) setEnd(ec *endpoint.Circuit) {
	c.ec = ec
	c.mu.Lock()
	c.ended = ec.Done()
	c.mu.Unlock()
}

// scope returns the scope inside the circuit. An accepted circuit has
// one once the leaf lists it (waitAccepted).
func (c *circuit) scope() *iocom.Scope { return c.ec.Scope() }

func (c *circuit) errorf(format string, args ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// waitUp waits until the circuit was accepted.
func (c *circuit) waitUp() {
	c.l.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.ec.Wait(ctx); err != nil {
		c.l.tb.Fatalf("leaf %s: circuit %d not up: %v", c.l.label, c.ec.ID(), err)
	}
}

// waitDone waits until the circuit's LNK_CIRC ended at this end and
// returns the terminating message's cmd and error.
func (c *circuit) waitDone() (cmd, code uint32) {
	c.l.tb.Helper()
	waitChan(c.l.tb, fmt.Sprintf("leaf %s: circuit %d ends", c.l.label, c.ec.ID()), c.ec.Done())
	return c.ec.End()
}

func (c *circuit) isDone() bool {
	select {
	case <-c.ec.Done():
		return true
	default:
		return false
	}
}

// close closes the circuit normally: this end DELETEs its LNK_CIRC.
func (c *circuit) close() { c.ec.Close() }

// problems returns what went wrong inside the circuit.
func (c *circuit) problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// innerOpen counts the transactions open inside the circuit.
func (c *circuit) innerOpen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inner)
}

// Accept handles a transaction the far end opens inside the circuit: it
// checks the request order and answers as the request's kind says.
func (c *circuit) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	if dmsg.Base(m.Cmd) != cmdInner || len(m.Aux) < headerLen {
		c.errorf("unexpected inner CREATE %s aux %d", dmsg.CmdString(m.Cmd), len(m.Aux))
		return nil
	}
	seq := binary.LittleEndian.Uint64(m.Aux)
	kind := m.Aux[8]
	it := &innerTx{seq: seq}
	c.mu.Lock()
	if seq <= c.lastRxSeq && c.rxRequests > 0 {
		c.errs = append(c.errs, fmt.Sprintf("request seq %d after %d: order broken", seq, c.lastRxSeq))
	}
	c.lastRxSeq = seq
	c.rxRequests++
	c.inner[it] = true
	c.gotHdrs[seq] = m.Header
	c.mu.Unlock()
	if want := payload(seq, kind, len(m.Aux)); !bytes.Equal(m.Aux, want) {
		c.errorf("request seq %d: payload corrupted", seq)
	}
	var reply *dmsg.Msg
	switch kind {
	case kindEcho:
		reply = dmsg.NewMsg(cmdInner | dmsg.FlagDelete)
		reply.SetAux(m.Aux)
	case kindCRC:
		reply = dmsg.NewMsg(cmdInner | dmsg.FlagDelete)
		b := make([]byte, 12)
		binary.LittleEndian.PutUint64(b, seq)
		binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(m.Aux, castagnoli))
		reply.SetAux(b)
	case kindHold:
		reply = dmsg.NewMsg(cmdInner)
		it.heldOpen = true
	}
	if m.Cmd&dmsg.FlagDelete != 0 && reply.Cmd&dmsg.FlagDelete == 0 {
		reply.Cmd |= dmsg.FlagDelete // the requester closed already
	}
	if err := tx.Send(reply); err != nil {
		c.errorf("reply to seq %d: %v", seq, err)
	}
	if reply.Cmd&dmsg.FlagDelete != 0 && m.Cmd&dmsg.FlagDelete != 0 {
		c.mu.Lock()
		it.ends, it.replied = 1, true // finished by the CREATE|DELETE and our answer
		delete(c.inner, it)
		c.mu.Unlock()
	}
	return func(tx *iocom.Tx, m *dmsg.Msg) { c.innerEnd(tx, it, m) }
}

// innerEnd records a message of an inner transaction after its first; a
// DELETE must come exactly once.
func (c *circuit) innerEnd(tx *iocom.Tx, it *innerTx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return
	}
	c.mu.Lock()
	it.ends++
	it.endErr = m.Error
	if it.ends > 1 {
		c.errs = append(c.errs, fmt.Sprintf("inner tx seq %d terminated %d times", it.seq, it.ends))
	}
	c.terms[m.Error]++
	select {
	case <-c.ended: // nil while the opener is binding: not ended then
		c.errs = append(c.errs, fmt.Sprintf("inner tx seq %d terminated after its circuit ended", it.seq))
	default:
	}
	delete(c.inner, it)
	c.mu.Unlock()
	tx.Close()
}

// OneWay handles one-way messages inside the circuit: data with a
// sequence number that must increase.
func (c *circuit) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) != cmdOneWay || len(m.Aux) < 8 {
		return
	}
	seq := binary.LittleEndian.Uint64(m.Aux)
	c.mu.Lock()
	if seq <= c.lastOneWay {
		c.errs = append(c.errs, fmt.Sprintf("one-way seq %d after %d: order broken", seq, c.lastOneWay))
	}
	c.lastOneWay = seq
	c.mu.Unlock()
	c.oneWayMsgs.Add(1)
	c.oneWayBytes.Add(int64(len(m.Aux)))
}

// request opens one inner transaction with a payload of size bytes; done
// (if not nil) runs on the reader goroutine with the reply, already
// checked. With kindHold the transaction stays open at both ends.
func (c *circuit) request(seq uint64, kind byte, size int, done func(ok bool)) error {
	p := payload(seq, kind, size)
	m := dmsg.NewMsg(cmdInner)
	if kind != kindHold {
		m.Cmd |= dmsg.FlagDelete
	}
	m.SetAux(p)
	it := &innerTx{local: true, seq: seq}
	first := true
	var crc uint32
	if kind == kindCRC {
		crc = crc32.Checksum(p, castagnoli)
	}
	c.mu.Lock()
	c.inner[it] = true
	c.mu.Unlock()
	tx, err := c.scope().Open(m, func(tx *iocom.Tx, m *dmsg.Msg) {
		if first {
			first = false
			ok := c.checkReply(seq, kind, p, crc, m)
			c.mu.Lock()
			it.replied = true
			c.mu.Unlock()
			if done != nil {
				done(ok)
			}
		}
		c.innerEnd(tx, it, m)
	})
	if err != nil {
		c.mu.Lock()
		delete(c.inner, it)
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	c.sentIDs[seq] = tx.MsgID()
	c.mu.Unlock()
	return nil
}

// checkReply checks the first answer to a request.
func (c *circuit) checkReply(seq uint64, kind byte, p []byte, crc uint32, m *dmsg.Msg) bool {
	if m.Cmd&dmsg.FlagAbort != 0 {
		return false // terminated, not answered: innerEnd records it
	}
	switch kind {
	case kindEcho:
		if !bytes.Equal(m.Aux, p) {
			c.errorf("seq %d: echo differs (%d bytes, want %d)", seq, len(m.Aux), len(p))
			return false
		}
	case kindCRC:
		if len(m.Aux) != 12 || binary.LittleEndian.Uint64(m.Aux) != seq ||
			binary.LittleEndian.Uint32(m.Aux[8:]) != crc {
			c.errorf("seq %d: bad checksum reply %x", seq, m.Aux)
			return false
		}
	case kindHold:
		if m.Cmd&dmsg.FlagDelete != 0 {
			c.errorf("seq %d: held transaction closed by the far end", seq)
			return false
		}
	}
	return true
}

// sendOneWay sends a one-way data message of size bytes with seq.
func (c *circuit) sendOneWay(seq uint64, size int) error {
	m := dmsg.NewMsg(cmdOneWay)
	b := make([]byte, max(size, 8))
	binary.LittleEndian.PutUint64(b, seq)
	m.SetAux(b)
	return c.scope().SendOneWay(m)
}

// pump runs n requests over the circuit (numbered on from the circuit's
// last request), at most inflight at a time,
// waiting for room on the link before each; size(i) gives each payload
// size and kind(i) its kind. It returns once every reply has arrived (or
// ctx ends or the circuit dies), with the number answered correctly.
func (c *circuit) pump(ctx context.Context, n, inflight int, size func(i int) int, kind func(i int) byte) (int, error) {
	sem := make(chan struct{}, inflight)
	var good, answered atomic.Int64
	all := make(chan struct{})
	for i := range n {
		if err := c.scope().WaitRoom(ctx); err != nil {
			return int(good.Load()), err
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return int(good.Load()), ctx.Err()
		case <-c.ec.Done():
			return int(good.Load()), fmt.Errorf("circuit ended")
		}
		err := c.request(c.nextSeq.Add(1), kind(i), size(i), func(ok bool) {
			if ok {
				good.Add(1)
			}
			if answered.Add(1) == int64(n) {
				close(all)
			}
			<-sem
		})
		if err != nil {
			return int(good.Load()), err
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		return int(good.Load()), ctx.Err()
	case <-c.ec.Done():
		return int(good.Load()), fmt.Errorf("circuit ended")
	}
	return int(good.Load()), nil
}
