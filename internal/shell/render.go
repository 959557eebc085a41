package shell

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// TextLines renders t as the section 7 dump, one line per element, each
// ending in a newline. Verified nodes and advertisements end in
// " verified"; nothing else changes the reference layout.
func TextLines(t *Tree) []string {
	var out []string
	eachTextLine(t, func(line []byte) { out = append(out, string(line)) })
	return out
}

// eachTextLine calls emit with each line of the section 7 dump of t, in a
// buffer that emit must not keep.
func eachTextLine(t *Tree, emit func(line []byte)) {
	var b []byte
	for _, c := range t.Clusters {
		b = fmt.Appendf(b[:0], "Cluster %s %s (%s)\n", textPeerType(c.PeerType), c.ID, c.Label)
		emit(b)
		for _, n := range c.Nodes {
			b = fmt.Appendf(b[:0], "    Node %02x %s (%s)%s\n", n.PfsType, n.ID, n.Label, verifiedMark(n.Verified))
			emit(b)
			for _, l := range n.Adverts {
				b = fmt.Appendf(b[:0], "\tSLink msgid %s dist=%d via %s%s\n", l.MsgID, l.Dist, l.Via, verifiedMark(l.Verified))
				emit(b)
				for _, r := range l.Relays {
					b = fmt.Appendf(b[:0], "\t    Relay-out msgid %s via %s\n", r.MsgID, r.Via)
					emit(b)
				}
			}
		}
	}
}

func verifiedMark(v bool) string {
	if v {
		return " verified"
	}
	return ""
}

// JSON renders t as the docs/INTERFACE.md document, indented, ending in a
// newline. Empty lists render as [] rather than null. The shell streams
// the same bytes (writeJSON) rather than building them whole.
func JSON(t *Tree) []byte {
	var b []byte
	w := newChunkWriter(func(s string) { b = append(b, s...) })
	writeJSON(w, t)
	w.Flush()
	return b
}

// DOT renders t as a Graphviz graph of routers: this router and the
// routers it links to are vertices, each link an edge labelled with the
// nodes whose best path runs through it. Links to leaves and shell
// clients are left out; their nodes label the link they are reached by.
func DOT(t *Tree) []byte {
	reach := make(map[string][]string) // link id -> node labels
	for _, c := range t.Clusters {
		for _, n := range c.Nodes {
			if len(n.Adverts) > 0 && n.Adverts[0].Via != "local" {
				reach[n.Adverts[0].Via] = append(reach[n.Adverts[0].Via], n.Label)
			}
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "graph dmsgd {\n\tnode [shape=box];\n\t%q [style=bold];\n", t.Node.Label)
	for _, l := range t.Links {
		if l.PeerType != "router" {
			continue
		}
		peer := l.PeerLabel
		if peer == "" {
			peer = l.ID + " " + l.Remote
		}
		nodes := reach[l.ID]
		sort.Strings(nodes)
		fmt.Fprintf(&b, "\t%q -- %q [label=%q];\n", t.Node.Label, peer, l.ID+": "+strings.Join(nodes, ", "))
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// LinkLines renders the `links` command output.
func LinkLines(t *Tree) []string {
	out := []string{fmt.Sprintf("%-6s %-8s %-24s %-10s %-8s %s\n", "LINK", "STATE", "REMOTE", "PEER-TYPE", "SINCE", "PEER")}
	for _, l := range t.Links {
		out = append(out, fmt.Sprintf("%-6s %-8s %-24s %-10s %-8s %s\n", l.ID, l.State, l.Remote, l.PeerType, l.Since, l.PeerLabel))
	}
	return out
}

// CircuitLines renders the `circuits` command output.
func CircuitLines(t *Tree) []string {
	out := []string{fmt.Sprintf("%-6s %-28s %-28s %-12s %-8s %10s %12s\n", "ID", "A", "B", "TARGET", "STATE", "MSGS", "BYTES")}
	for _, c := range t.Circuits {
		out = append(out, fmt.Sprintf("%-6d %-28s %-28s %-12s %-8s %10d %12d\n", c.ID,
			c.A.Link+"/"+c.A.Circuit, c.B.Link+"/"+c.B.Circuit, c.Target, c.State, c.Msgs, c.Bytes))
	}
	return out
}
