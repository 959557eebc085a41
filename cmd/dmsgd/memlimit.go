package main

import (
	"math"
	"runtime/debug"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
)

// runtimeMemoryLimit is the soft memory limit the runtime had before the
// configuration set one: GOMEMLIMIT's, or none.
var runtimeMemoryLimit = debug.SetMemoryLimit(-1)

// applyMemoryLimit sets the runtime's soft memory limit to
// limits.memory_limit, or back to the runtime's own when it is 0, and
// logs a change.
func applyMemoryLimit(log *zap.Logger, cfg *config.Config) {
	want := int64(cfg.Limits.MemoryLimit)
	if want == 0 {
		want = runtimeMemoryLimit
	}
	if old := debug.SetMemoryLimit(want); old != want {
		log.Info("memory limit set", zap.String("limit", memoryLimitString(want)))
	}
}

func memoryLimitString(n int64) string {
	if n == math.MaxInt64 {
		return "none"
	}
	return config.ByteSize(n).String()
}
