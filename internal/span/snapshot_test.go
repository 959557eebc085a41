package span

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestSnapshotListsEverythingInSortOrder(t *testing.T) {
	f := newFixture(t, Config{Rnss: 9, Self: ptr(rspan("self", 0, 0))})
	_, b := f.conn("Lb", allOf)
	_, a := f.conn("La", allOf) // came up second: listed second
	lowID, highID := uuid.UUID{1}, uuid.UUID{2}
	node := func(peerType uint8, clid uuid.UUID, cl, label string, fsid uuid.UUID, dist, rnss uint32) dmsg.Span {
		s := rspan(label, dist, rnss)
		s.PeerType, s.PfsClid, s.ClLabel, s.PfsFsid = peerType, clid, cl, fsid
		return s
	}
	f.msgid = 10
	f.recv(a, node(dmsg.PeerHammer2, lowID, "x", "h", lowID, 0, 0)) // 11
	f.recv(a, node(dmsg.PeerRouter, highID, "x", "r", lowID, 0, 0)) // 12
	f.recv(b, node(dmsg.PeerRouter, lowID, "y", "r", lowID, 0, 0))  // 13
	f.recv(b, node(dmsg.PeerRouter, lowID, "x", "b", highID, 2, 5)) // 14
	f.recv(a, node(dmsg.PeerRouter, lowID, "x", "b", highID, 2, 1)) // 15
	f.recv(b, node(dmsg.PeerRouter, lowID, "x", "b", highID, 1, 9)) // 16
	f.recv(a, node(dmsg.PeerRouter, lowID, "x", "b", lowID, 0, 0))  // 17
	f.recv(a, node(dmsg.PeerRouter, lowID, "x", "a", highID, 0, 0)) // 18
	f.recv(b, node(dmsg.PeerRouter, lowID, "x", "b", highID, 2, 1)) // 19: ties 15, arrived later

	snap := f.e.Snapshot()
	type key struct {
		peerType uint8
		clid     uuid.UUID
		cl       string
	}
	var clusters []key
	for _, c := range snap.Clusters {
		clusters = append(clusters, key{c.PeerType, c.PfsClid, c.ClLabel})
	}
	wantClusters := []key{
		{dmsg.PeerRouter, lowID, "x"}, {dmsg.PeerRouter, lowID, "y"},
		{dmsg.PeerRouter, highID, "x"}, {dmsg.PeerRouter, testClid, testClLabel},
		{dmsg.PeerHammer2, lowID, "x"},
	}
	if !reflect.DeepEqual(clusters, wantClusters) {
		t.Fatalf("clusters in order %v, want %v", clusters, wantClusters)
	}
	var nodes []string
	for _, n := range snap.Clusters[0].Nodes {
		nodes = append(nodes, n.FsLabel+n.PfsFsid.String()[:2])
	}
	if want := []string{"a02", "b01", "b02"}; !reflect.DeepEqual(nodes, want) {
		t.Fatalf("nodes in order %v, want %v", nodes, want)
	}
	var links []uint64
	for _, l := range snap.Clusters[0].Nodes[2].Links {
		links = append(links, l.MsgID)
	}
	if want := []uint64{16, 15, 19, 14}; !reflect.DeepEqual(links, want) {
		t.Fatalf("links in order %v, want %v (dist, rnss, arrival)", links, want)
	}
	self := snap.Clusters[3].Nodes[0].Links[0]
	if self.Via != ViaLocal || self.Dist != 0 || self.Rnss != 9 || len(self.Relays) != 2 ||
		self.Relays[0].Via != "Lb" || self.Relays[1].Via != "La" {
		t.Fatalf("own advertisement %+v, want via local at dist 0 rnss 9, relayed on Lb then La", self)
	}
	if snap.Conns[0].Peer != "Lb" || snap.Conns[1].Peer != "La" || snap.Conns[0].Conn != allOf {
		t.Fatalf("conns %+v, want Lb then La with their LNK_CONN", snap.Conns)
	}

	again := f.e.Snapshot()
	snap.Clusters[0].Nodes[2].Links[0].Relays = nil // a deep copy: the engine is unaffected
	snap.Clusters[0].Nodes = nil
	if !reflect.DeepEqual(f.e.Snapshot(), again) {
		t.Fatalf("two snapshots of the same state differ, or a snapshot aliases the engine")
	}
}

// TestSnapshotRelaysMatchWhatWasSent checks the relays listed under each
// link against the fake peers' open transactions.
func TestSnapshotRelaysMatchWhatWasSent(t *testing.T) {
	f := newFixture(t, Config{})
	_, src := f.conn("src", allOf)
	dst, _ := f.conn("dst", allOf)
	f.recv(src, rspan("n", 1, 0))
	f.recv(src, rspan("n", 2, 0))
	f.recv(src, rspan("n", 3, 0))
	snap := f.e.Snapshot()
	relayed := 0
	for _, l := range snap.Clusters[0].Nodes[0].Links {
		for _, r := range l.Relays {
			tx := dst.open[r.MsgID]
			if r.Via != "dst" || tx == nil || tx.span.Dist != l.Dist+1 {
				t.Fatalf("relay %+v of link %d has no matching transaction", r, l.MsgID)
			}
			relayed++
		}
	}
	if relayed != 2 || len(dst.open) != 2 {
		t.Fatalf("snapshot lists %d relays, dst holds %d, want 2", relayed, len(dst.open))
	}
}
