package testnet

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Timeout bounds every wait. Everything converges in milliseconds on
// loopback; reaching it means a hang or a lost event. It is generous
// because a loaded 2-core machine running -race slows some packages
// tenfold, and a deadline costs nothing while the wait succeeds.
const Timeout = 60 * time.Second

// Poll calls cond until it returns nil or d has passed, and returns cond's
// last error.
func Poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
	}
}

// Eventually polls cond until it returns nil, failing tb with cond's last
// complaint after Timeout.
func Eventually(tb testing.TB, what string, cond func() error) {
	tb.Helper()
	if err := Poll(Timeout, cond); err != nil {
		tb.Fatalf("timed out after %v waiting until %s: %v", Timeout, what, err)
	}
}

// WaitChan waits for ch to be closed, failing tb after Timeout.
func WaitChan(tb testing.TB, what string, ch <-chan struct{}) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(Timeout):
		tb.Fatalf("timed out after %v waiting until %s", Timeout, what)
	}
}

// Logger logs to the test at warn level (shown only for failing tests or
// with -v; benchmarks log nothing); DMSGD_TEST_LOG=debug|info turns the
// volume up.
func Logger(tb testing.TB) *zap.Logger {
	level := zapcore.WarnLevel
	s := os.Getenv("DMSGD_TEST_LOG")
	if _, bench := tb.(*testing.B); bench && s == "" {
		return zap.NewNop()
	}
	if s != "" {
		if err := level.Set(s); err != nil {
			tb.Fatalf("DMSGD_TEST_LOG=%q: %v", s, err)
		}
	}
	return zaptest.NewLogger(tb, zaptest.Level(level))
}

// Main runs a package's tests and fails it if any goroutine outlives them
// (everything a test starts is stopped by its cleanup) or if link code
// recovered from a panic: a recovered panic is still a bug.
func Main(m *testing.M) {
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

// ShortTempDir is a per-test temporary directory whose paths stay well
// under the 108-byte limit of unix socket addresses.
func ShortTempDir(tb testing.TB) string {
	dir := tb.TempDir()
	if len(dir) < 80 {
		return dir
	}
	dir, err := os.MkdirTemp("", "tn")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
