package main

import (
	"runtime/debug"
	"testing"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
)

func TestMemoryLimitFollowsTheConfigurationAndFallsBackToTheRuntimes(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	cfg := config.Defaults()
	tests := []struct {
		name  string
		limit config.ByteSize
		want  int64
	}{
		{"the default is set", config.DefaultMemoryLimit, config.DefaultMemoryLimit},
		{"a reload lowers it", 256 << 20, 256 << 20},
		{"0 gives the runtime's own back", 0, runtimeMemoryLimit},
	}
	for _, tt := range tests {
		cfg.Limits.MemoryLimit = tt.limit
		applyMemoryLimit(zap.NewNop(), cfg)
		if got := debug.SetMemoryLimit(-1); got != tt.want {
			t.Errorf("%s: runtime memory limit %d, want %d", tt.name, got, tt.want)
		}
	}
}
