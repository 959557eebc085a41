package shell

import (
	"encoding/json"
	"strings"
	"testing"
)

// sampleTree is the state of the reference capture twosvc-shellA: one
// HAMMER2 node held at dist 0 and relayed on two links.
func sampleTree() *Tree {
	return &Tree{
		Node:  Self{Label: "node-a", ID: "57e149be-5a98-5985-9361-5fc976f8effa", Rnss: 7},
		Links: []Link{{ID: "L4", Remote: "127.0.0.1:9", PeerLabel: "node-b", PeerType: "router", State: "up", Since: "2026-11-24T00:00:00Z"}},
		Clusters: []Cluster{{
			PeerType: "hammer2", ID: "11223344-5566-7788-99aa-bbccddeeff00", Label: "synthclu",
			Nodes: []Node{{PfsType: 1, ID: "01020304-0506-0708-090a-0b0c0d0e0f10", Label: "synthpfs",
				Adverts: []Advert{{MsgID: MsgID(0x2000), Dist: 0, Rnss: 0x10000000, Via: "L5",
					Relays: []Relay{{MsgID: MsgID(0x00007f2210001a60), Via: "L4"}, {MsgID: MsgID(0x00007f2210001b60), Via: "L8"}}}}}},
		}},
	}
}

func TestTextDumpMatchesTheReferenceLayout(t *testing.T) {
	got := TextLines(sampleTree())
	want := []string{
		"Cluster HAMMER2 11223344-5566-7788-99aa-bbccddeeff00 (synthclu)\n",
		"    Node 01 01020304-0506-0708-090a-0b0c0d0e0f10 (synthpfs)\n",
		"\tSLink msgid 0000000000002000 dist=0 via L5\n",
		"\t    Relay-out msgid 00007f2210001a60 via L4\n",
		"\t    Relay-out msgid 00007f2210001b60 via L8\n",
	}
	if strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("text dump:\n%q\nwant\n%q", got, want)
	}
}

func TestTextDumpNamesUnknownPeerTypes(t *testing.T) {
	tr := sampleTree()
	tr.Clusters[0].PeerType = PeerTypeName(17)
	if got := TextLines(tr)[0]; !strings.HasPrefix(got, "Cluster ?PEERTYPE? ") {
		t.Fatalf("got %q", got)
	}
	if PeerTypeName(17) != "17" || PeerTypeName(63) != "client" {
		t.Fatal("JSON peer type names are the lower-case name or the number")
	}
}

func TestJSONHasTheInterfaceSchema(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(JSON(sampleTree()), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"node", "links", "clusters", "circuits"} {
		if _, ok := doc[k]; !ok {
			t.Fatalf("JSON lacks %q", k)
		}
	}
	link := doc["clusters"].([]any)[0].(map[string]any)["nodes"].([]any)[0].(map[string]any)["links"].([]any)[0].(map[string]any)
	if link["msgid"] != "0000000000002000" || link["via"] != "L5" || link["dist"] != 0.0 {
		t.Fatalf("span link %v", link)
	}
	if doc["circuits"] == nil {
		t.Fatal("circuits must be [] not null")
	}
}

func TestJSONOfTheSameStateIsByteIdentical(t *testing.T) {
	first, second := JSON(sampleTree()), JSON(sampleTree())
	if string(first) != string(second) {
		t.Fatal("two dumps differ")
	}
}

func TestDOTDrawsRouterLinksLabelledWithReachableNodes(t *testing.T) {
	tr := sampleTree()
	tr.Clusters[0].Nodes[0].Adverts[0].Via = "L4"
	tr.Links = append(tr.Links, Link{ID: "L9", PeerLabel: "dmsgd-tree", PeerType: "client"})
	got := string(DOT(tr))
	if !strings.Contains(got, `"node-a" -- "node-b" [label="L4: synthpfs"];`) {
		t.Fatalf("DOT:\n%s", got)
	}
	if strings.Contains(got, "dmsgd-tree") {
		t.Fatalf("DOT draws a shell client:\n%s", got)
	}
}

func TestVerifiedNodesAndAdvertisementsAreMarkedInTextAndJSON(t *testing.T) {
	tr := sampleTree()
	n := &tr.Clusters[0].Nodes[0]
	n.Verified, n.Adverts[0].Verified = true, true
	tr.Links[0].TLSPeer, tr.Links[0].SignedSpans = "node-b", true
	got := TextLines(tr)
	if got[1] != "    Node 01 01020304-0506-0708-090a-0b0c0d0e0f10 (synthpfs) verified\n" ||
		got[2] != "\tSLink msgid 0000000000002000 dist=0 via L5 verified\n" {
		t.Fatalf("text dump %q", got)
	}
	var doc struct {
		Links []struct {
			TLSPeer     string `json:"tls_peer"`
			SignedSpans bool   `json:"signed_spans"`
		} `json:"links"`
		Clusters []struct {
			Nodes []struct {
				Verified bool `json:"verified"`
				Links    []struct {
					Verified bool `json:"verified"`
				} `json:"links"`
			} `json:"nodes"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal(JSON(tr), &doc); err != nil {
		t.Fatal(err)
	}
	if nd := doc.Clusters[0].Nodes[0]; !nd.Verified || !nd.Links[0].Verified ||
		doc.Links[0].TLSPeer != "node-b" || !doc.Links[0].SignedSpans {
		t.Fatalf("JSON %+v", doc)
	}
	if strings.Contains(strings.Join(TextLines(sampleTree()), ""), "verified") {
		t.Fatal("an unverified tree is marked")
	}
}
