package config

import (
	"crypto/ed25519"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// AnyNode is the tls.peers[].nodes entry that lets a key speak for every
// node.
const AnyNode = "*"

// KeyNodeID is the node id derived from an Ed25519 public key, as
// node.id_from_key makes it: the name-based (SHA-1, version 5) UUID, in
// the OID namespace, of the key's text form "ed25519:<base64>" — what
// `dmsgd keygen` prints, so `uuidgen --sha1 --namespace @oid --name
// ed25519:...` computes it too.
func KeyNodeID(pub ed25519.PublicKey) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(FormatPubKey(pub)))
}

// Claims are the nodes a pinned key may speak for: advertise at dist 0 on
// its own link, and sign as their origin. A node (label, id) is claimed
// when its label is one of Labels and its id one of IDs, or when Any.
type Claims struct {
	Any    bool
	Labels []string
	IDs    []uuid.UUID
}

// Allow reports whether the claims cover the node labelled label with id.
func (c Claims) Allow(label string, id uuid.UUID) bool {
	return c.Any || slices.Contains(c.Labels, label) && slices.Contains(c.IDs, id)
}

// parseClaims derives a peer's claims from its nodes list. Entries that
// parse as UUIDs are node ids, "*" is any node, anything else a label.
// Labels default to the peer's name; ids default to the ids those labels
// have by default (NodeIDFor) and the id derived from the key (KeyNodeID),
// so that a peer named after its router's label needs no list at all,
// whichever way that router's id is made.
func parseClaims(p *Peer, key string, ps *problems) Claims {
	var c Claims
	seen := make(map[string]int)
	for i, n := range p.Nodes {
		ekey := fmt.Sprintf("%s.nodes[%d]", key, i)
		if j, dup := seen[n]; dup {
			ps.add(ekey, "%q is already listed as nodes[%d]", n, j)
			continue
		}
		seen[n] = i
		if n == AnyNode {
			c.Any = true
			continue
		}
		if id, err := uuid.Parse(n); err == nil {
			c.IDs = append(c.IDs, id)
			continue
		}
		validateLabel(ps, ekey, n, true)
		c.Labels = append(c.Labels, n)
	}
	if c.Any && len(p.Nodes) > 1 {
		ps.add(key+".nodes", "%q stands alone: it already allows every node", AnyNode)
	}
	if len(c.Labels) == 0 {
		c.Labels = []string{p.Name}
	}
	if len(c.IDs) == 0 {
		for _, l := range c.Labels {
			c.IDs = append(c.IDs, NodeIDFor(l))
		}
		if p.Key != nil {
			c.IDs = append(c.IDs, KeyNodeID(p.Key))
		}
	}
	return c
}

// EffectiveClaims returns the peer's claims: Claims as Load parsed them,
// or, for a Peer built by hand, its Nodes parsed now.
func (p *Peer) EffectiveClaims() Claims {
	if p.Claims.Any || len(p.Claims.Labels) > 0 {
		return p.Claims
	}
	return parseClaims(p, "", &problems{seen: map[string]bool{}, source: func(string) string { return "" }})
}

// PeerByKey returns the tls.peers entry pinning key, or nil.
func (t *TLS) PeerByKey(key ed25519.PublicKey) *Peer {
	for i := range t.Peers {
		if t.Peers[i].Key.Equal(key) {
			return &t.Peers[i]
		}
	}
	return nil
}
