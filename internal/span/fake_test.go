package span

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// fakePeer records what the engine sends on one neighbor. Like the
// daemon's, it is only touched under the engine's mutex.
type fakePeer struct {
	id     string
	next   uint64
	open   map[uint64]*fakeTx
	opened int // OpenSpan calls that succeeded
	closes int // Close calls, duplicates included
	tries  int // OpenSpan calls, failed ones included
	fail   bool
	onOpen func() // called on each successful OpenSpan, for ordering checks
}

type fakeTx struct {
	p       *fakePeer
	id      uint64
	span    dmsg.Span
	relay   *Relay
	closed  bool
	onClose func()
}

func newPeer(id string) *fakePeer { return &fakePeer{id: id, open: make(map[uint64]*fakeTx)} }

func (p *fakePeer) ID() string { return p.id }

func (p *fakePeer) OpenSpan(s *dmsg.Span, r *Relay) (SpanTx, error) {
	p.tries++
	if p.fail {
		return nil, errors.New("fake: link dying")
	}
	p.next++
	tx := &fakeTx{p: p, id: 0x100 + p.next, span: *s, relay: r}
	p.open[tx.id] = tx
	p.opened++
	if p.onOpen != nil {
		p.onOpen()
	}
	return tx, nil
}

func (t *fakeTx) MsgID() uint64 { return t.id }

func (t *fakeTx) Close() {
	if t.onClose != nil && !t.closed {
		t.onClose()
	}
	t.p.closes++
	t.closed = true
	delete(t.p.open, t.id)
}

// got lists the open relays as "label@dist", sorted, for comparisons.
func (p *fakePeer) got() []string {
	out := []string{}
	for _, tx := range p.open {
		out = append(out, fmt.Sprintf("%s@%d", tx.span.FsLabel, tx.span.Dist))
	}
	slices.Sort(out)
	return out
}

// only returns the single open relay, failing otherwise.
func (p *fakePeer) only(t *testing.T) *fakeTx {
	t.Helper()
	if len(p.open) != 1 {
		t.Fatalf("%s has %d open relays %v, want 1", p.id, len(p.open), p.got())
	}
	for _, tx := range p.open {
		return tx
	}
	return nil
}

// allOf is a LNK_CONN asking for everything, from a router.
var allOf = dmsg.Conn{PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter}

// rspan is a router span of the test cluster for node label.
func rspan(label string, dist, rnss uint32) dmsg.Span {
	s := routerSpan(label)
	s.Dist, s.Rnss = dist, rnss
	return s
}

// fixture is one engine and its fake neighbors.
type fixture struct {
	t     *testing.T
	e     *Engine
	msgid uint64
}

func newFixture(t *testing.T, cfg Config) *fixture {
	if cfg.Rnss == 0 {
		cfg.Rnss = 1000
	}
	return &fixture{t: t, e: New(cfg)}
}

func (f *fixture) conn(id string, info dmsg.Conn) (*fakePeer, *Neighbor) {
	p := newPeer(id)
	return p, f.e.ConnUp(p, info)
}

// recv delivers a span on c with a fresh msgid.
func (f *fixture) recv(c *Neighbor, s dmsg.Span) *Advert {
	f.t.Helper()
	f.msgid++
	l, err := f.e.SpanReceived(c, f.msgid, s)
	if err != nil {
		f.t.Fatalf("SpanReceived: %v", err)
	}
	return l
}

func (f *fixture) wantStats(want Stats) {
	f.t.Helper()
	if got := f.e.Stats(); got != want {
		f.t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

var otherClid = uuid.NewSHA1(uuid.NameSpaceOID, []byte("other-cluster"))
