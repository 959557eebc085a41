package iocom

import (
	"sync"
	"sync/atomic"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Relaying is what a router does with almost all of its traffic: a message
// arriving on one link's circuit leaves on another link's circuit with
// nothing changed but the circuit id, the REVCIRC flag and what every link
// recomputes (salt, hdr_crc). So the reader offers each circuit message to
// the Forward hook as a Frame, before decoding more than its header, and a
// relayed frame is copied once, as bytes, from the reader's buffer into a
// chunk of memory; the outbound link's writer reseals and writes it from
// there.
//
// The reader stages what it relays to each link and queues it there in one
// step when its own input is drained (or before it handles a message
// itself, which keeps the order of what it relays and what it sends): a
// burst costs one lock of the outbound queue, not one per message.

// rawFrameMax bounds the frames relayed as bytes. Larger ones are decoded
// into a pooled message, whose aux data the writer hands to the socket
// without another copy.
const rawFrameMax = 16 << 10

// chunkSize is the size of the chunks relayed frames are copied into.
const chunkSize = 64 << 10

// chunk holds relayed frames back to back. The reader that fills it and
// the queue entries that point into it each hold a reference; the last one
// to let go puts it back in its pool.
type chunk struct {
	buf   []byte
	refs  atomic.Int32
	class int8 // its pool: a small class, or bigChunk
}

// A reader copies a burst into a big chunk; a burst that used little of it
// moves to a small chunk of its size before it is queued (stage.compact),
// so that what waits in a slow link's queue costs about its own size.
const (
	bigChunk      = -1
	smallChunkMin = 256 // the smallest small chunk; each class doubles
	smallClasses  = 7   // up to 16 KiB
	compactBelow  = smallChunkMin << (smallClasses - 1)
)

var (
	bigChunks   = sync.Pool{New: func() any { return &chunk{buf: make([]byte, 0, chunkSize), class: bigChunk} }}
	smallChunks [smallClasses]sync.Pool
)

func newChunk() *chunk {
	ch := bigChunks.Get().(*chunk)
	ch.refs.Store(1)
	return ch
}

// newSmallChunk returns a chunk of the smallest class that holds n bytes
// (n <= compactBelow).
func newSmallChunk(n int) *chunk {
	c := 0
	for smallChunkMin<<c < n {
		c++
	}
	ch, _ := smallChunks[c].Get().(*chunk)
	if ch == nil {
		ch = &chunk{buf: make([]byte, 0, smallChunkMin<<c), class: int8(c)}
	}
	ch.refs.Store(1)
	return ch
}

func (ch *chunk) unref() {
	if ch.refs.Add(-1) != 0 {
		return
	}
	ch.buf = ch.buf[:0]
	if ch.class == bigChunk {
		bigChunks.Put(ch)
	} else {
		smallChunks[ch.class].Put(ch)
	}
}

// stage is what a reader has relayed to one link and not yet queued there:
// runs of frames in its current chunk.
type stage struct {
	to    *Link
	ch    *chunk
	runs  []stagedRun
	bytes int
}

// stagedRun is a run of frames of one circuit (one Accounter): n bytes
// at off, msgs messages.
type stagedRun struct {
	acct         Accounter
	off, n, msgs int
}

// Frame is a received circuit message whose header has been read and
// checked but whose aux data is still in the link's input: a Forward hook
// looks at the header and relays the message with RelayTo, or leaves it to
// the link's own state machine by not calling it.
type Frame struct {
	*dmsg.Header // read-only, valid during the Forward call

	c    *Link
	used bool  // RelayTo consumed the message
	err  error // reading it failed: the source link is broken
}

// EncodedSize is the number of bytes the message occupies on the wire.
func (f *Frame) EncodedSize() int {
	return dmsg.HeaderBytes(f.Cmd) + dmsg.AlignUp(int(f.AuxBytes))
}

// RelayTo consumes the message and sends it on link to, on circuit with
// REVCIRC as revCirc. acct is told when it has left to's queue, or when it
// is dropped because to is down. The writer of to is woken once this
// link's input is drained, not for every message: a burst read at once
// leaves in one batch and one write.
//
// An error means reading the message failed; it ends this link.
func (f *Frame) RelayTo(to *Link, circuit uint64, revCirc bool, acct Accounter) error {
	if f.used {
		return f.err
	}
	f.used = true
	if acct == nil {
		acct = noAccount{}
	}
	c := f.c
	frame, ok, err := c.dec.Frame(rawFrameMax)
	if err != nil {
		f.err = err
		return err
	}
	if ok {
		if c.stageFor(to).add(frame, circuit, revCirc, acct) {
			c.deferWake(to)
		}
		return nil
	}
	// Too large to stage, or opposite-endian: decoded, and queued after
	// what is staged for the link so that the circuit keeps its order.
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
	c.publishTo(to)
	if to.queueMsg(m, acct) {
		c.deferWake(to)
	}
	return nil
}

// Flush queues on link to what this reader has relayed to it so far,
// before the caller keeps the message back (HoldIn): the circuit's order
// holds. A caller that locks its Hold calls it first, since queueing on a
// link that is down tells Accounters at once.
func (f *Frame) Flush(to *Link) { f.c.publishTo(to) }

// Take consumes the message and returns it decoded, for a Forward hook
// that handles it itself (a router's LNK_CREDIT); the caller releases it.
func (f *Frame) Take() (*dmsg.Msg, error) {
	if f.used {
		return nil, f.err
	}
	f.used = true
	m, err := f.c.dec.Msg()
	f.err = err
	return m, err
}

// Drop consumes the message without passing it on: its circuit is gone
// or it broke the circuit's rules. Its aux data is still read and
// checked, with the next message.
func (f *Frame) Drop() {
	f.used = true
}

// stageFor returns this reader's stage for link to. Only the reader
// goroutine calls it.
func (c *Link) stageFor(to *Link) *stage {
	for _, st := range c.stages {
		if st.to == to {
			return st
		}
	}
	var st *stage
	if k := len(c.spareStages); k > 0 {
		st, c.spareStages = c.spareStages[k-1], c.spareStages[:k-1]
	} else {
		st = &stage{}
	}
	st.to, st.ch = to, newChunk()
	c.stages = append(c.stages, st)
	return st
}

// add copies frame into the stage with its circuit rewritten. A full
// chunk is queued first; add then reports whether the link's writer must
// be woken.
func (st *stage) add(frame []byte, circuit uint64, revCirc bool, acct Accounter) (wake bool) {
	if cap(st.ch.buf)-len(st.ch.buf) < len(frame) {
		wake = st.publish()
		st.ch.unref()
		st.ch = newChunk()
	}
	off := len(st.ch.buf)
	st.ch.buf = append(st.ch.buf, frame...)
	dmsg.SetFrameCircuit(st.ch.buf[off:], circuit, revCirc)
	st.bytes += len(frame)
	if k := len(st.runs) - 1; k >= 0 && st.runs[k].acct == acct && st.runs[k].off+st.runs[k].n == off {
		st.runs[k].n += len(frame)
		st.runs[k].msgs++
		return wake
	}
	st.runs = append(st.runs, stagedRun{acct: acct, off: off, n: len(frame), msgs: 1})
	return wake
}

// compact moves the staged runs to a small chunk of their size when they
// used little of a chunk nothing else points into: the big one goes back
// to the pool at once instead of waiting, mostly empty, in a slow link's
// queue.
func (st *stage) compact() {
	if len(st.runs) == 0 || st.bytes > compactBelow || st.ch.refs.Load() != 1 {
		return
	}
	small := newSmallChunk(st.bytes)
	for i, r := range st.runs {
		st.runs[i].off = len(small.buf)
		small.buf = append(small.buf, st.ch.buf[r.off:r.off+r.n]...)
	}
	st.ch.unref()
	st.ch = small
}

// publish queues the staged runs on the stage's link. It reports whether
// the link's queue was empty before, so that its writer must be woken.
func (st *stage) publish() bool {
	if len(st.runs) == 0 {
		return false
	}
	to := st.to
	to.mu.Lock()
	if to.dead {
		to.mu.Unlock()
		for _, r := range st.runs {
			r.acct.Written(r.msgs, r.n)
		}
		st.runs, st.bytes = st.runs[:0], 0
		return false
	}
	first := to.queueEmptyLocked()
	for i, r := range st.runs {
		st.ch.refs.Add(1)
		to.q = append(to.q, outMsg{acct: r.acct, raw: st.ch.buf[r.off : r.off+r.n], chunk: st.ch})
		st.runs[i] = stagedRun{}
	}
	to.chargeLocked(st.bytes, false)
	to.mu.Unlock()
	st.runs, st.bytes = st.runs[:0], 0
	return first
}

// publishTo queues what this reader staged for link to.
func (c *Link) publishTo(to *Link) {
	for _, st := range c.stages {
		if st.to != to {
			continue
		}
		st.compact()
		if st.publish() {
			c.deferWake(to)
		}
	}
}

// publishAll queues everything this reader staged and drops its stages
// (their chunks stay alive while queue entries point into them). Only the
// reader goroutine calls it.
func (c *Link) publishAll() {
	for i, st := range c.stages {
		st.compact()
		if st.publish() {
			c.deferWake(st.to)
		}
		st.ch.unref()
		st.to, st.ch = nil, nil
		c.stages[i] = nil
		if len(c.spareStages) < maxSpareStages {
			c.spareStages = append(c.spareStages, st)
		}
	}
	c.stages = c.stages[:0]
}

// maxSpareStages bounds the emptied stages a reader keeps for reuse.
const maxSpareStages = 8

// queueMsg queues a relayed message, to be released once written. It
// reports whether the queue was empty before.
func (c *Link) queueMsg(m *dmsg.Msg, acct Accounter) bool {
	size := m.EncodedSize()
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		acct.Written(1, size)
		m.Release()
		return false
	}
	first := c.pushLocked(outMsg{m: m, acct: acct, release: true}, false)
	c.chargeLocked(size, false)
	c.mu.Unlock()
	return first
}

// deferWake records that c's writer must be woken when this link's input
// is drained. Only this link's reader goroutine calls it.
func (c *Link) deferWake(w *Link) {
	for _, x := range c.relayedTo {
		if x == w {
			return
		}
	}
	c.relayedTo = append(c.relayedTo, w)
}

// wakeRelayed queues what this reader staged and wakes the writers it
// relayed to since its input was last drained; with direct, it sends
// small bursts itself (writeNow). Only this link's reader goroutine calls
// it.
func (c *Link) wakeRelayed(direct bool) {
	c.publishAll()
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

// noAccount is the Accounter of relayed messages nobody counts.
type noAccount struct{}

func (noAccount) Written(int, int) {}
