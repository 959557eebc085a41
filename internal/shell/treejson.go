package shell

import (
	"encoding/json"
	"strconv"
)

// writeJSON writes t to w as the docs/INTERFACE.md document, byte for byte
// what encoding/json's MarshalIndent(t, "", "  ") plus a newline makes of
// it with empty lists as [] (see JSON), while walking t: a tree of a
// hundred thousand spans is tens of megabytes of JSON, and building it
// whole, then indenting a copy, cost the router several times that for
// each `tree json`. The field order and names are those of the struct
// tags in tree.go; a test compares the two encodings on a generated tree.
func writeJSON(w *chunkWriter, t *Tree) {
	e := &jsonEncoder{w: w}
	e.open('{')
	e.field("node")
	e.self(&t.Node)
	e.field("links")
	e.list(len(t.Links), false, func(i int) { e.link(&t.Links[i]) })
	e.field("clusters")
	e.list(len(t.Clusters), false, func(i int) { e.cluster(&t.Clusters[i]) })
	e.field("circuits")
	e.list(len(t.Circuits), false, func(i int) { e.circuit(&t.Circuits[i]) })
	e.close('}')
	e.w.buf = append(e.w.buf, '\n')
	w.sendFull()
}

func (e *jsonEncoder) self(s *Self) {
	e.open('{')
	e.strField("label", s.Label)
	e.strField("id", s.ID)
	e.uintField("rnss", uint64(s.Rnss))
	e.close('}')
}

func (e *jsonEncoder) link(l *Link) {
	e.open('{')
	e.strField("id", l.ID)
	e.strField("remote", l.Remote)
	e.strField("peer_label", l.PeerLabel)
	e.strField("peer_type", l.PeerType)
	e.strField("state", l.State)
	e.strField("since", l.Since)
	e.strField("tls_peer", l.TLSPeer)
	e.boolField("signed_spans", l.SignedSpans)
	e.close('}')
}

func (e *jsonEncoder) cluster(c *Cluster) {
	e.open('{')
	e.strField("peer_type", c.PeerType)
	e.strField("id", c.ID)
	e.strField("label", c.Label)
	e.field("nodes")
	e.list(len(c.Nodes), c.Nodes == nil, func(i int) { e.node(&c.Nodes[i]) })
	e.close('}')
}

func (e *jsonEncoder) node(n *Node) {
	e.open('{')
	e.uintField("pfs_type", uint64(n.PfsType))
	e.strField("id", n.ID)
	e.strField("label", n.Label)
	e.field("links")
	e.list(len(n.Adverts), n.Adverts == nil, func(i int) { e.spanLink(&n.Adverts[i]) })
	e.boolField("verified", n.Verified)
	e.close('}')
}

func (e *jsonEncoder) spanLink(l *Advert) {
	e.open('{')
	e.strField("msgid", l.MsgID)
	e.uintField("dist", uint64(l.Dist))
	e.uintField("rnss", uint64(l.Rnss))
	e.strField("via", l.Via)
	e.field("relays")
	e.list(len(l.Relays), false, func(i int) { e.relay(&l.Relays[i]) })
	e.boolField("verified", l.Verified)
	e.close('}')
}

func (e *jsonEncoder) relay(r *Relay) {
	e.open('{')
	e.strField("msgid", r.MsgID)
	e.strField("via", r.Via)
	e.close('}')
}

func (e *jsonEncoder) circuit(c *Circuit) {
	e.open('{')
	e.uintField("id", c.ID)
	e.field("a")
	e.circuitEnd(&c.A)
	e.field("b")
	e.circuitEnd(&c.B)
	e.strField("target", c.Target)
	e.strField("state", c.State)
	e.strField("since", c.Since)
	e.uintField("msgs", c.Msgs)
	e.uintField("bytes", c.Bytes)
	e.close('}')
}

func (e *jsonEncoder) circuitEnd(c *CircuitEnd) {
	e.open('{')
	e.strField("link", c.Link)
	e.strField("circuit", c.Circuit)
	e.close('}')
}

// jsonEncoder appends indented JSON to its chunkWriter's buffer, letting
// it send a chunk at the start of every line.
type jsonEncoder struct {
	w     *chunkWriter
	depth int
	// used[d] says the object or array open at depth d has a member
	// already: the next one is preceded by a comma, and the closing
	// bracket goes on a line of its own.
	used [12]bool
}

func (e *jsonEncoder) open(c byte) {
	e.w.buf = append(e.w.buf, c)
	e.depth++
	e.used[e.depth] = false
}

func (e *jsonEncoder) close(c byte) {
	if e.used[e.depth] {
		e.newline(e.depth - 1)
	}
	e.depth--
	e.w.buf = append(e.w.buf, c)
}

// member starts the next member of the object or array open.
func (e *jsonEncoder) member() {
	if e.used[e.depth] {
		e.w.buf = append(e.w.buf, ',')
	}
	e.used[e.depth] = true
	e.w.sendFull()
	e.newline(e.depth)
}

func (e *jsonEncoder) newline(depth int) {
	e.w.buf = append(e.w.buf, '\n')
	for range depth {
		e.w.buf = append(e.w.buf, ' ', ' ')
	}
}

// field starts an object member: its name, then the caller writes the
// value.
func (e *jsonEncoder) field(name string) {
	e.member()
	e.appendString(name)
	e.w.buf = append(e.w.buf, ':', ' ')
}

func (e *jsonEncoder) strField(name, v string) {
	e.field(name)
	e.appendString(v)
}

func (e *jsonEncoder) uintField(name string, v uint64) {
	e.field(name)
	e.w.buf = strconv.AppendUint(e.w.buf, v, 10)
}

func (e *jsonEncoder) boolField(name string, v bool) {
	e.field(name)
	e.w.buf = strconv.AppendBool(e.w.buf, v)
}

// list writes an array of n elements, elem writing each; null says a nil
// slice, which encoding/json writes as null (JSON writes the lists the
// schema promises as [] instead).
func (e *jsonEncoder) list(n int, null bool, elem func(i int)) {
	if null {
		e.w.buf = append(e.w.buf, "null"...)
		return
	}
	e.open('[')
	for i := range n {
		e.member()
		elem(i)
	}
	e.close(']')
}

// appendString writes s as encoding/json does. Labels, ids and addresses
// are plain ASCII and are copied as they are; anything else (escapes,
// HTML-safe <>&, invalid UTF-8, U+2028) is left to encoding/json itself.
func (e *jsonEncoder) appendString(s string) {
	if !plainJSON(s) {
		b, err := json.Marshal(s)
		if err != nil { // a string always marshals
			panic(err)
		}
		e.w.buf = append(e.w.buf, b...)
		return
	}
	e.w.buf = append(e.w.buf, '"')
	e.w.buf = append(e.w.buf, s...)
	e.w.buf = append(e.w.buf, '"')
}

// plainJSON reports whether encoding/json writes s between quotes as it
// is: printable ASCII other than the quote, the backslash and <, >, &.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
