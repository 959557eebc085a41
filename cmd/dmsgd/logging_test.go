package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/config"
)

func loadTestConfig(t *testing.T, content string) *config.Config {
	t.Helper()
	clearDmsgdEnv(t)
	path := filepath.Join(t.TempDir(), "dmsgd.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTheLoggerWritesJSONByDefaultWhenNotOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	logger, _, err := newLogger(loadTestConfig(t, ""), &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("link up", zap.String("link", "L1"))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if line["msg"] != "link up" || line["link"] != "L1" || line["level"] != "info" {
		t.Errorf("JSON line = %v", line)
	}
}

func TestTheLoggerWritesConsoleWhenAskedTo(t *testing.T) {
	var buf bytes.Buffer
	logger, _, err := newLogger(loadTestConfig(t, "log:\n  format: console\n"), &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("link up", zap.String("link", "L1"))
	if out := buf.String(); strings.HasPrefix(out, "{") || !strings.Contains(out, "INFO\t") || !strings.Contains(out, "link up") {
		t.Errorf("console line = %q", out)
	}
}

func TestTheLoggerLevelFollowsTheConfigAndChangesLive(t *testing.T) {
	var buf bytes.Buffer
	logger, level, err := newLogger(loadTestConfig(t, "log:\n  level: warn\n"), &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("hidden")
	level.SetLevel(zapcore.DebugLevel)
	logger.Debug("shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "shown") {
		t.Errorf("log = %q", out)
	}
}

func TestTheLoggerNeverSamples(t *testing.T) {
	var buf bytes.Buffer
	logger, _, err := newLogger(loadTestConfig(t, ""), &buf)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		logger.Info("span add", zap.Int("i", i))
	}
	if got := strings.Count(buf.String(), "\n"); got != n {
		t.Errorf("%d of %d identical lines were written", got, n)
	}
}

func TestABufferIsNotATerminal(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Errorf("%s is a terminal", os.DevNull)
	}
}
