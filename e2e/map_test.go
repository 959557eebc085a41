package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// mapJSON is `dmsgd map --format json`.
type mapJSON struct {
	From    string `json:"from"`
	Routers []struct {
		Label   string `json:"label"`
		Reached bool   `json:"reached"`
		Error   string `json:"error"`
	} `json:"routers"`
	Links []struct {
		A      string   `json:"a"`
		B      string   `json:"b"`
		Links  int      `json:"links"`
		SeenBy []string `json:"seen_by"`
	} `json:"links"`
	Leaves []struct {
		Label    string `json:"label"`
		PeerType string `json:"peer_type"`
		Router   string `json:"router"`
	} `json:"leaves"`
}

// runMap runs `dmsgd map` against d with args and env, returning stdout,
// stderr and the exit code.
func (d *daemon) runMap(env []string, args ...string) (string, string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"map", "--socket", d.shell}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		d.t.Fatalf("dmsgd map: %v", err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// routerLinks returns the labels of the routers d has an up link to, one
// entry per link.
func (d *daemon) routerLinks() ([]string, error) {
	tj, err := d.tree()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range tj.Links {
		if l.State == "up" && l.PeerType == "router" {
			out = append(out, l.PeerLabel)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Five routers with two cycles, each dialling others from its config, and
// a leaf: `dmsgd map` at n1 draws every router, reached, and exactly the
// six router-to-router links, each reported by both of its ends, plus the
// leaf; as DOT and, through Graphviz's dot, as SVG.
func TestMapOfFiveRoutersHasEveryEdge(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5"}
	dials := map[string][]string{"n2": {"n1"}, "n3": {"n2", "n1"}, "n4": {"n3"}, "n5": {"n4", "n2"}}
	ds := map[string]*daemon{}
	for _, n := range names {
		var ports []int
		for _, to := range dials[n] {
			ports = append(ports, ds[to].port)
		}
		ds[n] = newDaemon(t, n, ports...)
		ds[n].start()
	}
	wantEdges := map[[2]string]bool{}
	neighbours := map[string][]string{}
	for from, tos := range dials {
		for _, to := range tos {
			wantEdges[[2]string{min(from, to), max(from, to)}] = true
			neighbours[from] = append(neighbours[from], to)
			neighbours[to] = append(neighbours[to], from)
		}
	}
	dialLeaf(t, ds["n4"].port, "pfs")
	for _, n := range names {
		d := ds[n]
		want := slices.Sorted(slices.Values(neighbours[n]))
		waitFor(t, 60*time.Second, n+" linked to its neighbours and holding every router", func() bool {
			got, err := d.routerLinks()
			if err != nil || !slices.Equal(got, want) {
				return false
			}
			dists, err := d.dists()
			if err != nil {
				return false
			}
			for _, o := range names {
				if _, ok := dists[o]; !ok {
					return false
				}
			}
			return true
		})
	}

	out, stderr, code := ds["n1"].runMap(nil, "--format", "json")
	if code != 0 {
		t.Fatalf("dmsgd map exited %d: %s", code, stderr)
	}
	var m mapJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("map output: %v\n%s", err, out)
	}
	var reached []string
	for _, r := range m.Routers {
		if !r.Reached {
			t.Errorf("router %s not reached: %s", r.Label, r.Error)
		}
		reached = append(reached, r.Label)
	}
	if !slices.Equal(reached, names) || m.From != "n1" {
		t.Errorf("map from %s has routers %v, want %v", m.From, reached, names)
	}
	gotEdges := map[[2]string]bool{}
	for _, l := range m.Links {
		gotEdges[[2]string{l.A, l.B}] = true
		if !wantEdges[[2]string{l.A, l.B}] {
			t.Errorf("map has a link %s-%s that does not exist", l.A, l.B)
		}
		if l.Links != 1 || !slices.Equal(l.SeenBy, []string{l.A, l.B}) {
			t.Errorf("link %s-%s: %d links seen by %v, want 1 seen by both ends", l.A, l.B, l.Links, l.SeenBy)
		}
	}
	for e := range wantEdges {
		if !gotEdges[e] {
			t.Errorf("map lacks the link %s-%s", e[0], e[1])
		}
	}
	if len(m.Leaves) != 1 || m.Leaves[0].Label != "pfs" || m.Leaves[0].Router != "n4" || m.Leaves[0].PeerType != "hammer2" {
		t.Errorf("map leaves %+v, want pfs (hammer2) at n4", m.Leaves)
	}

	dot, stderr, code := ds["n1"].runMap(nil, "--format", "dot")
	if code != 0 {
		t.Fatalf("dmsgd map --format dot exited %d: %s", code, stderr)
	}
	for e := range wantEdges {
		if line := fmt.Sprintf("\t%q -- %q;\n", e[0], e[1]); !strings.Contains(dot, line) {
			t.Errorf("DOT lacks %q:\n%s", line, dot)
		}
	}

	// SVG goes through Graphviz's dot: a stand-in records the graph it is
	// given; without one on PATH the command says what is missing.
	bin := t.TempDir()
	fake := "#!/bin/sh\n[ \"$1\" = -Tsvg ] || exit 2\necho '<svg>'\n/bin/cat\necho '</svg>'\n"
	if err := os.WriteFile(filepath.Join(bin, "dot"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	svg, stderr, code := ds["n1"].runMap([]string{"PATH=" + bin}, "--format", "svg")
	if code != 0 || !strings.HasPrefix(svg, "<svg>\ngraph dmsgd {") || !strings.HasSuffix(svg, "}\n</svg>\n") {
		t.Errorf("--format svg exited %d (%s) printing %q", code, stderr, svg)
	}
	_, stderr, code = ds["n1"].runMap([]string{"PATH=" + t.TempDir()}, "--format", "svg")
	if code != 1 || !strings.Contains(stderr, "needs Graphviz's dot on PATH") {
		t.Errorf("--format svg without dot exited %d: %q", code, stderr)
	}
}
