package iocom_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dmsgd/dmsgd/internal/iocom"
)

// TestMain fails the package if any goroutine outlives the tests (every
// Link a test starts must be closed and have reached Done), or if link code
// recovered from a panic no test asked for. Each test also checks both for
// itself (guard), so that a failure names the test that caused it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if got, want := iocom.Panics(), wantPanics.Load(); got != want && code == 0 {
			fmt.Fprintf(os.Stderr, "iocom.Panics() = %d at exit, want %d (the panics tests caused on purpose)\n", got, want)
			code = 1
		}
		os.Exit(code)
	}))
}
