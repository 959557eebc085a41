package circ_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dmsgd/dmsgd/internal/iocom"
)

// TestMain fails the package if any goroutine outlives the tests (every
// router, link, leaf and proxy a test starts is stopped by its cleanup) or
// if link code recovered from a panic: a recovered panic is still a bug.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := iocom.Panics(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: iocom.Panics() = %d: link code recovered from a panic\n", n)
		code = 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: goroutines outlived the tests: %v\n", err)
		code = 1
	}
	os.Exit(code)
}
