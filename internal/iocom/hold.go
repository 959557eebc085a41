package iocom

import (
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// A router forwards a circuit's messages toward the next hop only within
// the credit that hop granted (docs/PROTOCOL.md 11.2); what does not fit waits
// in the circuit, in a Hold, instead of in the link's queue, where it
// would sit in front of every other circuit. The Hold is the relay path's
// pending queue: frames are copied into it once, from the reader's
// buffer, into chunks of its own sized to what it holds, and leave it
// (Release) as queue entries pointing into those chunks, like staged
// frames (relay.go) do.

// Hold keeps one circuit's messages toward a link while they wait for
// credit. Its zero value is not usable: see NewHold. It is not safe for
// concurrent use; its owner serialises every call, Frame.HoldIn and
// Tx.CloseBehind included.
type Hold struct {
	to    *Link
	ents  []heldMsg // in send order, from head
	head  int
	bytes int // the credit the held messages need

	// ch is the chunk frames are copied into; tail is true while the last
	// entry is a run of frames ending at the end of ch, so the next frame
	// extends it.
	ch   *chunk
	tail bool
}

// heldMsg is one queue entry waiting in a Hold and the credit it needs
// (none for a LNK_CIRC message).
type heldMsg struct {
	o    outMsg
	cost int
}

// NewHold returns an empty Hold of messages toward link to.
func NewHold(to *Link) *Hold { return &Hold{to: to} }

// Len returns the number of entries held.
func (h *Hold) Len() int { return len(h.ents) - h.head }

// Bytes returns the credit the held messages need.
func (h *Hold) Bytes() int { return h.bytes }

// HoldIn consumes the message and keeps it in h, on circuit with REVCIRC
// as revCirc, to be queued on h's link by Release. What this reader
// relayed to that link before goes to its queue first, so the circuit
// keeps its order. acct is told when the message has left the link's
// queue, as with RelayTo.
//
// An error means reading the message failed; it ends this link.
func (f *Frame) HoldIn(h *Hold, circuit uint64, revCirc bool, acct Accounter) error {
	if f.used {
		return f.err
	}
	f.used = true
	if acct == nil {
		acct = noAccount{}
	}
	c := f.c
	c.publishTo(h.to)
	frame, ok, err := c.dec.Frame(rawFrameMax)
	if err != nil {
		f.err = err
		return err
	}
	if ok {
		h.addFrame(frame, circuit, revCirc, acct)
		return nil
	}
	m, err := c.dec.Msg()
	if err != nil {
		f.err = err
		return err
	}
	m.Circuit = circuit
	m.Cmd &^= dmsg.FlagRevCirc
	if revCirc {
		m.Cmd |= dmsg.FlagRevCirc
	}
	h.push(heldMsg{o: outMsg{m: m, acct: acct, release: true}, cost: m.EncodedSize()})
	return nil
}

// addFrame copies frame into h's chunk with its circuit rewritten,
// extending the last run when it can.
func (h *Hold) addFrame(frame []byte, circuit uint64, revCirc bool, acct Accounter) {
	if h.ch == nil || cap(h.ch.buf)-len(h.ch.buf) < len(frame) {
		h.newChunk(len(frame))
	}
	off := len(h.ch.buf)
	h.ch.buf = append(h.ch.buf, frame...)
	dmsg.SetFrameCircuit(h.ch.buf[off:], circuit, revCirc)
	if k := len(h.ents) - 1; h.tail && k >= h.head && h.ents[k].o.acct == acct {
		e := &h.ents[k]
		e.o.raw = e.o.raw[:len(e.o.raw)+len(frame)]
		e.cost += len(frame)
		h.bytes += len(frame)
		return
	}
	h.ch.refs.Add(1) // the entry's
	h.push(heldMsg{o: outMsg{acct: acct, raw: h.ch.buf[off:len(h.ch.buf):cap(h.ch.buf)], chunk: h.ch}, cost: len(frame)})
	h.tail = true
}

// newChunk starts a chunk with room for at least n bytes: small while the
// hold holds little, so that many circuits waiting with a few messages
// each cost about what they hold.
func (h *Hold) newChunk(n int) {
	if h.ch != nil {
		h.ch.unref()
	}
	if want := max(4*n, 2*h.bytes); want <= compactBelow {
		h.ch = newSmallChunk(want)
	} else {
		h.ch = newChunk()
	}
	h.tail = false
}

func (h *Hold) push(e heldMsg) {
	h.ents = append(h.ents, e)
	h.bytes += e.cost
	h.tail = false
}

// Release queues, in order, the held messages that fit in credit bytes on
// h's link (the data class), splitting a run of frames if only its first
// frames fit, and returns the credit they used. A held LNK_CIRC message
// needs no credit. If the link is down, everything held is dropped.
func (h *Hold) Release(credit int) int {
	if h.Len() == 0 {
		return 0
	}
	to := h.to
	to.mu.Lock()
	if to.dead {
		// The circuit dies with the link; its owner, who holds its own
		// lock around this call, is not called back.
		to.mu.Unlock()
		h.Drop()
		return 0
	}
	first := to.queueEmptyLocked()
	used, moved := 0, false
	for h.head < len(h.ents) {
		e := &h.ents[h.head]
		if e.cost > credit-used {
			if part := e.splitFront(credit - used); part.raw != nil {
				to.q = append(to.q, part)
				to.chargeLocked(len(part.raw), false)
				used += len(part.raw)
				moved = true
			}
			break
		}
		to.q = append(to.q, e.o)
		to.chargeLocked(e.o.size(), e.o.isReply())
		used += e.cost
		moved = true
		if h.head == len(h.ents)-1 {
			h.tail = false // the next frame must not extend a queued run
		}
		h.ents[h.head] = heldMsg{}
		h.head++
	}
	to.mu.Unlock()
	h.bytes -= used
	h.compact()
	if moved && first {
		to.kick()
	}
	return used
}

// splitFront takes the longest run of whole frames at the front of e
// that fits in n bytes off e and returns it as a queue entry (nothing if
// e is not a run of frames or its first frame does not fit).
func (e *heldMsg) splitFront(n int) outMsg {
	if e.o.raw == nil {
		return outMsg{}
	}
	k := 0
	for k < len(e.o.raw) {
		_, size := dmsg.FrameSize(e.o.raw[k:])
		if size == 0 || k+size > n {
			break
		}
		k += size
	}
	if k == 0 {
		return outMsg{}
	}
	e.o.chunk.refs.Add(1) // the part's; e keeps its own
	part := outMsg{acct: e.o.acct, raw: e.o.raw[:k:k], chunk: e.o.chunk}
	e.o.raw = e.o.raw[k:]
	e.cost -= k
	return part
}

// compact forgets the released entries.
func (h *Hold) compact() {
	switch {
	case h.head == len(h.ents):
		h.ents, h.head = h.ents[:0], 0
		if h.ch != nil && len(h.ch.buf) > 0 {
			// Nothing points into the current chunk but us: start the
			// next frames in a fresh one sized to what comes.
			h.ch.unref()
			h.ch = nil
		}
	case h.head >= 64 && 2*h.head >= len(h.ents):
		n := copy(h.ents, h.ents[h.head:])
		clear(h.ents[n:])
		h.ents, h.head = h.ents[:n], 0
	}
}

// Drop lets go of everything held, without sending it or telling its
// Accounters: the circuit is gone. Held LNK_CIRC messages are dropped
// too; the caller aborts the transaction instead.
func (h *Hold) Drop() {
	for i := h.head; i < len(h.ents); i++ {
		e := &h.ents[i]
		if e.o.chunk != nil {
			e.o.chunk.unref()
		}
		if e.o.release {
			e.o.m.Release()
		}
		h.ents[i] = heldMsg{}
	}
	h.ents, h.head, h.bytes = h.ents[:0], 0, 0
	if h.ch != nil {
		h.ch.unref()
		h.ch = nil
	}
	h.tail = false
}

// CloseBehind closes this side of tx, a LNK_CIRC on h's link, with
// LNK_ERROR|DELETE carrying code, queued behind what h holds, so that it
// does not overtake the circuit's data; with nothing held it is queued at
// once, as Close would. Closing an already closed side is not an error.
func (tx *Tx) CloseBehind(h *Hold, code uint32) error {
	c := tx.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || tx.done || tx.txDelete {
		return nil
	}
	m := &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, Error: code}}
	if err := tx.prepare(m); err != nil {
		return err
	}
	if h.Len() == 0 {
		c.enqueueClassLocked(m, false) // behind the data already queued
		return nil
	}
	h.push(heldMsg{o: outMsg{m: m}})
	return nil
}
