package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// The router's test peers: well-behaved ones are endpoints (leaf), the
// ones that misbehave or watch the wire exactly are dmsgtest peers
// (rawPeer). What is here only fails the test on errors and builds the
// LNK_CONN these tests usually send.

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

// leaf is an endpoint the test fails through.
type leaf struct {
	*endpoint.Endpoint
	tb    testing.TB
	label string
	nc    net.Conn // under the endpoint, for writing what it never would
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
	c := dmsg.Conn{PeerType: dmsg.PeerClient, PeerMask: ^uint64(0), ProtoVersion: 1}
	if cfg.Conn != nil {
		c = *cfg.Conn
	}
	if c.FsLabel == "" {
		c.FsLabel = cfg.Label
	}
	e := endpoint.New(nc, endpoint.Config{Conn: c, V2: cfg.V2, NoConn: cfg.NoConn,
		RefuseRouterConn: cfg.RefuseRouterConn, Link: iocom.Config{ID: "leaf-" + cfg.Label}})
	tb.Cleanup(func() { e.Close() })
	return &leaf{Endpoint: e, tb: tb, label: cfg.Label, nc: nc}
}

// waitAcked waits until the router acknowledged our LNK_CONN.
func (l *leaf) waitAcked() {
	l.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := l.Ready(ctx); err != nil {
		l.tb.Fatalf("leaf %s: %v", l.label, err)
	}
}

// sendVolConf sends v inside the leaf's open LNK_CONN.
func (l *leaf) sendVolConf(v dmsg.VolConf) {
	l.tb.Helper()
	if err := l.ConnTx().Send(dmsg.NewVolConfMsg(0, &v)); err != nil {
		l.tb.Fatalf("leaf %s: LNK_VOLCONF: %v", l.label, err)
	}
}

// advertise opens a LNK_SPAN carrying s.
func (l *leaf) advertise(s dmsg.Span) *endpoint.Advert {
	l.tb.Helper()
	a, err := l.Advertise(s)
	if err != nil {
		l.tb.Fatalf("leaf %s: %v", l.label, err)
	}
	return a
}

// labels returns the sorted distinct fs_labels of the open spans.
func (l *leaf) labels() []string {
	var out []string
	for _, s := range l.Relays() {
		if !slices.Contains(out, s.FsLabel) {
			out = append(out, s.FsLabel)
		}
	}
	slices.Sort(out)
	return out
}

// waitSpans waits until the leaf holds exactly n spans of label, each at
// one of dists when any are given.
func (l *leaf) waitSpans(label string, n int, dists ...uint32) []endpoint.Relay {
	l.tb.Helper()
	var got []endpoint.Relay
	what := fmt.Sprintf("%s holds %d span(s) of %s", l.label, n, label)
	if len(dists) > 0 {
		what += fmt.Sprintf(" at dist %v", dists)
	}
	eventually(l.tb, what, func() error {
		got = l.RelaysOf(label)
		if len(got) != n {
			return fmt.Errorf("holds %d: %+v", len(got), got)
		}
		for _, g := range got {
			if len(dists) > 0 && !slices.Contains(dists, g.Dist) {
				return fmt.Errorf("holds one at dist %d: %+v", g.Dist, got)
			}
		}
		return nil
	})
	return got
}

// rawWrite writes b on the leaf's socket, under the endpoint's feet.
func (l *leaf) rawWrite(b []byte) {
	if _, err := l.nc.Write(b); err != nil {
		l.tb.Fatalf("leaf %s: raw write: %v", l.label, err)
	}
}

// rawPeer is a dmsgtest peer recording everything the router sends it,
// for asserting exactly what the router puts on the wire and for sending
// what no correct peer would.
type rawPeer struct {
	*dmsgtest.Peer
	*dmsgtest.Recorder
	tb testing.TB
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
	p := dmsgtest.NewPeer(nc)
	return &rawPeer{Peer: p, Recorder: p.Record(tb, dmsgtest.RecordOptions{AutoPong: autoPong}), tb: tb}
}

// send sends msgs, failing the test on error.
func (p *rawPeer) send(msgs ...*dmsg.Msg) {
	p.tb.Helper()
	if err := p.Send(msgs...); err != nil {
		p.tb.Fatalf("raw peer: send %s: %v", dmsg.CmdString(msgs[0].Cmd), err)
	}
}

// write writes raw bytes, failing the test on error.
func (p *rawPeer) write(b []byte) {
	p.tb.Helper()
	if err := p.WriteRaw(b); err != nil {
		p.tb.Fatalf("raw peer: write: %v", err)
	}
}

// closedByRouter reports whether the read ended the way a router's close
// looks from here: EOF, or a reset when the router closed with something
// of ours still unread (a keepalive answer that crossed its close). A
// frame cut short is not a close but a router writing half a message.
func closedByRouter(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// Helpers building the messages a peer sends.

func connMsg(c dmsg.Conn, v2 bool, msgid uint64) *dmsg.Msg {
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, v2)
	m.MsgID = msgid
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

// dialURL connects to a link address in URL form (tcp://host:port or
// unix:///path).
func dialURL(ctx context.Context, addr string) (net.Conn, error) {
	network, address, err := iocom.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	return iocom.Dial(ctx, network, address)
}
