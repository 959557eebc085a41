package shell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// TextLines renders t as the section 7 dump, one line per element, each
// ending in a newline (the reference sends one DBG_SHELL message per line).
// Verified nodes and advertisements end in " verified"; nothing else
// changes the reference layout.
func TextLines(t *Tree) []string {
	var out []string
	for _, c := range t.Clusters {
		out = append(out, fmt.Sprintf("Cluster %s %s (%s)\n", textPeerType(c.PeerType), c.ID, c.Label))
		for _, n := range c.Nodes {
			out = append(out, fmt.Sprintf("    Node %02x %s (%s)%s\n", n.PfsType, n.ID, n.Label, verifiedMark(n.Verified)))
			for _, l := range n.Links {
				out = append(out, fmt.Sprintf("\tSLink msgid %s dist=%d via %s%s\n", l.MsgID, l.Dist, l.Via, verifiedMark(l.Verified)))
				for _, r := range l.Relays {
					out = append(out, fmt.Sprintf("\t    Relay-out msgid %s via %s\n", r.MsgID, r.Via))
				}
			}
		}
	}
	return out
}

func verifiedMark(v bool) string {
	if v {
		return " verified"
	}
	return ""
}

// JSON renders t as the INTERFACE.md document, indented, ending in a
// newline. Empty lists render as [] rather than null.
func JSON(t *Tree) []byte {
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
	for i := range c.Clusters {
		for j := range c.Clusters[i].Nodes {
			for k := range c.Clusters[i].Nodes[j].Links {
				if l := &c.Clusters[i].Nodes[j].Links[k]; l.Relays == nil {
					l.Relays = []Relay{}
				}
			}
		}
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil { // plain structs of strings and numbers cannot fail
		panic(err)
	}
	return append(b, '\n')
}

// DOT renders t as a Graphviz graph of routers: this router and the
// routers it links to are vertices, each link an edge labelled with the
// nodes whose best path runs through it. Links to leaves and shell
// clients are left out; their nodes label the link they are reached by.
func DOT(t *Tree) []byte {
	reach := make(map[string][]string) // link id -> node labels
	for _, c := range t.Clusters {
		for _, n := range c.Nodes {
			if len(n.Links) > 0 && n.Links[0].Via != "local" {
				reach[n.Links[0].Via] = append(reach[n.Links[0].Via], n.Label)
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
