package e2e

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// leaf is a DMSG client written against the wire protocol alone: an
// encoder, a decoder and the few rules of docs/PROTOCOL.md a leaf needs. It
// speaks to a router the way an independent implementation would. Unless
// it offers per-circuit flow control (leafOptions.window), it is a peer
// without it, as libdmsg or an older dmsgd is.
type leaf struct {
	t    *testing.T
	nc   net.Conn
	opts leafOptions
	wmu  sync.Mutex
	bw   *bufio.Writer
	enc  *dmsg.Encoder

	// Per-circuit flow control (docs/PROTOCOL.md 11.2), with opts.window: the
	// credit left on each circuit and what was handed to data but not yet
	// granted back, both keyed by the circuit as the router names it.
	fmu      sync.Mutex
	fcond    *sync.Cond
	txWindow int64 // the router's circ_window
	credit   map[circKey]int64
	unacked  map[circKey]int64
	ended    map[circKey]bool // circuits whose LNK_CIRC ended: no credit will come
	closed   bool
	gate     chan struct{} // while not nil the reader waits: a consumer that stopped reading

	mu      sync.Mutex
	spans   map[string]uint64 // label -> msgid of the span the router holds open on us
	circIn  []uint64          // LNK_CIRCs the router opened on us
	circEnd map[uint64]uint32 // msgid of a LNK_CIRC -> error it ended with
	circUp  map[uint64]bool   // our LNK_CIRCs the far end accepted
	data    chan *dmsg.Msg    // circuit data received
	changed chan struct{}
	done    chan struct{}
	replies sync.WaitGroup // answers the reader sends without waiting for them
}

// leafOptions say how a leaf behaves.
type leafOptions struct {
	// window offers per-circuit flow control in the leaf's LNK_CONN with
	// this window; 0 leaves it out.
	window uint32
	// ping sends a LNK_PING every 500 ms, so that the router does not
	// take the leaf for dead while its reader is paused.
	ping bool
}

// circKey names a circuit on the leaf's link: its id, and whether the
// leaf opened it (data from the router then carries REVCIRC).
type circKey struct {
	id    uint64
	local bool
}

// dialLeaf connects a leaf without per-circuit flow control to a router's
// listen port, introduces it with LNK_CONN and, if label is not empty,
// advertises a span called label.
func dialLeaf(t *testing.T, port int, label string) *leaf {
	t.Helper()
	return dialLeafWith(t, port, label, leafOptions{})
}

// dialLeafWith is dialLeaf with options.
func dialLeafWith(t *testing.T, port int, label string, opts leafOptions) *leaf {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l := &leaf{t: t, nc: nc, opts: opts, bw: bufio.NewWriterSize(nc, 64<<10),
		credit: map[circKey]int64{}, unacked: map[circKey]int64{}, ended: map[circKey]bool{},
		spans: map[string]uint64{}, circEnd: map[uint64]uint32{}, circUp: map[uint64]bool{},
		data: make(chan *dmsg.Msg, 1024), changed: make(chan struct{}, 1), done: make(chan struct{})}
	l.fcond = sync.NewCond(&l.fmu)
	l.enc = dmsg.NewEncoder(l.bw)
	go l.readLoop()
	t.Cleanup(l.close)
	if opts.ping {
		l.replies.Go(l.pingLoop)
	}

	id := config.NodeIDFor("leaf-" + label)
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label, PfsFsid: id}
	if opts.window > 0 {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, opts.window
	}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	l.send(m)
	if label != "" {
		s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: id, PeerType: dmsg.PeerHammer2,
			ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 2
		l.send(m)
	}
	return l
}

func (l *leaf) close() {
	l.nc.Close()
	l.resume()
	<-l.done
	l.replies.Wait()
}

// send writes and flushes messages.
func (l *leaf) send(msgs ...*dmsg.Msg) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, m := range msgs {
		if err := l.enc.Encode(m); err != nil {
			return err
		}
	}
	return l.bw.Flush()
}

func (l *leaf) readLoop() {
	defer close(l.done)
	defer l.shut()
	dec := dmsg.NewDecoder(l.nc)
	for {
		l.waitGate()
		m, err := dec.Decode()
		if err != nil {
			return
		}
		if m.Circuit != 0 {
			if dmsg.IsCredit(&m.Header) {
				l.credited(m)
				continue
			}
			l.data <- m
			l.consumed(m)
			continue
		}
		l.note(m)
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
}

// note keeps the books on spans and circuits.
func (l *leaf) note(m *dmsg.Msg) {
	create, del := m.Cmd&dmsg.FlagCreate != 0, m.Cmd&dmsg.FlagDelete != 0
	reply := m.Cmd&dmsg.FlagReply != 0
	base := dmsg.Base(m.Cmd)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case base == dmsg.LnkConn && create && !reply:
		if c, err := m.Conn(); err == nil && l.opts.window > 0 && c.Caps&dmsg.CapCircWindow != 0 {
			l.fmu.Lock()
			l.txWindow = int64(c.CircWindow)
			l.fmu.Unlock()
		}
	case base == dmsg.LnkSpan && !reply:
		if s, err := m.Span(); err == nil && create && !del {
			l.spans[s.FsLabel] = m.MsgID
		}
		if del {
			for k, v := range l.spans {
				if v == m.MsgID {
					delete(l.spans, k)
				}
			}
		}
	case base == dmsg.LnkCirc && create && !reply:
		l.circIn = append(l.circIn, m.MsgID)
		if del {
			l.circEnd[m.MsgID] = m.Error
		}
	case reply && create && !del && m.MsgID >= 100:
		l.circUp[m.MsgID] = true
	case reply && del && m.MsgID >= 100:
		// The far side ended a LNK_CIRC we opened: close ours too.
		if _, ended := l.circEnd[m.MsgID]; !ended {
			id := m.MsgID
			l.replies.Go(func() { l.send(&dmsg.Msg{Header: dmsg.Header{MsgID: id, Cmd: dmsg.LnkError | dmsg.FlagDelete}}) })
		}
		l.circEnd[m.MsgID] = m.Error
		l.circuitEnded(circKey{id: m.MsgID, local: true})
	}
	// A router closing a transaction of its own (DELETE, not REPLY) on a
	// LNK_CIRC it opened on us ends the circuit: answer the DELETE.
	if del && !reply && base != dmsg.LnkSpan {
		for _, id := range l.circIn {
			if id == m.MsgID {
				l.circEnd[id] = m.Error
				l.replies.Go(func() {
					l.send(&dmsg.Msg{Header: dmsg.Header{MsgID: id,
						Cmd: dmsg.LnkError | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans}})
				})
			}
		}
	}
}

// wait polls cond on every change the leaf sees, up to timeout.
func (l *leaf) wait(what string, timeout time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		ok := cond()
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-l.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			l.t.Fatalf("leaf: timed out after %v waiting for %s", timeout, what)
		}
	}
}

// pingLoop sends a LNK_PING every 500 ms until the link is gone.
func (l *leaf) pingLoop() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
			if l.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}}) != nil {
				return
			}
		}
	}
}

// Per-circuit flow control ---------------------------------------------------

// flow reports whether per-circuit flow control is in force on the link.
func (l *leaf) flow() bool {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	return l.txWindow > 0
}

// takeCredit waits until a message of n bytes fits the credit of circuit
// k, and takes it. Without flow control it returns at once.
func (l *leaf) takeCredit(k circKey, n int) error {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	for !l.tryCreditLocked(k, n) {
		if l.closed || l.ended[k] {
			return net.ErrClosed
		}
		l.fcond.Wait()
	}
	return nil
}

// circuitEnded wakes senders waiting for credit on a circuit that ended.
// Called with l.mu held.
func (l *leaf) circuitEnded(k circKey) {
	l.fmu.Lock()
	l.ended[k] = true
	l.fmu.Unlock()
	l.fcond.Broadcast()
}

// tryCredit takes the credit for a message of n bytes on circuit k if it
// fits now.
func (l *leaf) tryCredit(k circKey, n int) bool {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	return l.tryCreditLocked(k, n)
}

func (l *leaf) tryCreditLocked(k circKey, n int) bool {
	if l.txWindow == 0 {
		return true
	}
	c, ok := l.credit[k]
	if !ok {
		c = l.txWindow
	}
	if int64(n) > c {
		return false
	}
	l.credit[k] = c - int64(n)
	return true
}

// credited adds a LNK_CREDIT's increment.
func (l *leaf) credited(m *dmsg.Msg) {
	c, _ := m.Credit()
	// The router's REVCIRC says the leaf opened the circuit.
	k := circKey{id: m.Circuit, local: m.Cmd&dmsg.FlagRevCirc != 0}
	l.fmu.Lock()
	cur, ok := l.credit[k]
	if !ok {
		cur = l.txWindow
	}
	l.credit[k] = cur + int64(c.Increment)
	l.fmu.Unlock()
	l.fcond.Broadcast()
}

// consumed grants credit back once half the leaf's window of a circuit's
// data has been handed over.
func (l *leaf) consumed(m *dmsg.Msg) {
	if l.opts.window == 0 || !l.flow() {
		return
	}
	k := circKey{id: m.Circuit, local: m.Cmd&dmsg.FlagRevCirc != 0}
	l.fmu.Lock()
	l.unacked[k] += int64(m.EncodedSize())
	g := l.unacked[k]
	if g < int64(l.opts.window)/2 {
		l.fmu.Unlock()
		return
	}
	l.unacked[k] = 0
	l.fmu.Unlock()
	// Our REVCIRC says the router opened the circuit.
	l.send(dmsg.NewCreditMsg(k.id, !k.local, uint64(g)))
}

// shut wakes senders waiting for credit once the link is gone.
func (l *leaf) shut() {
	l.fmu.Lock()
	l.closed = true
	l.fmu.Unlock()
	l.fcond.Broadcast()
}

// pause stops the leaf's reader, as a consumer that stops reading its
// socket; resume lets it go on.
func (l *leaf) pause() {
	l.fmu.Lock()
	if l.gate == nil {
		l.gate = make(chan struct{})
	}
	l.fmu.Unlock()
}

func (l *leaf) resume() {
	l.fmu.Lock()
	if l.gate != nil {
		close(l.gate)
		l.gate = nil
	}
	l.fmu.Unlock()
}

func (l *leaf) waitGate() {
	l.fmu.Lock()
	g := l.gate
	l.fmu.Unlock()
	if g != nil {
		<-g
	}
}
