package span

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestARefusedRelayIsNotOfferedAgainUntilSomethingChanges checks the
// no-loop rule of docs/PROTOCOL.md 4.4.
func TestARefusedRelayIsNotOfferedAgainUntilSomethingChanges(t *testing.T) {
	cases := []struct {
		name   string
		change func(f *fixture, src *Neighbor, dst **Neighbor, dstPeer **fakePeer, n2 *Advert)
		lifted bool
	}{
		{"nothing happens", func(*fixture, *Neighbor, **Neighbor, **fakePeer, *Advert) {}, false},
		{"another node changes", func(f *fixture, src *Neighbor, _ **Neighbor, _ **fakePeer, _ *Advert) {
			f.recv(src, rspan("m", 1, 0))
		}, false},
		{"a link is added to the node", func(f *fixture, src *Neighbor, _ **Neighbor, _ **fakePeer, _ *Advert) {
			f.recv(src, rspan("n", 9, 0))
		}, true},
		{"a link of the node is withdrawn", func(f *fixture, _ *Neighbor, _ **Neighbor, _ **fakePeer, n2 *Advert) {
			f.e.SpanWithdrawn(n2)
		}, true},
		{"the connection comes again", func(f *fixture, _ *Neighbor, dst **Neighbor, dstPeer **fakePeer, _ *Advert) {
			f.e.ConnDown(*dst)
			*dstPeer, *dst = f.conn("dst2", allOf)
		}, true},
	}
	for _, tc := range cases {
		t.Run("when "+tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxRelays: 1})
			_, src := f.conn("src", allOf)
			dstPeer, dst := f.conn("dst", allOf)
			f.recv(src, rspan("n", 1, 0))
			n2 := f.recv(src, rspan("n", 2, 0))

			first := dstPeer.only(t)
			f.e.RelayClosed(first.relay)
			if !first.closed {
				t.Fatalf("the refused relay was not DELETEd back")
			}
			if got := dstPeer.got(); !slices.Equal(got, []string{"n@3"}) {
				t.Fatalf("after one refusal dst got %v, want the next best link n@3", got)
			}
			f.e.RelayClosed(dstPeer.only(t).relay)
			if len(dstPeer.open) != 0 {
				t.Fatalf("after refusing both links dst still got %v", dstPeer.got())
			}

			tc.change(f, src, &dst, &dstPeer, n2)
			if got := dstPeer.got(); slices.Contains(got, "n@2") != tc.lifted {
				t.Fatalf("dst got %v; want the best link offered again: %v", got, tc.lifted)
			}
		})
	}
}

func TestRelayClosedForARelayAlreadyGoneIsIgnored(t *testing.T) {
	cases := []struct {
		name string
		gone func(f *fixture, l *Advert, dst *Neighbor)
	}{
		{"closed by us when its link was withdrawn", func(f *fixture, l *Advert, _ *Neighbor) { f.e.SpanWithdrawn(l) }},
		{"closed by ConnDown", func(f *fixture, _ *Advert, dst *Neighbor) { f.e.ConnDown(dst) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			_, src := f.conn("src", allOf)
			dstPeer, dst := f.conn("dst", allOf)
			l := f.recv(src, rspan("n", 0, 0))
			tx := dstPeer.only(t)
			tc.gone(f, l, dst)
			before := f.e.Stats()
			f.e.RelayClosed(tx.relay)
			f.e.RelayClosed(tx.relay)
			f.e.RelayClosed(nil)
			if dstPeer.closes != 1 || f.e.Stats() != before {
				t.Fatalf("late RelayClosed changed things: %d closes, %+v -> %+v", dstPeer.closes, before, f.e.Stats())
			}
		})
	}
}

func TestADuplicateMsgIDOnOneConnectionIsAProtocolError(t *testing.T) {
	f := newFixture(t, Config{})
	_, a := f.conn("a", allOf)
	_, b := f.conn("b", allOf)
	l, err := f.e.SpanReceived(a, 7, rspan("n", 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	before := f.e.Stats()
	if _, err := f.e.SpanReceived(a, 7, rspan("m", 0, 0)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second CREATE with msgid 7: %v, want ErrDuplicate", err)
	}
	if f.e.Stats() != before {
		t.Fatalf("a refused duplicate changed the engine: %+v -> %+v", before, f.e.Stats())
	}
	if _, err := f.e.SpanReceived(b, 7, rspan("n", 0, 0)); err != nil {
		t.Fatalf("msgid 7 on another connection: %v", err)
	}
	f.e.SpanWithdrawn(l)
	if _, err := f.e.SpanReceived(a, 7, rspan("n", 0, 0)); err != nil {
		t.Fatalf("msgid 7 again after its withdrawal: %v", err)
	}
}

func TestSpanReceivedRefusesWhatCannotBeAccepted(t *testing.T) {
	cases := []struct {
		name  string
		msgid uint64
		prep  func(f *fixture, c *Neighbor)
		want  error
	}{
		{"msgid 0 is reserved for one-way messages", 0, func(*fixture, *Neighbor) {}, ErrZeroMsgID},
		{"a connection that went down takes no spans", 5, func(f *fixture, c *Neighbor) { f.e.ConnDown(c) }, ErrConnDown},
		{"a full connection refuses", 5, func(f *fixture, c *Neighbor) {
			f.recv(c, rspan("a", 0, 0))
			f.recv(c, rspan("b", 0, 0))
		}, ErrTooManySpans},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxSpansPerConn: 2})
			f.msgid = 100
			_, c := f.conn("c", allOf)
			tc.prep(f, c)
			before := f.e.Stats()
			if _, err := f.e.SpanReceived(c, tc.msgid, rspan("n", 0, 0)); !errors.Is(err, tc.want) {
				t.Fatalf("SpanReceived: %v, want %v", err, tc.want)
			}
			if f.e.Stats() != before {
				t.Fatalf("a refused span changed the engine")
			}
		})
	}
}

func TestMaxSpansPerConnCountsEachConnectionAndFreesOnWithdrawal(t *testing.T) {
	f := newFixture(t, Config{MaxSpansPerConn: 2})
	_, a := f.conn("a", allOf)
	_, b := f.conn("b", allOf)
	first := f.recv(a, rspan("n1", 0, 0))
	f.recv(a, rspan("n2", 0, 0))
	if _, err := f.e.SpanReceived(a, 99, rspan("n3", 0, 0)); !errors.Is(err, ErrTooManySpans) {
		t.Fatalf("third span on a: %v, want ErrTooManySpans", err)
	}
	f.recv(b, rspan("n3", 0, 0)) // b has its own allowance
	f.e.SpanWithdrawn(first)
	f.recv(a, rspan("n3", 0, 0))
}

func TestConnDownWithdrawsItsSpansAndClosesItsRelays(t *testing.T) {
	f := newFixture(t, Config{})
	srcPeer, src := f.conn("src", allOf)
	dstPeer, dst := f.conn("dst", allOf)
	f.recv(src, rspan("from-src", 0, 0))
	f.recv(src, rspan("from-src", 1, 0))
	f.recv(dst, rspan("from-dst", 0, 0))
	if len(dstPeer.open) != 2 || len(srcPeer.open) != 1 {
		t.Fatalf("before: src %v dst %v", srcPeer.got(), dstPeer.got())
	}
	f.e.ConnDown(src)
	if len(srcPeer.open) != 0 || len(dstPeer.open) != 0 {
		t.Fatalf("after src went down: src %v dst %v, want nothing open", srcPeer.got(), dstPeer.got())
	}
	f.wantStats(Stats{Clusters: 1, Nodes: 1, Links: 1, Conns: 1})
	f.e.ConnDown(src) // twice is harmless
	f.e.ConnDown(nil)
	f.e.ConnDown(dst)
	f.wantStats(Stats{})
}

func TestAPeerThatFailsToOpenIsOfferedNothingMoreUntilConnDown(t *testing.T) {
	f := newFixture(t, Config{})
	_, src := f.conn("src", allOf)
	for _, n := range []string{"a", "b", "c"} {
		f.recv(src, rspan(n, 0, 0))
	}
	dying := newPeer("dying")
	dying.fail = true
	c := f.e.ConnUp(dying, allOf)
	f.recv(src, rspan("d", 0, 0))
	if dying.tries != 1 {
		t.Fatalf("OpenSpan was tried %d times on a dying link, want 1", dying.tries)
	}
	f.wantStats(Stats{Clusters: 1, Nodes: 4, Links: 4, Conns: 2})
	f.e.ConnDown(c)
	f.e.ConnDown(src)
	f.wantStats(Stats{})
}

func TestASecondConnUpForOnePeerReplacesTheFirst(t *testing.T) {
	f := newFixture(t, Config{})
	_, src := f.conn("src", allOf)
	f.recv(src, rspan("n", 0, 0))
	p := newPeer("p")
	old := f.e.ConnUp(p, allOf)
	f.recv(old, rspan("m", 0, 0))
	first := p.only(t)
	f.e.ConnUp(p, allOf)
	if !first.closed || len(p.open) != 1 {
		t.Fatalf("old relays not closed or new ones not sent: %v", p.got())
	}
	f.wantStats(Stats{Clusters: 1, Nodes: 1, Links: 1, Relays: 1, Conns: 2})
	if _, err := f.e.SpanReceived(old, 50, rspan("m", 0, 0)); !errors.Is(err, ErrConnDown) {
		t.Fatalf("the superseded Conn still takes spans: %v", err)
	}
}

func TestRelayOriginResolvesARelayToWhatItRelays(t *testing.T) {
	f := newFixture(t, Config{Self: ptr(rspan("me", 0, 0))})
	srcPeer, src := f.conn("src", allOf)
	dstPeer, _ := f.conn("dst", allOf)
	f.msgid = 40
	f.recv(src, rspan("n", 3, 0))
	var relayID, selfID uint64
	for id, tx := range dstPeer.open {
		if tx.span.FsLabel == "n" {
			relayID = id
		} else {
			selfID = id
		}
	}
	cases := []struct {
		name     string
		p        Peer
		msgid    uint64
		from     Peer
		fromID   uint64
		dist     uint32
		resolved bool
	}{
		{"a relay names the link it relays", dstPeer, relayID, srcPeer, 41, 3, true},
		{"our own advertisement names no link", dstPeer, selfID, nil, 0, 0, true},
		{"an unknown msgid resolves to nothing", dstPeer, 0xdead, nil, 0, 0, false},
		{"a received span is not a relay we sent", srcPeer, 41, nil, 0, 0, false},
		{"an unknown peer resolves to nothing", newPeer("x"), relayID, nil, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := f.e.RelayOrigin(tc.p, tc.msgid)
			if o.From != tc.from || o.MsgID != tc.fromID || o.Dist != tc.dist || ok != tc.resolved {
				t.Fatalf("RelayOrigin = %+v %v, want %v %d %d %v",
					o, ok, tc.from, tc.fromID, tc.dist, tc.resolved)
			}
			if want := map[bool]string{true: "n", false: "me"}[tc.from != nil]; ok && o.Label != want {
				t.Fatalf("RelayOrigin label %q, want %q", o.Label, want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestAnEventRecomputesOnlyThePairsItAffects counts (node, neighbor)
// selections: a span event costs one per neighbor, a neighbor event
// one per node, whatever else the router holds (docs/PROTOCOL.md 4.3).
func TestAnEventRecomputesOnlyThePairsItAffects(t *testing.T) {
	const nodes = 300
	type router struct {
		f    *fixture
		src  *Neighbor
		dst  *fakePeer
		side *Neighbor // a fifth neighbor that sent one span for node n1
	}
	cases := []struct {
		name  string
		event func(r router)
		want  uint64
	}{
		{"a span added touches its node on each connection", func(r router) { r.f.recv(r.src, rspan("new", 0, 0)) }, 5},
		{"a span withdrawn touches its node on each connection", func(r router) { r.f.e.SpanWithdrawn(r.src.links[1]) }, 5},
		{"a refused relay touches one pair", func(r router) {
			for _, tx := range r.dst.open {
				r.f.e.RelayClosed(tx.relay)
				return
			}
		}, 1},
		{"a connection coming up touches every node on it", func(r router) { r.f.conn("new", allOf) }, nodes},
		{"a connection going down touches the nodes it sent", func(r router) { r.f.e.ConnDown(r.side) }, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			r := router{f: f}
			_, r.src = f.conn("src", allOf)
			r.dst, _ = f.conn("dst", allOf)
			f.conn("dst2", allOf)
			f.conn("dst3", allOf)
			for i := range nodes {
				f.recv(r.src, rspan(fmt.Sprint("n", i), 0, 0))
			}
			_, r.side = f.conn("side", allOf)
			f.recv(r.side, rspan("n1", 1, 0))
			before := f.e.work
			tc.event(r)
			if got := f.e.work - before; got != tc.want {
				t.Fatalf("%d selections, want %d", got, tc.want)
			}
		})
	}
}
