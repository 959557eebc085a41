package circ_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
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

// leafOptions say how a test leaf behaves.
type leafOptions struct {
	peerType uint8 // of its LNK_CONN and span; HAMMER2 when 0
	gated    bool  // wrap the socket so reads can be held
	// refuse answers every circuit aimed at the leaf with CANTCIRC.
	refuse bool
	// silent leaves every circuit aimed at the leaf unanswered (it stays
	// in setup) while keeping its LNK_CIRC open.
	silent bool
	// queueBytes bounds its outbound queue for WaitRoom; 1 MiB when 0.
	queueBytes int
	// legacy leaves per-circuit flow control out of its LNK_CONN, as a
	// libdmsg peer or an older dmsgd would; window is the window it
	// grants otherwise (leafWindow when 0).
	legacy bool
	window int
}

// leafWindow is the window a test leaf grants on its circuits: the
// smallest a LNK_CONN may declare, so that windows run out quickly.
const leafWindow = dmsg.MinCircWindow

// rxSpan is a span the router relays to the leaf.
type rxSpan struct {
	msgid    uint64
	label    string
	dist     uint32
	peerType uint8
}

// leaf is a DMSG endpoint over iocom: it connects to a router, advertises
// its own span, records the spans it receives, opens circuits toward them
// and accepts circuits aimed at its span. Inside circuits it runs
// transactions and one-way messages (see circuit).
type leaf struct {
	tb    testing.TB
	label string
	opts  leafOptions
	nc    net.Conn
	gate  *gatedConn
	conn  *iocom.Link

	mu       sync.Mutex
	spans    map[uint64]rxSpan
	spanTx   *iocom.Tx // our advertisement; nil once withdrawn
	connTx   *iocom.Tx // our LNK_CONN
	rconn    bool      // the router's LNK_CONN is open
	rconnID  uint64    // its msgid
	circs    map[*circuit]bool
	accepted []*circuit
	closed   bool
	ourConn  dmsg.Conn // the LNK_CONN it sent
}

// dialLeaf connects a leaf labelled label to the router at addr, sends its
// LNK_CONN and advertises its span. The test's cleanup closes it.
func dialLeaf(tb testing.TB, addr, label string, opts leafOptions) *leaf {
	tb.Helper()
	if opts.peerType == 0 {
		opts.peerType = dmsg.PeerHammer2
	}
	if opts.queueBytes == 0 {
		opts.queueBytes = 1 << 20
	}
	if opts.window == 0 {
		opts.window = leafWindow
	}
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		tb.Fatalf("leaf %s: dial %s: %v", label, addr, err)
	}
	l := &leaf{tb: tb, label: label, opts: opts, nc: nc,
		spans: make(map[uint64]rxSpan), circs: make(map[*circuit]bool)}
	timeout := 10 * time.Second // room for a loaded machine
	if opts.gated {
		l.gate = newGatedConn(nc)
		nc = l.gate
		timeout = -1 // a held reader must not count the router as silent
	}
	l.conn = iocom.NewLink(nc, iocom.Config{
		ID:                "leaf-" + label,
		KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout:  timeout,
		QueueBytes:        opts.queueBytes,
		Handler:           l,
		Logger:            zap.NewNop(),
	})
	tb.Cleanup(l.close)
	c := dmsg.Conn{PfsFsid: config.NodeIDFor(label), PeerMask: ^uint64(0), PeerType: opts.peerType,
		ProtoVersion: 1, PfsMask: ^uint64(0), FsLabel: label}
	if !opts.legacy {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, uint32(opts.window)
	}
	l.ourConn = c
	l.connTx, err = l.conn.Open(dmsg.NewConnMsg(0, &c, false), func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete != 0 {
			tx.Close()
		}
	})
	if err != nil {
		tb.Fatalf("leaf %s: LNK_CONN: %v", label, err)
	}
	l.advertise()
	l.conn.Start()
	return l
}

// ownSpan is the leaf's advertisement.
func (l *leaf) ownSpan() dmsg.Span {
	return dmsg.Span{
		PfsClid:      config.NodeIDFor("leaves"),
		PfsFsid:      config.NodeIDFor(l.label),
		PeerType:     l.opts.peerType,
		ProtoVersion: 1,
		Rnss:         1,
		ClLabel:      "leaves",
		FsLabel:      l.label,
	}
}

// advertise opens the leaf's span (dist 0).
func (l *leaf) advertise() {
	s := l.ownSpan()
	tx, err := l.conn.Open(dmsg.NewSpanMsg(0, &s), func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete != 0 {
			tx.Close()
			l.mu.Lock()
			if l.spanTx == tx {
				l.spanTx = nil
			}
			l.mu.Unlock()
		}
	})
	if err != nil {
		l.tb.Fatalf("leaf %s: LNK_SPAN: %v", l.label, err)
	}
	l.mu.Lock()
	l.spanTx = tx
	l.mu.Unlock()
}

// withdraw closes the leaf's span.
func (l *leaf) withdraw() {
	l.mu.Lock()
	tx := l.spanTx
	l.mu.Unlock()
	if tx != nil {
		tx.Close()
	}
}

func (l *leaf) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.conn.Close()
	select {
	case <-l.conn.Done():
	case <-time.After(waitTimeout):
		l.tb.Errorf("leaf %s: link did not go down", l.label)
	}
}

// Accept handles the transactions the router opens on circuit 0.
func (l *leaf) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	switch dmsg.Base(m.Cmd) {
	case dmsg.LnkConn, dmsg.LnkConnV2:
		// Both LNK_CONNs known: flow control is in force when both name
		// it (docs/PROTOCOL.md 11.1), before any circuit can exist.
		if rc, err := m.Conn(); err == nil && dmsg.Base(m.Cmd) == dmsg.LnkConn && l.ourConn.Shared(&rc, dmsg.CapCircWindow) {
			l.conn.SetCircWindows(int(l.ourConn.CircWindow), int(rc.CircWindow))
		}
		tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
		l.mu.Lock()
		l.rconn, l.rconnID = true, tx.MsgID()
		l.mu.Unlock()
		return func(tx *iocom.Tx, m *dmsg.Msg) {
			if m.Cmd&dmsg.FlagDelete != 0 {
				tx.Close()
				l.mu.Lock()
				l.rconn = false
				l.mu.Unlock()
			}
		}
	case dmsg.LnkSpan:
		s, _ := m.Span()
		l.mu.Lock()
		l.spans[tx.MsgID()] = rxSpan{msgid: tx.MsgID(), label: s.FsLabel, dist: s.Dist, peerType: s.PeerType}
		l.mu.Unlock()
		tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
		return func(tx *iocom.Tx, m *dmsg.Msg) {
			if m.Cmd&dmsg.FlagDelete == 0 {
				return
			}
			tx.Close()
			l.mu.Lock()
			delete(l.spans, tx.MsgID())
			l.mu.Unlock()
		}
	case dmsg.LnkCirc:
		return l.acceptCircuit(tx, m)
	}
	return nil
}

// OneWay ignores one-way messages on circuit 0.
func (l *leaf) OneWay(*iocom.Link, *dmsg.Msg) {}

// acceptCircuit accepts a circuit aimed at the leaf's own span.
func (l *leaf) acceptCircuit(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	body, _ := m.Circ()
	l.mu.Lock()
	own := l.spanTx != nil && l.spanTx.MsgID() == body.Target
	l.mu.Unlock()
	if !own || l.opts.refuse {
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c := newCircuit(l, false)
	c.tx = tx
	if l.opts.silent {
		l.mu.Lock()
		l.circs[c] = true
		l.accepted = append(l.accepted, c)
		l.mu.Unlock()
		return c.circMsg
	}
	scope, err := l.conn.OpenScope(tx.MsgID(), false, c)
	if err != nil {
		l.tb.Errorf("leaf %s: OpenScope(%d): %v", l.label, tx.MsgID(), err)
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	c.scope = scope
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	close(c.up)
	l.mu.Lock()
	l.circs[c] = true
	l.accepted = append(l.accepted, c)
	l.mu.Unlock()
	return c.circMsg
}

// spanFor returns the best span the leaf holds for the node labelled
// label.
func (l *leaf) spanFor(label string) (rxSpan, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best rxSpan
	ok := false
	for _, s := range l.spans {
		if s.label == label && (!ok || s.dist < best.dist || s.dist == best.dist && s.msgid < best.msgid) {
			best, ok = s, true
		}
	}
	return best, ok
}

// waitSpan waits until the leaf holds a span for label and returns it.
func (l *leaf) waitSpan(label string) rxSpan {
	l.tb.Helper()
	var s rxSpan
	eventually(l.tb, l.label+" holds a span for "+label, func() error {
		var ok bool
		if s, ok = l.spanFor(label); !ok {
			return fmt.Errorf("no span for %s", label)
		}
		return nil
	})
	return s
}

// open opens a circuit on the span with msgid target and makes this leaf
// its opening end. It does not wait for the answer.
func (l *leaf) open(target uint64) *circuit {
	l.tb.Helper()
	c := newCircuit(l, true)
	l.mu.Lock()
	l.circs[c] = true
	l.mu.Unlock()
	// The LNK_CIRC's handler may run before the scope exists (an
	// immediate refusal); c.mu makes it wait until open has finished.
	c.mu.Lock()
	tx, err := l.conn.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: target}), c.circMsg)
	if err != nil {
		c.mu.Unlock()
		l.tb.Fatalf("leaf %s: LNK_CIRC: %v", l.label, err)
	}
	c.tx = tx
	scope, err := l.conn.OpenScope(tx.MsgID(), true, c)
	if err != nil {
		c.mu.Unlock()
		l.tb.Fatalf("leaf %s: OpenScope(%d): %v", l.label, tx.MsgID(), err)
	}
	c.scope = scope
	c.mu.Unlock()
	return c
}

// openTo opens a circuit to the node labelled label and waits until the
// far end accepted it.
func (l *leaf) openTo(label string) *circuit {
	l.tb.Helper()
	c := l.open(l.waitSpan(label).msgid)
	c.waitUp()
	return c
}

// waitAccepted waits for the n-th circuit (0-based) aimed at the leaf.
func (l *leaf) waitAccepted(n int) *circuit {
	l.tb.Helper()
	var c *circuit
	eventually(l.tb, fmt.Sprintf("%s accepted circuit #%d", l.label, n), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.accepted) <= n {
			return fmt.Errorf("%d accepted", len(l.accepted))
		}
		c = l.accepted[n]
		return nil
	})
	return c
}

// openCircuits returns the circuits of the leaf not yet closed.
func (l *leaf) openCircuits() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.circs)
}

// checkClean reports an error while the leaf holds circuit state: an
// open circuit, an open scope or transaction inside one, or more
// transactions on its link than its LNK_CONNs and spans account for.
func (l *leaf) checkClean() error {
	l.mu.Lock()
	n := len(l.circs)
	want := len(l.spans) + 1 // our LNK_CONN
	if l.spanTx != nil {
		want++
	}
	if l.rconn {
		want++
	}
	l.mu.Unlock()
	if n != 0 {
		return fmt.Errorf("leaf %s: %d circuit(s) open", l.label, n)
	}
	if got := l.conn.Stats().OpenTx; got != want {
		return fmt.Errorf("leaf %s: %d transactions open on the link, want %d (LNK_CONNs and spans only)", l.label, got, want)
	}
	return nil
}
