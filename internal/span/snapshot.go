package span

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// ViaLocal is the Via of our own advertisement.
const ViaLocal = "local"

// Snapshot is a deep copy of an Engine's state for the tree dump. Every list
// is sorted (docs/PROTOCOL.md 4.2 and docs/INTERFACE.md), so two snapshots of the same
// state are equal.
type Snapshot struct {
	Rnss     uint32
	Conns    []NeighborInfo // in the order they came up
	Clusters []ClusterInfo  // by (peer_type, pfs_clid, cl_label)
}

// NeighborInfo is one neighbor with an open LNK_CONN.
type NeighborInfo struct {
	Peer string    // Peer.ID()
	Conn dmsg.Conn // the LNK_CONN as received
}

// ClusterInfo is one cluster and its nodes, by (fs_label, pfs_fsid).
type ClusterInfo struct {
	PeerType uint8
	PfsClid  uuid.UUID
	ClLabel  string
	Nodes    []NodeInfo
}

// NodeInfo is one node and its links, best first. PfsType is the best
// link's.
type NodeInfo struct {
	PfsType uint8
	PfsFsid uuid.UUID
	FsLabel string
	Links   []AdvertInfo

	// Verified says the best link is verified (docs/PROTOCOL.md 11.3).
	Verified bool
}

// AdvertInfo is one held advertisement. Via is the Peer ID it arrived on or
// ViaLocal; Dist and Rnss are as received (ours: 0 and our rnss).
type AdvertInfo struct {
	MsgID  uint64
	Dist   uint32
	Rnss   uint32
	Via    string
	Span   dmsg.Span
	Relays []RelayInfo // by neighbor arrival, then msgid

	// Verified says the link counts as verified (Advert.Verified).
	Verified bool
}

// RelayInfo is one relay of a link.
type RelayInfo struct {
	MsgID uint64
	Via   string
}

// Snapshot copies the engine's state. It costs a walk and a sort of
// everything, so it is for dumps and tests, not for hot paths.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	snap := Snapshot{Rnss: e.rnss}
	conns := slices.Clone(e.conns)
	slices.SortFunc(conns, func(a, b *Neighbor) int { return cmp.Compare(a.seq, b.seq) })
	relays := relaysByLink(conns)
	for _, c := range conns {
		snap.Conns = append(snap.Conns, NeighborInfo{Peer: c.peer.ID(), Conn: c.info})
	}
	for _, cl := range sortedClusters(e.clusters) {
		snap.Clusters = append(snap.Clusters, clusterInfo(cl, relays))
	}
	return snap
}

// relaysByLink gathers every relay under its link, already in neighbor
// order because conns is.
func relaysByLink(conns []*Neighbor) map[*Advert][]RelayInfo {
	m := make(map[*Advert][]RelayInfo)
	for _, c := range conns {
		for _, id := range sortedKeys(c.sent) {
			r := c.sent[id]
			m[r.link] = append(m[r.link], RelayInfo{MsgID: id, Via: c.peer.ID()})
		}
	}
	return m
}

func clusterInfo(cl *cluster, relays map[*Advert][]RelayInfo) ClusterInfo {
	// A cluster holds at least one node, a node at least one link.
	ci := ClusterInfo{PeerType: cl.key.peerType, PfsClid: cl.key.clid, ClLabel: cl.key.label,
		Nodes: make([]NodeInfo, 0, len(cl.nodes))}
	for _, n := range sortedNodes(cl) {
		ni := NodeInfo{PfsType: n.links[0].span.PfsType, PfsFsid: n.key.fsid, FsLabel: n.key.label,
			Verified: n.links[0].trusted(), Links: make([]AdvertInfo, 0, len(n.links))}
		for _, l := range n.links {
			ni.Links = append(ni.Links, linkInfo(l, relays[l]))
		}
		ci.Nodes = append(ci.Nodes, ni)
	}
	return ci
}

func linkInfo(l *Advert, relays []RelayInfo) AdvertInfo {
	via := ViaLocal
	if l.conn != nil {
		via = l.conn.peer.ID()
	}
	return AdvertInfo{MsgID: l.msgid, Dist: l.span.Dist, Rnss: l.span.Rnss, Via: via, Span: l.span,
		Verified: l.trusted(), Relays: relays}
}

func sortedClusters(m map[clusterKey]*cluster) []*cluster {
	out := make([]*cluster, 0, len(m))
	for _, cl := range m {
		out = append(out, cl)
	}
	slices.SortFunc(out, func(a, b *cluster) int {
		return cmp.Or(cmp.Compare(a.key.peerType, b.key.peerType),
			bytes.Compare(a.key.clid[:], b.key.clid[:]),
			cmp.Compare(a.key.label, b.key.label))
	})
	return out
}

func sortedNodes(cl *cluster) []*node {
	out := make([]*node, 0, len(cl.nodes))
	for _, n := range cl.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *node) int {
		return cmp.Or(cmp.Compare(a.key.label, b.key.label), bytes.Compare(a.key.fsid[:], b.key.fsid[:]))
	})
	return out
}
