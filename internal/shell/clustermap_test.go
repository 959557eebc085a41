package shell

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fakeCluster answers `tree json` for from and `@label tree json` for the
// others from a table of trees; labels without a tree answer as `@node`
// does for an unreachable router.
type fakeCluster struct {
	from  string
	trees map[string]*Tree
	asked []string
}

func (f *fakeCluster) run(_ context.Context, line string) (string, error) {
	f.asked = append(f.asked, line)
	label := f.from
	if strings.HasPrefix(line, "@") {
		label, line, _ = strings.Cut(line[1:], " ")
	}
	if line != "tree json" {
		return "", errors.New("unexpected command " + line)
	}
	t := f.trees[label]
	if t == nil {
		return "@" + label + ": circuit failed: CANTCIRC\n", nil
	}
	return string(JSON(t)), nil
}

// routerTree is the tree of router label holding spans of routers knows
// and linked to peers (label -> peer type).
func routerTree(label string, knows []string, peers ...[2]string) *Tree {
	t := &Tree{Node: Self{Label: label, ID: "id-" + label}}
	c := Cluster{PeerType: "router", Label: "default"}
	for _, k := range knows {
		c.Nodes = append(c.Nodes, Node{Label: k, ID: "id-" + k, Adverts: []Advert{{Via: "L1"}}})
	}
	t.Clusters = []Cluster{c}
	for _, p := range peers {
		t.Links = append(t.Links, Link{ID: "L1", PeerLabel: p[0], PeerType: p[1], State: "up", Remote: "127.0.0.1:1"})
	}
	return t
}

func TestTheMapHasEveryRouterAndEveryLinkOnce(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	// a-b, b-c (twice), c-a, c-d; a leaf on d; d is unreachable, so its
	// link to c is known from c alone; a shell client on a.
	f := &fakeCluster{from: "a", trees: map[string]*Tree{
		"a": routerTree("a", all, [2]string{"b", "router"}, [2]string{"c", "router"}, [2]string{"dmsgd-map", "client"}),
		"b": routerTree("b", all, [2]string{"a", "router"}, [2]string{"c", "router"}, [2]string{"c", "router"}),
		"c": routerTree("c", all, [2]string{"a", "router"}, [2]string{"b", "router"}, [2]string{"b", "router"},
			[2]string{"d", "router"}, [2]string{"", "router"}),
	}}
	f.trees["a"].Links = append(f.trees["a"].Links, Link{PeerLabel: "pfs", PeerType: "hammer2", State: "up"},
		Link{PeerLabel: "x", PeerType: "router", State: "connecting"})
	m, err := GatherMap(context.Background(), f.run)
	if err != nil {
		t.Fatal(err)
	}
	want := &Map{From: "a",
		Routers: []MapRouter{
			{Label: "a", ID: "id-a", Reached: true},
			{Label: "b", ID: "id-b", Reached: true},
			{Label: "c", ID: "id-c", Reached: true},
			{Label: "d", ID: "id-d", Error: "@d: circuit failed: CANTCIRC"},
			{Label: "unlabelled peer 127.0.0.1:1 of c", Error: "announces no label: cannot be asked"},
		},
		Links: []MapLink{
			{A: "a", B: "b", Links: 1, SeenBy: []string{"a", "b"}},
			{A: "a", B: "c", Links: 1, SeenBy: []string{"a", "c"}},
			{A: "b", B: "c", Links: 2, SeenBy: []string{"b", "c"}},
			{A: "c", B: "d", Links: 1, SeenBy: []string{"c"}},
			{A: "c", B: "unlabelled peer 127.0.0.1:1 of c", Links: 1, SeenBy: []string{"c"}},
		},
		Leaves: []MapLeaf{{Label: "pfs", PeerType: "hammer2", Router: "a"}},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("map:\n%s\nwant:\n%s", m.JSON(), want.JSON())
	}
	if got := strings.Join(f.asked, ","); got != "tree json,@b tree json,@c tree json,@d tree json" {
		t.Errorf("asked %s; want every router once, over circuits after the first", got)
	}

	var round Map
	if err := json.Unmarshal(m.JSON(), &round); err != nil || !reflect.DeepEqual(&round, m) {
		t.Errorf("the JSON does not read back as the map: %v\n%s", err, m.JSON())
	}
	dot := string(m.DOT())
	for _, line := range []string{
		"graph dmsgd {",
		`	"a" [style=bold];`,
		`	"d" [style=dashed, tooltip="not reached: @d: circuit failed: CANTCIRC"];`,
		`	"a" -- "b";`,
		`	"b" -- "c" [label="2 links"];`,
		`	"c" -- "d";`,
		`	"a" -- "leaf hammer2 pfs at a" [style=dotted];`,
	} {
		if !strings.Contains(dot, line+"\n") {
			t.Errorf("DOT lacks %q:\n%s", line, dot)
		}
	}
}

func TestTheMapFailsOnlyWithoutTheFirstTree(t *testing.T) {
	f := &fakeCluster{from: "a", trees: map[string]*Tree{}}
	if _, err := GatherMap(context.Background(), f.run); err == nil {
		t.Fatal("a map without the first router's tree")
	}
}

func TestDOTStringsAreQuoted(t *testing.T) {
	if got := dotQuote(`a "b" \c` + "\n"); got != `"a \"b\" \\c\n"` {
		t.Fatalf("dotQuote = %s", got)
	}
}

// Labels are peer text: one that `@label` cannot address (a space, a
// leading @, or nothing at all) would make the map's own command line
// another command, so it is never asked, only listed unreached.
func TestTheMapNeverAsksALabelThatIsNotOneWord(t *testing.T) {
	odd := []string{"b span 127.0.0.1:1", "@c", "d ", ""}
	f := &fakeCluster{from: "a", trees: map[string]*Tree{"a": routerTree("a", append([]string{"a"}, odd...))}}
	m, err := GatherMap(context.Background(), f.run)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.asked, []string{"tree json"}) {
		t.Fatalf("the map asked %q", f.asked)
	}
	for _, r := range m.Routers {
		if r.Label != "a" && (r.Reached || !strings.Contains(r.Error, "cannot be addressed")) {
			t.Errorf("%q: %+v, want unreached because it cannot be addressed", r.Label, r)
		}
	}
}
