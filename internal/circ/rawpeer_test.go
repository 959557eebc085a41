package circ_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// rawPeer is a dmsgtest peer, which sends exactly the frames it is told
// to (so it can break every rule, or skip every cost), with the books
// these tests keep on what the router opens on it, kept by the
// Recorder's OnMsg hook. Everything it books stays in the record too.
type rawPeer struct {
	*dmsgtest.Peer
	rec *dmsgtest.Recorder

	// onMsg, if set, sees every received message first; it returns true
	// to skip the bookkeeping and the record (a benchmark-like data
	// path), and m is then recycled: onMsg must not keep it.
	onMsg func(m *dmsg.Msg) bool

	mu      sync.Mutex
	spans   map[uint64]dmsg.Span // spans the router holds open on us
	rxCircs []uint64             // LNK_CIRCs the router opened on us, in order
	circEnd map[uint64]uint32    // our LNK_CIRCs the router ended, with the error
	circUp  map[uint64]bool      // our LNK_CIRCs the far end accepted
	// credit adds up the LNK_CREDIT increments received, by circuit.
	credit map[uint64]uint64
	// routerConn is the router's LNK_CONN, once received.
	routerConn *dmsg.Conn
	gotPong    chan struct{} // signalled on every LNK_PING|REPLY
}

// dialRaw connects a raw peer to addr and starts recording what it
// receives. The test's cleanup closes it.
func dialRaw(tb testing.TB, addr string, onMsg func(*dmsg.Msg) bool) *rawPeer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	peer, err := dmsgtest.Dial(ctx, "tcp", addr)
	if err != nil {
		tb.Fatalf("raw peer: %v", err)
	}
	p := &rawPeer{Peer: peer, onMsg: onMsg,
		spans: make(map[uint64]dmsg.Span), circEnd: make(map[uint64]uint32), circUp: make(map[uint64]bool),
		credit: make(map[uint64]uint64), gotPong: make(chan struct{}, 1)}
	p.rec = peer.Record(tb, dmsgtest.RecordOptions{OnMsg: p.note})
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
	if err := p.Write(m); err != nil {
		return err
	}
	if label != "" {
		s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: config.NodeIDFor("raw-" + label),
			PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 2
		if err := p.Write(m); err != nil {
			return err
		}
	}
	return p.Flush()
}

// ping sends a LNK_PING and waits up to d for an answer; the router
// answers from its reader, so an answer means everything sent before it
// has been handled. Unlike the Recorder's Barrier it does not fail the
// test: a fuzzed link may well be gone.
func (p *rawPeer) ping(d time.Duration) bool {
	select {
	case <-p.gotPong:
	default:
	}
	if p.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}}) != nil {
		return false
	}
	select {
	case <-p.gotPong:
		return true
	case <-p.rec.Done():
	case <-time.After(d):
	}
	return false
}

// note keeps the books on what the router opened and closed (the
// Recorder's OnMsg, on its reader goroutine).
func (p *rawPeer) note(m *dmsg.Msg) (keep bool) {
	if p.onMsg != nil && p.onMsg(m) {
		return false
	}
	if m.Circuit != 0 {
		if dmsg.IsCredit(&m.Header) {
			c, _ := m.Credit()
			p.mu.Lock()
			p.credit[m.Circuit] += c.Increment
			p.mu.Unlock()
		}
		return true
	}
	base := dmsg.Base(m.Cmd)
	create, del := m.Cmd&dmsg.FlagCreate != 0, m.Cmd&dmsg.FlagDelete != 0
	reply := m.Cmd&(dmsg.FlagReply|dmsg.FlagRevTrans) != 0
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case (base == dmsg.LnkConn || base == dmsg.LnkConnV2) && create && !reply:
		if c, err := m.Conn(); err == nil {
			p.routerConn = &c
		}
	case base == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0:
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
	return true
}

// txRef names a transaction on the peer's link: its msgid, and whether
// the peer opened it (the router's messages in it are replies).
type txRef struct {
	msgid uint64
	ours  bool
}

// circMsgs returns, from the record, every message the router sent in
// transaction tx: besides its LNK_CONN (1) and span (2), a raw peer
// opens only LNK_CIRCs, and the router's msgids name its own
// transactions alone.
func (p *rawPeer) circMsgs(tx txRef) []*dmsg.Msg {
	var out []*dmsg.Msg
	for _, m := range p.rec.All() {
		reply := m.Cmd&(dmsg.FlagReply|dmsg.FlagRevTrans) != 0
		if m.Circuit == 0 && m.MsgID == tx.msgid && reply == tx.ours {
			out = append(out, m)
		}
	}
	return out
}

// circCmds returns the cmds the router sent in a LNK_CIRC transaction.
func (p *rawPeer) circCmds(tx txRef) []uint32 {
	var cmds []uint32
	for _, m := range p.circMsgs(tx) {
		cmds = append(cmds, m.Cmd)
	}
	return cmds
}

// circErr returns the error of the last message the router sent in a
// LNK_CIRC transaction.
func (p *rawPeer) circErr(tx txRef) uint32 {
	ms := p.circMsgs(tx)
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Error
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

// firstCircuit waits for the first LNK_CIRC the router opens on the peer
// and returns its msgid.
func (p *rawPeer) firstCircuit(tb testing.TB) uint64 {
	tb.Helper()
	m := p.rec.Find("a LNK_CIRC aimed at the raw peer", func(m *dmsg.Msg) bool {
		return m.Circuit == 0 && dmsg.Base(m.Cmd) == dmsg.LnkCirc && m.Cmd&dmsg.FlagCreate != 0 &&
			m.Cmd&(dmsg.FlagReply|dmsg.FlagRevTrans) == 0
	})
	return m.MsgID
}

// close closes the peer's stream and waits for its reader.
func (p *rawPeer) close() {
	p.Close()
	<-p.rec.Done()
}
