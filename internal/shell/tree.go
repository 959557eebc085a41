package shell

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Tree is one router's view of the cluster, in the shape of the JSON
// document of docs/INTERFACE.md. Every list is already sorted by its producer,
// so two renderings of the same state are byte-identical.
type Tree struct {
	Node     Self      `json:"node"`
	Links    []Link    `json:"links"`
	Clusters []Cluster `json:"clusters"`
	Circuits []Circuit `json:"circuits"`
}

// Self is the router's own identity.
type Self struct {
	Label string `json:"label"`
	ID    string `json:"id"`
	Rnss  uint32 `json:"rnss"`
}

// Link is one open link of the router.
type Link struct {
	ID        string `json:"id"`
	Remote    string `json:"remote"`
	PeerLabel string `json:"peer_label"`
	PeerType  string `json:"peer_type"`
	State     string `json:"state"`
	Since     string `json:"since"`
	// TLSPeer is the tls.peers name of the key the peer presented, ""
	// for links without TLS.
	TLSPeer string `json:"tls_peer"`
	// SignedSpans says whether signed advertisements are in force on
	// the link (docs/PROTOCOL.md 11.3).
	SignedSpans bool `json:"signed_spans"`
}

// Cluster is one cluster of received advertisements.
type Cluster struct {
	PeerType string `json:"peer_type"`
	ID       string `json:"id"`
	Label    string `json:"label"`
	Nodes    []Node `json:"nodes"`
}

// Node is one node of a cluster.
type Node struct {
	PfsType uint8    `json:"pfs_type"`
	ID      string   `json:"id"`
	Label   string   `json:"label"`
	Adverts []Advert `json:"links"`

	// Verified says the node's best advertisement is signed by a key
	// this router pins for the node, along a path whose every hop is
	// signed (docs/PROTOCOL.md 11.3).
	Verified bool `json:"verified"`
}

// Advert is one held advertisement of a node (an "SLink").
type Advert struct {
	MsgID  string  `json:"msgid"`
	Dist   uint32  `json:"dist"`
	Rnss   uint32  `json:"rnss"`
	Via    string  `json:"via"`
	Relays []Relay `json:"relays"`

	// Verified says this advertisement is verified (Node.Verified).
	Verified bool `json:"verified"`
}

// Relay is one re-advertisement of a SpanLink on another link.
type Relay struct {
	MsgID string `json:"msgid"`
	Via   string `json:"via"`
}

// Circuit is one virtual circuit relayed or ended by the router.
type Circuit struct {
	ID     uint64     `json:"id"`
	A      CircuitEnd `json:"a"`
	B      CircuitEnd `json:"b"`
	Target string     `json:"target"`
	State  string     `json:"state"`
	Since  string     `json:"since"`
	Msgs   uint64     `json:"msgs"`
	Bytes  uint64     `json:"bytes"`
}

// CircuitEnd is one side of a circuit: a link and the circuit id there.
type CircuitEnd struct {
	Link    string `json:"link"`
	Circuit string `json:"circuit"`
}

// MsgID formats a msgid as the tree and JSON print it.
func MsgID(id uint64) string { return fmt.Sprintf("%016x", id) }

// Time formats a timestamp as the JSON prints it.
func Time(t time.Time) string { return t.UTC().Format(time.RFC3339) }

var peerTypeNames = map[uint8]string{
	dmsg.PeerNone:    "none",
	dmsg.PeerRouter:  "router",
	dmsg.PeerBlock:   "block",
	dmsg.PeerHammer2: "hammer2",
	dmsg.PeerClient:  "client",
}

// PeerTypeName is the JSON name of a peer type: the lower-case name of
// docs/PROTOCOL.md 2.5, or the decimal number of any other type.
func PeerTypeName(t uint8) string {
	if s, ok := peerTypeNames[t]; ok {
		return s
	}
	return strconv.Itoa(int(t))
}

// textPeerType is the section 7 text name: upper case, or ?PEERTYPE?.
func textPeerType(name string) string {
	if _, err := strconv.Atoi(name); err == nil {
		return "?PEERTYPE?"
	}
	return strings.ToUpper(name)
}
