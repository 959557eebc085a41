package e2e

import (
	"testing"
	"time"
)

// A line of four daemons, each dialling the previous one from its config:
// the ends see every node at its distance, lose the far half when the
// second daemon dies, and get it back when it returns.
func TestLineOfFourDaemonsHealsWhenTheSecondRestarts(t *testing.T) {
	ds := startLine(t, 4)
	n1, n2, n4 := ds[0], ds[1], ds[3]

	const settle = 30 * time.Second
	waitDists(t, n1, settle, map[string]uint32{"n1": 0, "n2": 0, "n3": 1, "n4": 2})
	waitDists(t, n4, settle, map[string]uint32{"n1": 2, "n2": 1, "n3": 0, "n4": 0})

	n2.kill()
	waitDists(t, n1, settle, map[string]uint32{"n1": 0})
	waitDists(t, n4, settle, map[string]uint32{"n3": 0, "n4": 0})

	n2.start()
	waitDists(t, n1, settle, map[string]uint32{"n1": 0, "n2": 0, "n3": 1, "n4": 2})
	waitDists(t, n4, settle, map[string]uint32{"n1": 2, "n2": 1, "n3": 0, "n4": 0})
}
