package router_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// ---------------------------------------------------------------------------
// leaf: a DMSG endpoint over iocom, recording what the router sends it.

// leafConfig says how a leaf presents itself. The zero value sends a
// dmsgd-form LNK_CONN labelled "leaf" asking for every span, and accepts
// the router's LNK_CONN.
type leafConfig struct {
	Label  string     // fs_label of the leaf's LNK_CONN; "leaf" when empty
	Conn   *dmsg.Conn // the LNK_CONN to send; nil = PeerClient, every mask bit
	V2     bool       // send the libdmsg 2014+ (0x1106) form
	NoConn bool       // send no LNK_CONN at all

	// RefuseRouterConn answers every router LNK_CONN with NOSUPP, as
	// shell clients do.
	RefuseRouterConn bool
}

// gotSpan is one LNK_SPAN the router opened on the leaf and has not
// withdrawn.
type gotSpan struct {
	MsgID uint64
	Span  dmsg.Span
	tx    *iocom.Tx
}

// routerConn is one LNK_CONN the router opened on the leaf.
type routerConn struct {
	MsgID  uint64
	Base   uint32 // LnkConn or LnkConnV2
	Info   dmsg.Conn
	Closed bool   // the router's DELETE (or the link's loss) arrived
	Error  uint32 // of the terminating message
	Lost   bool   // terminated by link loss rather than a DELETE on the wire
}

// advert is one LNK_SPAN the leaf opened.
type advert struct {
	tx *iocom.Tx
	l  *leaf
	// guarded by l.mu
	acked, refused bool
	err            uint32
}

// leaf is a test client over iocom: it sends its own LNK_CONN, accepts
// (or refuses) the router's, acknowledges and records every span relayed
// to it, and can advertise and withdraw spans of its own.
type leaf struct {
	tb   testing.TB
	cfg  leafConfig
	nc   net.Conn
	conn *iocom.Link

	mu         sync.Mutex
	connTx     *iocom.Tx // our LNK_CONN
	connAcked  bool
	connClosed bool
	connErr    uint32
	spans      map[uint64]*gotSpan
	spanEvents int // LNK_SPAN CREATEs received, ever
	routerConn []*routerConn
	shellOut   []string
}

// dialLeaf connects a leaf to addr (tcp://host:port or unix:///path) and
// sends its LNK_CONN. The test's cleanup closes it.
func dialLeaf(tb testing.TB, addr string, cfg leafConfig) *leaf {
	tb.Helper()
	if cfg.Label == "" {
		cfg.Label = "leaf"
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nc, err := dialURL(ctx, addr)
	if err != nil {
		tb.Fatalf("leaf %s: dial %s: %v", cfg.Label, addr, err)
	}
	l := &leaf{tb: tb, cfg: cfg, nc: nc, spans: make(map[uint64]*gotSpan)}
	l.conn = iocom.NewLink(nc, iocom.Config{ID: "leaf-" + cfg.Label, Handler: l, Logger: zap.NewNop()})
	tb.Cleanup(l.close)
	if !cfg.NoConn {
		c := dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: ^uint64(0), ProtoVersion: 1}
		if cfg.Conn != nil {
			c = *cfg.Conn
		}
		if c.FsLabel == "" {
			c.FsLabel = cfg.Label
		}
		tx, err := l.conn.Open(dmsg.NewConnMsg(0, &c, cfg.V2), l.ourConnMsg)
		if err != nil {
			tb.Fatalf("leaf %s: LNK_CONN: %v", cfg.Label, err)
		}
		l.connTx = tx
	}
	l.conn.Start()
	return l
}

// Accept handles the transactions the router opens: its LNK_CONN and the
// spans it relays.
func (l *leaf) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	switch dmsg.Base(m.Cmd) {
	case dmsg.LnkConn, dmsg.LnkConnV2:
		info, _ := m.Conn()
		rc := &routerConn{MsgID: tx.MsgID(), Base: dmsg.Base(m.Cmd), Info: info}
		l.mu.Lock()
		l.routerConn = append(l.routerConn, rc)
		l.mu.Unlock()
		if l.cfg.RefuseRouterConn {
			tx.CloseError(dmsg.ErrNoSupp)
			return nil
		}
		tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
		return func(tx *iocom.Tx, m *dmsg.Msg) {
			if m.Cmd&dmsg.FlagDelete == 0 {
				return
			}
			l.mu.Lock()
			rc.Closed, rc.Error = true, m.Error
			rc.Lost = m.Error == dmsg.ErrLostLink && m.Cmd&dmsg.FlagAbort != 0
			l.mu.Unlock()
			tx.Close()
		}
	case dmsg.LnkSpan:
		s, err := m.Span()
		if err != nil {
			return nil
		}
		g := &gotSpan{MsgID: tx.MsgID(), Span: s, tx: tx}
		l.mu.Lock()
		l.spans[g.MsgID] = g
		l.spanEvents++
		l.mu.Unlock()
		tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
		return func(tx *iocom.Tx, m *dmsg.Msg) {
			if m.Cmd&dmsg.FlagDelete == 0 {
				return
			}
			l.mu.Lock()
			delete(l.spans, g.MsgID)
			l.mu.Unlock()
			tx.Close()
		}
	}
	return nil
}

// OneWay records shell output.
func (l *leaf) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) == dmsg.DbgShell && m.Cmd&dmsg.FlagReply != 0 {
		l.mu.Lock()
		l.shellOut = append(l.shellOut, strings.TrimRight(string(m.Aux), "\x00"))
		l.mu.Unlock()
	}
}

// ourConnMsg records the router's answers to our LNK_CONN.
func (l *leaf) ourConnMsg(tx *iocom.Tx, m *dmsg.Msg) {
	del := m.Cmd&dmsg.FlagDelete != 0
	l.mu.Lock()
	if m.Cmd&dmsg.FlagCreate != 0 && !del {
		l.connAcked = true
	}
	if del {
		l.connClosed, l.connErr = true, m.Error
	}
	l.mu.Unlock()
	if del {
		tx.Close()
	}
}

// sendVolConf sends v inside the leaf's open LNK_CONN.
func (l *leaf) sendVolConf(v dmsg.VolConf) {
	l.tb.Helper()
	if err := l.connTx.Send(dmsg.NewVolConfMsg(0, &v)); err != nil {
		l.tb.Fatalf("leaf %s: LNK_VOLCONF: %v", l.cfg.Label, err)
	}
}

// advertise opens a LNK_SPAN carrying s.
func (l *leaf) advertise(s dmsg.Span) *advert {
	l.tb.Helper()
	a := &advert{l: l}
	tx, err := l.conn.Open(dmsg.NewSpanMsg(0, &s), func(tx *iocom.Tx, m *dmsg.Msg) {
		l.mu.Lock()
		if m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagDelete == 0 {
			a.acked = true
		}
		del := m.Cmd&dmsg.FlagDelete != 0
		if del && !a.acked {
			a.refused, a.err = true, m.Error
		}
		l.mu.Unlock()
		if del {
			tx.Close() // as the reference does right after a refusal
		}
	})
	if err != nil {
		l.tb.Fatalf("leaf %s: LNK_SPAN: %v", l.cfg.Label, err)
	}
	a.tx = tx
	return a
}

// withdraw closes the advertisement (LNK_ERROR|DELETE).
func (a *advert) withdraw() { a.tx.Close() }

// state returns whether the router acknowledged or refused the span.
func (a *advert) state() (acked, refused bool, code uint32) {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	return a.acked, a.refused, a.err
}

// shell sends one DBG_SHELL command line ("" asks for the prompt).
func (l *leaf) shell(line string) {
	m := dmsg.NewMsg(dmsg.DbgShell)
	if line != "" {
		m.SetAux(append([]byte(line), 0))
	}
	l.conn.SendOneWay(m)
}

// shellOutput returns the shell output received so far.
func (l *leaf) shellOutput() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.shellOut)
}

// deleteSpan closes, from our side, a span the router relayed to us: the
// router must DELETE it back and not offer that link again.
func (l *leaf) deleteSpan(msgid uint64) {
	l.tb.Helper()
	l.mu.Lock()
	g := l.spans[msgid]
	l.mu.Unlock()
	if g == nil {
		l.tb.Fatalf("leaf %s: no open span %016x", l.cfg.Label, msgid)
	}
	g.tx.Close()
}

// spansOf returns the open spans whose fs_label is label, by msgid.
func (l *leaf) spansOf(label string) []gotSpan {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []gotSpan
	for _, g := range l.spans {
		if g.Span.FsLabel == label {
			out = append(out, *g)
		}
	}
	slices.SortFunc(out, func(a, b gotSpan) int { return cmpU64(a.MsgID, b.MsgID) })
	return out
}

// labels returns the sorted distinct fs_labels of the open spans.
func (l *leaf) labels() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, g := range l.spans {
		if !slices.Contains(out, g.Span.FsLabel) {
			out = append(out, g.Span.FsLabel)
		}
	}
	slices.Sort(out)
	return out
}

// routerConns returns copies of the router LNK_CONNs received so far.
func (l *leaf) routerConns() []routerConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]routerConn, len(l.routerConn))
	for i, rc := range l.routerConn {
		out[i] = *rc
	}
	return out
}

// connState reports what the router did with our LNK_CONN.
func (l *leaf) connState() (acked, closed bool, code uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connAcked, l.connClosed, l.connErr
}

// waitAcked waits until the router acknowledged our LNK_CONN.
func (l *leaf) waitAcked() {
	l.tb.Helper()
	eventually(l.tb, l.cfg.Label+"'s LNK_CONN acknowledged", func() error {
		if acked, _, _ := l.connState(); !acked {
			return errors.New("not yet")
		}
		return nil
	})
}

// waitSpans waits until the leaf holds exactly n spans of label, each at
// one of dists when any are given.
func (l *leaf) waitSpans(label string, n int, dists ...uint32) []gotSpan {
	l.tb.Helper()
	var got []gotSpan
	what := fmt.Sprintf("%s holds %d span(s) of %s", l.cfg.Label, n, label)
	if len(dists) > 0 {
		what += fmt.Sprintf(" at dist %v", dists)
	}
	eventually(l.tb, what, func() error {
		got = l.spansOf(label)
		if len(got) != n {
			return fmt.Errorf("holds %d: %+v", len(got), got)
		}
		for _, g := range got {
			if len(dists) > 0 && !slices.Contains(dists, g.Span.Dist) {
				return fmt.Errorf("holds one at dist %d: %+v", g.Span.Dist, got)
			}
		}
		return nil
	})
	return got
}

// rawWrite writes b on the leaf's socket, bypassing iocom.
func (l *leaf) rawWrite(b []byte) {
	if _, err := l.nc.Write(b); err != nil {
		l.tb.Fatalf("leaf %s: raw write: %v", l.cfg.Label, err)
	}
}

// done is closed once the leaf's link is down.
func (l *leaf) done() <-chan struct{} { return l.conn.Done() }

// close leaves by closing the socket (no DELETE), as shell clients do.
func (l *leaf) close() {
	l.conn.Close()
	<-l.conn.Done()
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------
// rawPeer: a frame-level DMSG peer with no state machine, for asserting
// exactly what the router puts on the wire and for sending what no correct
// peer would.

type rawPeer struct {
	tb testing.TB
	nc net.Conn

	wmu sync.Mutex
	buf bytes.Buffer
	enc *dmsg.Encoder

	mu       sync.Mutex
	msgs     []*dmsg.Msg
	cursor   int
	changed  chan struct{} // closed and replaced on every new message
	autoPong bool
	readErr  error
	done     chan struct{}
}

// dialRaw connects a raw peer to addr. With autoPong it answers the
// router's keepalive LNK_PINGs (they stay in the transcript).
func dialRaw(tb testing.TB, addr string, autoPong bool) *rawPeer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nc, err := dialURL(ctx, addr)
	if err != nil {
		tb.Fatalf("raw peer: dial %s: %v", addr, err)
	}
	return startRaw(tb, nc, autoPong)
}

// startRaw runs a raw peer over an established connection.
func startRaw(tb testing.TB, nc net.Conn, autoPong bool) *rawPeer {
	p := &rawPeer{tb: tb, nc: nc, changed: make(chan struct{}), autoPong: autoPong, done: make(chan struct{})}
	p.enc = dmsg.NewEncoder(&p.buf)
	go p.readLoop()
	tb.Cleanup(p.close)
	return p
}

func (p *rawPeer) readLoop() {
	defer close(p.done)
	dec := dmsg.NewDecoder(p.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			p.mu.Lock()
			p.readErr = err
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		p.msgs = append(p.msgs, m)
		close(p.changed)
		p.changed = make(chan struct{})
		pong := p.autoPong
		p.mu.Unlock()
		if pong && isPing(m) {
			p.sendErr(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}})
		}
	}
}

// isPing reports a keepalive or shell LNK_PING (not a reply).
func isPing(m *dmsg.Msg) bool {
	return dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply == 0
}

// send writes m with the next sequence number, failing the test on error.
func (p *rawPeer) send(m *dmsg.Msg) {
	p.tb.Helper()
	if err := p.sendErr(m); err != nil {
		p.tb.Fatalf("raw peer: send %s: %v", dmsg.CmdString(m.Cmd), err)
	}
}

func (p *rawPeer) sendErr(m *dmsg.Msg) error {
	return p.sendMangled(m, nil)
}

// sendMangled encodes m with the next sequence number, lets mangle change
// the wire bytes, and writes them.
func (p *rawPeer) sendMangled(m *dmsg.Msg, mangle func([]byte)) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.buf.Reset()
	if err := p.enc.Encode(m); err != nil {
		return err
	}
	b := p.buf.Bytes()
	if mangle != nil {
		mangle(b)
	}
	_, err := p.nc.Write(b)
	return err
}

// write writes raw bytes.
func (p *rawPeer) write(b []byte) {
	p.tb.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if _, err := p.nc.Write(b); err != nil {
		p.tb.Fatalf("raw peer: write: %v", err)
	}
}

// next returns the next message after the cursor that skip does not
// reject, and moves the cursor past it.
func (p *rawPeer) next(what string, skip func(*dmsg.Msg) bool) *dmsg.Msg {
	p.tb.Helper()
	return p.wait(what, func(m *dmsg.Msg) (bool, error) {
		if skip != nil && skip(m) {
			return false, nil
		}
		return true, nil
	})
}

// expect returns the first message after the cursor that match accepts,
// skipping (and consuming) the ones before it.
func (p *rawPeer) expect(what string, match func(*dmsg.Msg) bool) *dmsg.Msg {
	p.tb.Helper()
	return p.wait(what, func(m *dmsg.Msg) (bool, error) { return match(m), nil })
}

func (p *rawPeer) wait(what string, take func(*dmsg.Msg) (bool, error)) *dmsg.Msg {
	p.tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for p.cursor < len(p.msgs) {
			m := p.msgs[p.cursor]
			p.cursor++
			if ok, _ := take(m); ok {
				p.mu.Unlock()
				return m
			}
		}
		ch, rerr, done := p.changed, p.readErr, p.readErr != nil
		p.mu.Unlock()
		if done {
			p.tb.Fatalf("raw peer: link ended (%v) while waiting for %s; transcript:\n%s", rerr, what, p.transcript())
		}
		select {
		case <-ch:
		case <-deadline.C:
			p.tb.Fatalf("raw peer: timed out after %v waiting for %s; transcript:\n%s", waitTimeout, what, p.transcript())
		}
	}
}

// rewind moves the cursor back to the first message received.
func (p *rawPeer) rewind() {
	p.mu.Lock()
	p.cursor = 0
	p.mu.Unlock()
}

// barrier sends a LNK_PING and waits for the router's LNK_PING|REPLY: the
// router handles a link's messages in order, so everything it sent in
// answer to what we sent before has arrived by then. The messages it
// skips stay readable through since.
func (p *rawPeer) barrier() []*dmsg.Msg {
	p.tb.Helper()
	p.mu.Lock()
	start := p.cursor
	p.mu.Unlock()
	p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
	p.expect("LNK_PING|REPLY", func(m *dmsg.Msg) bool {
		return dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs[start : p.cursor-1])
}

// waitEOF waits until the router closed the link and returns the error the
// read ended with: io.EOF for an orderly close.
func (p *rawPeer) waitEOF() error {
	p.tb.Helper()
	waitChan(p.tb, "the router to close the raw peer's link", p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readErr
}

// closedByRouter reports whether the read ended the way a router's close
// looks from here: EOF, or a reset when the router closed with something
// of ours still unread (a keepalive answer that crossed its close).
func closedByRouter(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func (p *rawPeer) transcript() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for i, m := range p.msgs {
		mark := " "
		if i == p.cursor-1 {
			mark = ">"
		}
		fmt.Fprintf(&b, "%s %3d %s msgid %016x error %#x", mark, i, dmsg.CmdString(m.Cmd), m.MsgID, m.Error)
		if len(m.Aux) > 0 {
			fmt.Fprintf(&b, " aux %q", strings.TrimRight(string(m.Aux), "\x00"))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func (p *rawPeer) close() {
	p.nc.Close()
	<-p.done
}

// Helpers building the messages a peer sends.

func connMsg(c dmsg.Conn, v2 bool, msgid uint64) *dmsg.Msg {
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, v2)
	m.MsgID = msgid
	return m
}

// refusal answers the router's transaction msgid with
// LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS (0xe80fff01), as shells do.
func refusal(msgid uint64, code uint32) *dmsg.Msg {
	return &dmsg.Msg{Header: dmsg.Header{
		Cmd:   dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans,
		MsgID: msgid, Error: code}}
}

// ack answers the router's transaction msgid with
// LNK_ERROR|CREATE|REPLY|REVTRANS (0xa80fff01), leaving it open.
func ack(msgid uint64) *dmsg.Msg {
	return &dmsg.Msg{Header: dmsg.Header{
		Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans, MsgID: msgid}}
}

func shellMsg(line string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell)
	if line != "" {
		m.SetAux(append([]byte(line), 0))
	}
	return m
}

// Predicates over received messages.

func isCmd(base, flags uint32) func(*dmsg.Msg) bool {
	return func(m *dmsg.Msg) bool { return dmsg.Base(m.Cmd) == base && m.Cmd&dmsg.FlagsMask == flags }
}

func isConnCreate(m *dmsg.Msg) bool {
	b := dmsg.Base(m.Cmd)
	return (b == dmsg.LnkConn || b == dmsg.LnkConnV2) && m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagReply == 0
}

func isShellReply(m *dmsg.Msg) bool {
	return m.Cmd == dmsg.DbgShell|dmsg.FlagReply
}

func auxText(m *dmsg.Msg) string { return strings.TrimRight(string(m.Aux), "\x00") }

// dialURL connects to a link address in URL form (tcp://host:port or
// unix:///path).
func dialURL(ctx context.Context, addr string) (net.Conn, error) {
	network, address, err := iocom.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	return iocom.Dial(ctx, network, address)
}
