package e2e

import (
	"strings"
	"testing"
	"time"
)

// `@n4 tree` typed at n1's shell runs on n4 through a virtual circuit
// relayed by n2 and n3, and prints n4's own tree at n1.
func TestRemoteShellRunsThroughThreeHops(t *testing.T) {
	ds := startLine(t, 4)
	n1 := ds[0]
	waitDists(t, n1, 30*time.Second, map[string]uint32{"n1": 0, "n2": 0, "n3": 1, "n4": 2})

	out, err := n1.runShell("@n4 tree")
	if err != nil {
		t.Fatal(err)
	}
	// n4 holds itself via local, n3 at dist 0 and n1 at dist 2.
	for _, want := range []string{"(n4)\n\tSLink msgid 0000000000000000 dist=0 via local", "(n3)\n\tSLink", "(n1)\n\tSLink"} {
		if !strings.Contains(out, want) {
			t.Fatalf("@n4 tree output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "dist=2") {
		t.Fatalf("@n4 tree should show n1 at dist 2:\n%s", out)
	}
	// Every router frees the circuit once the command is done.
	for _, d := range ds {
		waitFor(t, 10*time.Second, d.name+" has no circuits", func() bool {
			tj, err := d.tree()
			return err == nil && len(tj.Circuits) == 0
		})
	}
}
