package shell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// marshalJSON is how JSON rendered a tree before it was streamed:
// encoding/json's MarshalIndent with every list the schema promises as []
// rather than null. The streamed document must stay byte-identical to it.
func marshalJSON(t *Tree) []byte {
	c := *t
	if c.Links == nil {
		c.Links = []Link{}
	}
	if c.Clusters == nil {
		c.Clusters = []Cluster{}
	}
	if c.Circuits == nil {
		c.Circuits = []Circuit{}
	}
	c.Clusters = cloneNil(c.Clusters)
	for i := range c.Clusters {
		c.Clusters[i].Nodes = cloneNil(c.Clusters[i].Nodes)
		for j := range c.Clusters[i].Nodes {
			n := &c.Clusters[i].Nodes[j]
			n.Adverts = cloneNil(n.Adverts)
			for k := range n.Adverts {
				if l := &n.Adverts[k]; l.Relays == nil {
					l.Relays = []Relay{}
				}
			}
		}
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// cloneNil copies s, keeping nil nil.
func cloneNil[S ~[]E, E any](s S) S {
	if s == nil {
		return nil
	}
	return append(S{}, s...)
}

// oddStrings are strings encoding/json escapes, each its own way.
var oddStrings = []string{
	"", "plain", `quote"back\slash`, "<html>&amp;", "tab\tnl\ncr\r", "\x00\x01\x1f\x7f",
	"\b\f", "caf\u00e9 \u65e5\u672c", "line\u2028para\u2029", "bad\xffutf8\xc3", "emoji \U0001F600",
}

// generatedTree is a tree of clusters x nodes, each node with up to links
// advertisements and up to two relays each, with every field set, odd
// strings here and there, and nil and empty lists both present.
func generatedTree(clusters, nodes, links int) *Tree {
	rng := rand.New(rand.NewPCG(uint64(clusters), uint64(nodes*links)))
	str := func(plain string) string {
		if rng.IntN(20) == 0 {
			return oddStrings[rng.IntN(len(oddStrings))]
		}
		return plain
	}
	t := &Tree{Node: Self{Label: str("router-a"), ID: "57e149be-5a98-5985-9361-5fc976f8effa", Rnss: rng.Uint32()}}
	for i := range 5 {
		t.Links = append(t.Links, Link{ID: fmt.Sprintf("L%d", i), Remote: str("127.0.0.1:5000"), PeerLabel: str("peer"),
			PeerType: PeerTypeName(uint8(rng.IntN(70))), State: "up", Since: "2026-11-24T00:00:00Z",
			TLSPeer: str(""), SignedSpans: rng.IntN(2) == 0})
	}
	for c := range clusters {
		cl := Cluster{PeerType: PeerTypeName(uint8(c)), ID: fmt.Sprintf("11223344-5566-7788-99aa-%012x", c), Label: str("clu")}
		if c == 1 {
			cl.Nodes = []Node{} // empty, not nil
		}
		for n := range nodes * min(c, 1) {
			nd := Node{PfsType: uint8(rng.Uint32()), ID: fmt.Sprintf("01020304-0506-0708-090a-%012x", n),
				Label: str(fmt.Sprintf("node-%d", n)), Verified: rng.IntN(3) == 0}
			if n%97 == 5 {
				nd.Adverts = []Advert{}
			}
			for k := range rng.IntN(links + 1) {
				l := Advert{MsgID: MsgID(rng.Uint64()), Dist: uint32(k), Rnss: rng.Uint32(), Via: str("L3"), Verified: rng.IntN(2) == 0}
				switch r := rng.IntN(4); r {
				case 0: // nil relays
				case 1:
					l.Relays = []Relay{}
				default:
					for range r - 1 {
						l.Relays = append(l.Relays, Relay{MsgID: MsgID(rng.Uint64()), Via: str("L4")})
					}
				}
				nd.Adverts = append(nd.Adverts, l)
			}
			cl.Nodes = append(cl.Nodes, nd)
		}
		t.Clusters = append(t.Clusters, cl)
	}
	for i := range 3 {
		t.Circuits = append(t.Circuits, Circuit{ID: rng.Uint64(), A: CircuitEnd{Link: "L1", Circuit: MsgID(rng.Uint64())},
			B: CircuitEnd{Link: str("L2"), Circuit: MsgID(uint64(i))}, Target: str("node-1"), State: "open",
			Since: "2026-11-24T00:00:00Z", Msgs: rng.Uint64(), Bytes: rng.Uint64()})
	}
	return t
}

func TestStreamedJSONIsByteIdenticalToMarshalIndent(t *testing.T) {
	tests := []struct {
		name string
		tree *Tree
	}{
		{"an empty tree", &Tree{}},
		{"the reference capture", sampleTree()},
		{"a generated tree with odd strings and nil lists", generatedTree(4, 300, 4)},
		{"a tree of many nodes", generatedTree(2, 5000, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := marshalJSON(tt.tree)
			got := JSON(tt.tree)
			if !bytes.Equal(got, want) {
				i := firstDiff(got, want)
				t.Fatalf("differs at byte %d:\n got %q\nwant %q", i, excerpt(got, i), excerpt(want, i))
			}
		})
	}
}

// TestEveryOddStringIsEncodedAsEncodingJSONDoes covers the string
// encoder's fallback, and that the fast path takes only strings it may.
func TestEveryOddStringIsEncodedAsEncodingJSONDoes(t *testing.T) {
	strs := append([]string{}, oddStrings...)
	for c := range 256 {
		strs = append(strs, "a"+string(rune(c))+"b", "a"+string([]byte{byte(c)})+"b")
	}
	for _, s := range strs {
		w := newChunkWriter(nil)
		(&jsonEncoder{w: w}).appendString(s)
		want, _ := json.Marshal(s)
		if !bytes.Equal(w.buf, want) {
			t.Errorf("%q encoded as %s, want %s", s, w.buf, want)
		}
	}
}

func TestStreamedJSONGoesOutInChunksAsItIsWritten(t *testing.T) {
	tr := generatedTree(3, 2000, 3)
	var chunks []string
	w := newChunkWriter(func(s string) { chunks = append(chunks, s) })
	writeJSON(w, tr)
	if len(chunks) < 2 {
		t.Fatalf("%d chunks sent before the end of a %d-byte document", len(chunks), len(JSON(tr)))
	}
	if cap(w.buf) > 2*chunkSize {
		t.Fatalf("the encoder buffered %d bytes", cap(w.buf))
	}
	w.Flush()
	for _, c := range chunks[:len(chunks)-1] {
		if len(c) > chunkSize || !strings.HasSuffix(c, "\n") {
			t.Fatalf("chunk of %d bytes ending %q", len(c), c[max(0, len(c)-8):])
		}
	}
	if strings.Join(chunks, "") != string(marshalJSON(tr)) {
		t.Fatal("chunks do not reassemble to the document")
	}
}

func TestALineLongerThanAChunkIsCutAtTheChunkSize(t *testing.T) {
	var chunks []string
	w := newChunkWriter(func(s string) { chunks = append(chunks, s) })
	long := strings.Repeat("x", 2*chunkSize+10)
	w.WriteString("short\n" + long + "\nend\n")
	w.Flush()
	if len(chunks) != 4 || chunks[0] != "short\n" || len(chunks[1]) != chunkSize || len(chunks[2]) != chunkSize {
		t.Fatalf("chunk sizes %v", lens(chunks))
	}
	if strings.Join(chunks, "") != "short\n"+long+"\nend\n" {
		t.Fatal("chunks do not reassemble")
	}
}

func lens(ss []string) []int {
	var out []int
	for _, s := range ss {
		out = append(out, len(s))
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func excerpt(b []byte, i int) string {
	return string(b[max(0, i-60):min(len(b), i+60)])
}

func BenchmarkTreeJSON(b *testing.B) {
	tr := generatedTree(2, 50_000, 2)
	b.Run("MarshalIndent", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = marshalJSON(tr)
		}
	})
	b.Run("streamed", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			w := newChunkWriter(func(string) {})
			writeJSON(w, tr)
			w.Flush()
		}
	})
}
