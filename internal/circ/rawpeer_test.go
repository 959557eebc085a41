package circ_test

import (
	"bufio"
	"net"
	"sync"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// rawPeer speaks DMSG with nothing but an encoder and a decoder: no state
// machine, no keepalive. It sends exactly the frames it is told to, so it
// can break every rule (fuzzing) or skip every cost (benchmarks). Its
// reader goroutine records what the router opens on it.
type rawPeer struct {
	nc  net.Conn
	bw  *bufio.Writer
	enc *dmsg.Encoder
	seq uint8 // sequence number of the next message, mirroring enc's
	wmu sync.Mutex

	// onMsg, if set before start, sees every received message first; it
	// returns true to skip the bookkeeping (benchmark data path), and m is
	// then recycled: onMsg must not keep it.
	onMsg func(m *dmsg.Msg) bool

	mu      sync.Mutex
	spans   map[uint64]dmsg.Span // spans the router holds open on us
	rxCircs []uint64             // LNK_CIRCs the router opened on us, in order
	circEnd map[uint64]uint32    // our LNK_CIRCs the router ended, with the error
	circUp  map[uint64]bool      // our LNK_CIRCs the far end accepted
	// circMsgs lists the cmds of every message the router sent in a
	// LNK_CIRC transaction (ours or its own), and circErrs the error of
	// the last one.
	circMsgs map[txRef][]uint32
	circErrs map[txRef]uint32
	// credit adds up the LNK_CREDIT increments received, by circuit.
	credit map[uint64]uint64
	// routerConn is the router's LNK_CONN, once received.
	routerConn *dmsg.Conn
	pongs      int
	gotPong    chan struct{} // signalled on every LNK_PING|REPLY
	done       chan struct{} // closed when the reader stops
}

// dialRaw connects a raw peer to addr and starts its reader.
func dialRaw(addr string, onMsg func(*dmsg.Msg) bool) (*rawPeer, error) {
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		return nil, err
	}
	return startRaw(nc, onMsg), nil
}

// startRaw runs a raw peer over an established connection.
func startRaw(nc net.Conn, onMsg func(*dmsg.Msg) bool) *rawPeer {
	p := &rawPeer{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), onMsg: onMsg,
		spans: make(map[uint64]dmsg.Span), circEnd: make(map[uint64]uint32), circUp: make(map[uint64]bool),
		circMsgs: make(map[txRef][]uint32), circErrs: make(map[txRef]uint32), credit: make(map[uint64]uint64),
		gotPong: make(chan struct{}, 1), done: make(chan struct{})}
	p.enc = dmsg.NewEncoder(p.bw)
	go p.readLoop()
	return p
}

// hello sends a LNK_CONN (msgid 1) asking for every span and, if label is
// not empty, advertises a span of that label (msgid 2). The peer does not
// offer per-circuit flow control (see helloWindow).
func (p *rawPeer) hello(label string) error { return p.helloWindow(label, 0) }

// helloWindow is hello offering CIRC_WINDOW with window (0: not at all).
// A raw peer keeps no windows itself: the test does, as it means.
func (p *rawPeer) helloWindow(label string, window uint32) error {
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label, PfsFsid: config.NodeIDFor("raw-" + label)}
	if window > 0 {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, window
	}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	if err := p.write(m); err != nil {
		return err
	}
	if label != "" {
		s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: config.NodeIDFor("raw-" + label),
			PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 2
		if err := p.write(m); err != nil {
			return err
		}
	}
	return p.flush()
}

// write encodes m into the peer's buffer (not flushed).
func (p *rawPeer) write(m *dmsg.Msg) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	p.seq++
	return p.enc.Encode(m)
}

func (p *rawPeer) flush() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return p.bw.Flush()
}

// send writes and flushes m.
func (p *rawPeer) send(m *dmsg.Msg) error {
	if err := p.write(m); err != nil {
		return err
	}
	return p.flush()
}

// rawBytes writes b to the socket as is (framing garbage).
func (p *rawPeer) rawBytes(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.bw.Flush(); err != nil {
		return err
	}
	p.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err := p.nc.Write(b)
	return err
}

// ping sends a LNK_PING and waits up to d for an answer; the router
// answers from its reader, so an answer means everything sent before it
// has been handled.
func (p *rawPeer) ping(d time.Duration) bool {
	select {
	case <-p.gotPong:
	default:
	}
	if p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}}) != nil {
		return false
	}
	select {
	case <-p.gotPong:
		return true
	case <-p.done:
	case <-time.After(d):
	}
	return false
}

func (p *rawPeer) readLoop() {
	defer close(p.done)
	dec := dmsg.NewDecoder(p.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			return
		}
		if p.onMsg != nil && p.onMsg(m) {
			m.Release()
			continue
		}
		p.note(m)
	}
}

// note keeps the books on what the router opened and closed.
func (p *rawPeer) note(m *dmsg.Msg) {
	if m.Circuit != 0 {
		if dmsg.IsCredit(&m.Header) {
			c, _ := m.Credit()
			p.mu.Lock()
			p.credit[m.Circuit] += c.Increment
			p.mu.Unlock()
		}
		return
	}
	base := dmsg.Base(m.Cmd)
	create, del := m.Cmd&dmsg.FlagCreate != 0, m.Cmd&dmsg.FlagDelete != 0
	reply := m.Cmd&(dmsg.FlagReply|dmsg.FlagRevTrans) != 0
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isCircLocked(m, base, reply) {
		k := txRef{m.MsgID, reply}
		p.circMsgs[k] = append(p.circMsgs[k], m.Cmd)
		p.circErrs[k] = m.Error
	}
	switch {
	case (base == dmsg.LnkConn || base == dmsg.LnkConnV2) && create && !reply:
		if c, err := m.Conn(); err == nil {
			p.routerConn = &c
		}
	case base == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0:
		p.pongs++
		select {
		case p.gotPong <- struct{}{}:
		default:
		}
	case base == dmsg.LnkSpan && create && !reply:
		if s, err := m.Span(); err == nil && !del {
			p.spans[m.MsgID] = s
		}
	case base == dmsg.LnkCirc && create && !reply:
		p.rxCircs = append(p.rxCircs, m.MsgID)
	case reply && m.MsgID != 0:
		// An answer in a transaction we opened: our LNK_CIRCs are the
		// ones worth tracking.
		if create && !del {
			p.circUp[m.MsgID] = true
		}
		if del {
			p.circEnd[m.MsgID] = m.Error
		}
	case !reply && del:
		delete(p.spans, m.MsgID)
	}
}

// isCircLocked reports whether m belongs to a LNK_CIRC transaction: one
// the router opened on us, or (a reply) one of ours, which are the only
// transactions a raw peer opens besides its LNK_CONN (1) and span (2).
func (p *rawPeer) isCircLocked(m *dmsg.Msg, base uint32, reply bool) bool {
	if base == dmsg.LnkCirc && m.Cmd&dmsg.FlagCreate != 0 && !reply {
		return true
	}
	if reply {
		return m.MsgID > 2
	}
	for _, id := range p.rxCircs {
		if id == m.MsgID {
			return true
		}
	}
	return false
}

// circCmds returns the cmds the router sent in a LNK_CIRC transaction.
func (p *rawPeer) circCmds(tx txRef) []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint32(nil), p.circMsgs[tx]...)
}

// txRef names a transaction on the peer's link: its msgid, and whether
// the peer opened it (the router's messages in it are replies).
type txRef struct {
	msgid uint64
	ours  bool
}

// circErr returns the error of the last message the router sent in a
// LNK_CIRC transaction.
func (p *rawPeer) circErr(tx txRef) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.circErrs[tx]
}

// circEnded returns the error the router ended our LNK_CIRC msgid with,
// and whether it has.
func (p *rawPeer) circEnded(msgid uint64) (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	code, ok := p.circEnd[msgid]
	return code, ok
}

// credited returns the LNK_CREDIT increments received on circuit.
func (p *rawPeer) credited(circuit uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.credit[circuit]
}

// spanFor returns the msgid of a span labelled label the router holds
// open on the peer.
func (p *rawPeer) spanFor(label string) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, s := range p.spans {
		if s.FsLabel == label {
			return id, true
		}
	}
	return 0, false
}

func (p *rawPeer) close() {
	p.nc.Close()
	<-p.done
}
