package shell

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Map is the whole cluster as gathered from one router by `dmsgd map`:
// every router it knows of, every router-to-router link any of them
// reported, and the leaves linked to them. It is the JSON document of
// `dmsgd map --format json`; every list is sorted.
type Map struct {
	// From is the router the map was gathered from.
	From    string      `json:"from"`
	Routers []MapRouter `json:"routers"`
	Links   []MapLink   `json:"links"`
	Leaves  []MapLeaf   `json:"leaves"`
}

// MapRouter is one router: reached when its own tree was read (locally or
// with `@label tree json` over a circuit), else Error says why not.
type MapRouter struct {
	Label   string `json:"label"`
	ID      string `json:"id,omitempty"`
	Reached bool   `json:"reached"`
	Error   string `json:"error,omitempty"`
}

// MapLink is one pair of linked routers (A before B): Links is how many
// links join them, SeenBy which of the two reported it (both, when both
// were reached).
type MapLink struct {
	A      string   `json:"a"`
	B      string   `json:"b"`
	Links  int      `json:"links"`
	SeenBy []string `json:"seen_by"`
}

// MapLeaf is a link from a router to a peer that is neither a router nor
// a shell client (a HAMMER2 mount, a block device, ...).
type MapLeaf struct {
	Label    string `json:"label"`
	PeerType string `json:"peer_type"`
	Router   string `json:"router"`
}

// RunFunc runs one shell command line and returns its output; it is
// Client.Run.
type RunFunc func(ctx context.Context, line string) (string, error)

// GatherMap builds the map of the cluster seen from the router run talks
// to: its own `tree json`, then `@label tree json` over a circuit for
// every router any tree gathered so far names, each once. Those are
// read-only commands. A router that does not answer is in the map,
// unreached, with the reason; its links still appear as its neighbours
// report them. Only a failure to read the first router's tree is an
// error.
func GatherMap(ctx context.Context, run RunFunc) (*Map, error) {
	out, err := run(ctx, "tree json")
	if err != nil {
		return nil, err
	}
	var first Tree
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		return nil, fmt.Errorf("tree json: %w", err)
	}
	b := newMapBuilder(first.Node.Label)
	b.add(&first)
	for len(b.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		label := b.queue[0]
		b.queue = b.queue[1:]
		out, err := run(ctx, "@"+label+" tree json")
		var t Tree
		switch {
		case err != nil:
			b.unreached(label, err.Error())
		case json.Unmarshal([]byte(out), &t) != nil || t.Node.Label != label:
			b.unreached(label, lastLine(out))
		default:
			b.add(&t)
		}
	}
	return b.done(), nil
}

// lastLine is the last non-empty line of a command's output: where
// `@node` puts its error.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "no output"
}

// mapBuilder accumulates the trees gathered so far.
type mapBuilder struct {
	from    string
	routers map[string]*MapRouter
	links   map[[2]string]*MapLink
	counts  map[[2]string]map[string]int // pair -> reporter -> links it reported
	leaves  map[MapLeaf]bool
	queue   []string
}

func newMapBuilder(from string) *mapBuilder {
	return &mapBuilder{from: from, routers: make(map[string]*MapRouter),
		links: make(map[[2]string]*MapLink), counts: make(map[[2]string]map[string]int),
		leaves: make(map[MapLeaf]bool)}
}

// learn notes a router label, queueing it to be asked for its tree
// unless ask is false.
func (b *mapBuilder) learn(label, id string, ask bool) *MapRouter {
	r := b.routers[label]
	if r == nil {
		r = &MapRouter{Label: label, ID: id}
		b.routers[label] = r
		switch {
		case label == b.from || !ask:
		case !addressable(label):
			r.Error = "its label cannot be addressed with @label"
		default:
			b.queue = append(b.queue, label)
		}
	}
	if r.ID == "" {
		r.ID = id
	}
	return r
}

// addressable reports whether `@label cmd` names label: the shell cuts
// the label at the first space, and reads a leading @ as another hop.
// Labels are peer text; any other would turn the map's `@label tree json`
// into another command line.
func addressable(label string) bool {
	return label != "" && label[0] != '@' && !strings.Contains(label, " ")
}

// add records one router's own tree: itself, the routers it holds spans
// of, and its links.
func (b *mapBuilder) add(t *Tree) {
	self := b.learn(t.Node.Label, t.Node.ID, true)
	self.Reached, self.Error = true, ""
	for _, c := range t.Clusters {
		if c.PeerType != "router" {
			continue
		}
		for _, n := range c.Nodes {
			b.learn(n.Label, n.ID, true)
		}
	}
	for _, l := range t.Links {
		if l.State != "up" {
			continue
		}
		switch l.PeerType {
		case "router":
			if l.PeerLabel == "" { // a libdmsg service announces no label
				peer := "unlabelled peer " + l.Remote + " of " + t.Node.Label
				b.learn(peer, "", false).Error = "announces no label: cannot be asked"
				b.link(t.Node.Label, peer)
				continue
			}
			b.learn(l.PeerLabel, "", true)
			b.link(t.Node.Label, l.PeerLabel)
		case "client", "":
			// shell clients, this map's own link among them
		default:
			b.leaves[MapLeaf{Label: l.PeerLabel, PeerType: l.PeerType, Router: t.Node.Label}] = true
		}
	}
}

// link counts one link reported by from toward peer.
func (b *mapBuilder) link(from, peer string) {
	key := [2]string{min(from, peer), max(from, peer)}
	if b.counts[key] == nil {
		b.counts[key] = make(map[string]int)
		b.links[key] = &MapLink{A: key[0], B: key[1]}
	}
	b.counts[key][from]++
}

func (b *mapBuilder) unreached(label, why string) {
	r := b.learn(label, "", false)
	if !r.Reached {
		r.Error = why
	}
}

// done sorts everything into a Map. Two routers that each report a link
// to the other report the same links, so the count is the larger report.
func (b *mapBuilder) done() *Map {
	m := &Map{From: b.from, Routers: []MapRouter{}, Links: []MapLink{}, Leaves: []MapLeaf{}}
	for _, r := range b.routers {
		m.Routers = append(m.Routers, *r)
	}
	slices.SortFunc(m.Routers, func(x, y MapRouter) int { return strings.Compare(x.Label, y.Label) })
	for key, l := range b.links {
		for reporter, n := range b.counts[key] {
			l.Links = max(l.Links, n)
			l.SeenBy = append(l.SeenBy, reporter)
		}
		slices.Sort(l.SeenBy)
		m.Links = append(m.Links, *l)
	}
	slices.SortFunc(m.Links, func(x, y MapLink) int { return cmp.Or(strings.Compare(x.A, y.A), strings.Compare(x.B, y.B)) })
	for l := range b.leaves {
		m.Leaves = append(m.Leaves, l)
	}
	slices.SortFunc(m.Leaves, func(x, y MapLeaf) int {
		return cmp.Or(strings.Compare(x.Router, y.Router), strings.Compare(x.Label, y.Label), strings.Compare(x.PeerType, y.PeerType))
	})
	return m
}

// JSON renders the map indented, ending in a newline.
func (m *Map) JSON() []byte {
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil { // plain structs of strings and numbers cannot fail
		panic(err)
	}
	return append(out, '\n')
}

// DOT renders the map as an undirected Graphviz graph: routers are
// ellipses (the one the map was gathered from bold, unreached ones
// dashed, with the reason as a tooltip), router-to-router links solid
// edges (labelled when more than one link joins a pair), leaves dotted
// boxes.
func (m *Map) DOT() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "graph dmsgd {\n\tlabel=%s;\n\tlabelloc=t;\n\tnode [shape=ellipse];\n",
		dotQuote("dmsgd cluster seen from "+m.From))
	for _, r := range m.Routers {
		var attrs []string
		switch {
		case r.Label == m.From:
			attrs = append(attrs, "style=bold")
		case !r.Reached:
			attrs = append(attrs, "style=dashed", "tooltip="+dotQuote("not reached: "+r.Error))
		}
		fmt.Fprintf(&b, "\t%s", dotQuote(r.Label))
		if len(attrs) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(attrs, ", "))
		}
		b.WriteString(";\n")
	}
	for _, l := range m.Links {
		fmt.Fprintf(&b, "\t%s -- %s", dotQuote(l.A), dotQuote(l.B))
		if l.Links > 1 {
			fmt.Fprintf(&b, " [label=%s]", dotQuote(fmt.Sprintf("%d links", l.Links)))
		}
		b.WriteString(";\n")
	}
	for _, l := range m.Leaves {
		id := dotQuote("leaf " + l.PeerType + " " + l.Label + " at " + l.Router)
		fmt.Fprintf(&b, "\t%s [shape=box, style=dotted, label=%s];\n\t%s -- %s [style=dotted];\n",
			id, dotQuote(l.Label+" ("+l.PeerType+")"), dotQuote(l.Router), id)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// dotQuote quotes s as a DOT string.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
