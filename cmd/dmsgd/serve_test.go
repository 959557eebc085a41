package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
)

// runServeCmd runs `dmsgd serve args...` in process and returns its exit
// code and stderr.
func runServeCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	root.AddCommand(newServeCmd())
	var out, errOut bytes.Buffer
	code := execute(context.Background(), root, append([]string{"serve"}, args...), &out, &errOut)
	return code, errOut.String()
}

func TestServeRefusesToStartWithoutAConfigFile(t *testing.T) {
	clearDmsgdEnv(t)
	missing := filepath.Join(t.TempDir(), "nowhere.yaml")
	tests := []struct {
		name, want string
		args       []string
	}{
		{"naming the file --config gave", "dmsgd: no configuration file at " + missing + " (given by --config)\n",
			[]string{"--config", missing}},
	}
	if _, err := os.Stat(config.DefaultPath); err != nil {
		// Only where the default file does not exist can serve be run
		// without --config and be expected to refuse.
		tests = append(tests, struct {
			name, want string
			args       []string
		}{"naming the default it looked for",
			"dmsgd: no configuration file at " + config.DefaultPath + " (the default); pass --config FILE\n", nil})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := runServeCmd(t, tt.args...)
			if code != 1 || stderr != tt.want {
				t.Fatalf("exit %d, stderr %q; want 1, %q", code, stderr, tt.want)
			}
		})
	}
}
