package span

import (
	"slices"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestFiltersDecideWhichSpansAConnectionGets(t *testing.T) {
	routerBit := uint64(1) << dmsg.PeerRouter
	cases := []struct {
		name string
		dst  dmsg.Conn
		edit func(*dmsg.Span)
		want bool
	}{
		{"a span at dist 15 is relayed (as 16)", allOf, func(s *dmsg.Span) { s.Dist = 15 }, true},
		{"a span at dist 16 is not relayed", allOf, func(s *dmsg.Span) { s.Dist = 16 }, false},
		{"a span at the largest dist is not relayed (no wrap)", allOf, func(s *dmsg.Span) { s.Dist = ^uint32(0) }, false},
		{"a peer_type whose peer_mask bit is set passes", dmsg.Conn{PeerMask: routerBit}, nil, true},
		{"a peer_type whose peer_mask bit is clear is filtered", dmsg.Conn{PeerMask: ^routerBit}, nil, false},
		{"a peer_type of 64 never passes", allOf, func(s *dmsg.Span) { s.PeerType = 64 }, false},
		{"a peer_type of 255 never passes", allOf, func(s *dmsg.Span) { s.PeerType = 255 }, false},
		{"a pfs_mask of 0 lets every pfs_type through", allOf, func(s *dmsg.Span) { s.PfsType = 63 }, true},
		{"a pfs_type whose pfs_mask bit is set passes", dmsg.Conn{PeerMask: ^uint64(0), PfsMask: 1 << 3}, func(s *dmsg.Span) { s.PfsType = 3 }, true},
		{"a pfs_type whose pfs_mask bit is clear is filtered", dmsg.Conn{PeerMask: ^uint64(0), PfsMask: 1 << 3}, func(s *dmsg.Span) { s.PfsType = 2 }, false},
		{"a pfs_type of 64 never passes, even with pfs_mask 0", allOf, func(s *dmsg.Span) { s.PfsType = 64 }, false},
		{"the same peer_type with the same cluster id passes", withClid(testClid), nil, true},
		{"the same peer_type with another cluster id is filtered", withClid(otherClid), nil, false},
		{"the same peer_type with the same cluster label passes", withLabel(testClLabel), nil, true},
		{"the same peer_type with another cluster label is filtered", withLabel("other"), nil, false},
		{"another peer_type ignores the cluster id filter", asHammer2(withClid(otherClid)), nil, true},
		{"another peer_type ignores the cluster label filter", asHammer2(withLabel("other")), nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			_, src := f.conn("src", allOf)
			dst, _ := f.conn("dst", tc.dst)
			s := rspan("n", 0, 0)
			if tc.edit != nil {
				tc.edit(&s)
			}
			f.recv(src, s)
			if got := len(dst.open) == 1; got != tc.want {
				t.Fatalf("relayed = %v, want %v", got, tc.want)
			}
		})
	}
}

func withClid(c [16]byte) dmsg.Conn {
	return dmsg.Conn{PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter, PfsClid: c}
}

func withLabel(l string) dmsg.Conn {
	return dmsg.Conn{PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter, ClLabel: l}
}

func asHammer2(c dmsg.Conn) dmsg.Conn {
	c.PeerType = dmsg.PeerHammer2
	return c
}

func TestASpanIsNeverRelayedBackWhereItCameFrom(t *testing.T) {
	f := newFixture(t, Config{})
	srcPeer, src := f.conn("src", allOf)
	dst, _ := f.conn("dst", allOf)
	f.recv(src, rspan("n", 0, 0))
	if len(srcPeer.open) != 0 || len(dst.open) != 1 {
		t.Fatalf("src got %v, dst got %v; want nothing and one relay", srcPeer.got(), dst.got())
	}
}

// TestFailingLinksAreSkippedNotStoppedAt: the original stopped at the first
// link failing a filter, hiding good paths behind it.
func TestFailingLinksAreSkippedNotStoppedAt(t *testing.T) {
	cases := []struct {
		name string
		dst  dmsg.Conn
		best func(f *fixture, src, dst *Neighbor) // delivers a best link that fails for dst
	}{
		{"when the best link arrived over the connection itself", allOf, func(f *fixture, _, dst *Neighbor) {
			f.recv(dst, rspan("n", 1, 0))
		}},
		{"when the best link has a pfs_type the connection does not want",
			dmsg.Conn{PeerMask: ^uint64(0), PfsMask: 1}, func(f *fixture, src, _ *Neighbor) {
				s := rspan("n", 1, 0)
				s.PfsType = 1
				f.recv(src, s)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxRelays: 2})
			_, src := f.conn("src", allOf)
			dstPeer, dst := f.conn("dst", tc.dst)
			tc.best(f, src, dst)
			f.recv(src, rspan("n", 2, 0))
			f.recv(src, rspan("n", 3, 0))
			if got, want := dstPeer.got(), []string{"n@3", "n@4"}; !slices.Equal(got, want) {
				t.Fatalf("dst got %v, want %v", got, want)
			}
		})
	}
}

func TestMaxRelaysBoundsTheRelaysOfEachNodeOnEachConnection(t *testing.T) {
	cases := []struct {
		k    int
		want []string
	}{
		{0, []string{"n@2", "n@3"}}, // the default is 2
		{1, []string{"n@2"}},
		{2, []string{"n@2", "n@3"}},
		{3, []string{"n@2", "n@3", "n@4"}},
		{6, []string{"n@2", "n@3", "n@4", "n@5"}},
	}
	for _, tc := range cases {
		t.Run(string(rune('0'+tc.k)), func(t *testing.T) {
			f := newFixture(t, Config{MaxRelays: tc.k})
			_, src := f.conn("src", allOf)
			dst, _ := f.conn("dst", allOf)
			for _, d := range []uint32{4, 2, 3, 1} { // arrival order is not rank order
				f.recv(src, rspan("n", d, 0))
			}
			if got := dst.got(); !slices.Equal(got, tc.want) {
				t.Fatalf("K=%d: dst got %v, want %v", tc.k, got, tc.want)
			}
		})
	}
}

func TestBetterLinksDisplaceWorseOnesAndWorseOnesReturnOnWithdrawal(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 1})
	_, src := f.conn("src", allOf)
	dst, _ := f.conn("dst", allOf)
	worse := f.recv(src, rspan("n", 5, 0))
	better := f.recv(src, rspan("n", 2, 0))
	if got := dst.got(); !slices.Equal(got, []string{"n@3"}) {
		t.Fatalf("after the better link dst got %v", got)
	}
	f.e.SpanWithdrawn(better)
	if got := dst.got(); !slices.Equal(got, []string{"n@6"}) {
		t.Fatalf("after withdrawing the better link dst got %v", got)
	}
	f.e.SpanWithdrawn(worse)
	f.wantStats(Stats{Conns: 2})
	// worse, then better (worse closed), then worse again, then nothing.
	if dst.opened != 3 || dst.closes != 3 {
		t.Fatalf("dst saw %d opens and %d closes, want 3 and 3", dst.opened, dst.closes)
	}
}

func TestSymmetricAlsoRelaysLinksTiedWithTheKth(t *testing.T) {
	type link struct{ dist, rnss uint32 }
	ties := []link{{1, 1}, {2, 5}, {2, 5}, {2, 5}, {3, 0}}
	cases := []struct {
		name      string
		k         int
		symmetric bool
		links     []link
		want      int
	}{
		{"without the option only K are relayed", 2, false, ties, 2},
		{"with it every tie of the K-th is relayed", 2, true, ties, 4},
		{"with K=1 the ties of the best are relayed", 1, true, []link{{2, 5}, {2, 5}, {3, 0}}, 2},
		{"equal dist with another rnss is not a tie", 2, true, []link{{1, 1}, {2, 5}, {2, 6}, {2, 7}}, 2},
		{"fewer links than K are all relayed", 3, true, []link{{1, 1}, {2, 5}}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxRelays: tc.k, Symmetric: tc.symmetric})
			_, src := f.conn("src", allOf)
			dst, _ := f.conn("dst", allOf)
			for _, l := range tc.links {
				f.recv(src, rspan("n", l.dist, l.rnss))
			}
			if len(dst.open) != tc.want {
				t.Fatalf("dst got %d relays %v, want %d", len(dst.open), dst.got(), tc.want)
			}
		})
	}
}

func TestSymmetricSkipsAFailingTieAndKeepsGoing(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 1, Symmetric: true})
	_, src := f.conn("src", allOf)
	dstPeer, dst := f.conn("dst", allOf)
	f.recv(src, rspan("n", 2, 5))
	f.recv(dst, rspan("n", 2, 5)) // ties, but came from dst
	f.recv(src, rspan("n", 2, 5))
	if len(dstPeer.open) != 2 {
		t.Fatalf("dst got %d relays, want the two passing ties", len(dstPeer.open))
	}
}

func TestRelaysAddOneHopAndTheRouterRnssWrapping(t *testing.T) {
	cases := []struct {
		name                string
		dist, rnss, ours    uint32
		wantDist, wantRnssV uint32
	}{
		{"from an origin", 0, 0, 5, 1, 5},
		{"accumulating", 3, 100, 5, 4, 105},
		{"wrapping past 2^32", 3, 0xFFFFFFF0, 0x20, 4, 0x10},
		{"wrapping with the largest values", 15, 0xFFFFFFFF, 0xFFFFFFFF, 16, 0xFFFFFFFE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{Rnss: tc.ours})
			_, src := f.conn("src", allOf)
			dst, _ := f.conn("dst", allOf)
			in := rspan("n", tc.dist, tc.rnss)
			in.Media[0], in.Media[55] = 0xAB, 0xCD
			in.Status, in.ProtoVersion, in.Reserved, in.PfsType = 7, 1, 9, 2
			f.recv(src, in)
			want := in
			want.Dist, want.Rnss = tc.wantDist, tc.wantRnssV
			if got := dst.only(t).span; got != want {
				t.Fatalf("relay carries %+v, want %+v", got, want)
			}
		})
	}
}

// TestAReplacementIsSentBeforeTheRelayItReplacesIsClosed: make before
// break, so the peer never loses the node in between (which would ripple a
// withdrawal through the cluster).
func TestAReplacementIsSentBeforeTheRelayItReplacesIsClosed(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 1})
	_, src := f.conn("src", allOf)
	dst, _ := f.conn("dst", allOf)
	f.recv(src, rspan("n", 5, 0))
	var order []string
	dst.only(t).onClose = func() { order = append(order, "close worse") }
	dst.onOpen = func() { order = append(order, "open better") }
	f.recv(src, rspan("n", 2, 0))
	if !slices.Equal(order, []string{"open better", "close worse"}) {
		t.Fatalf("dst saw %v", order)
	}
}
