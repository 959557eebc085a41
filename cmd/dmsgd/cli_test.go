package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runDmsgd runs the dmsgd command line in process on a fresh root command
// and returns what it printed and its exit code.
func runDmsgd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(context.Background(), newRootCmd(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestVersionPrintsVersionCommitAndGoVersion(t *testing.T) {
	stdout, stderr, code := runDmsgd(t, "version")
	if code != 0 || stderr != "" {
		t.Fatalf("dmsgd version: code %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 || lines[0] != "dmsgd "+version ||
		!strings.HasPrefix(lines[1], "commit: ") || !strings.HasPrefix(lines[2], "go: go") {
		t.Errorf("dmsgd version printed %q", stdout)
	}
}

func TestAnUnknownCommandExitsOneWithAReason(t *testing.T) {
	_, stderr, code := runDmsgd(t, "frobnicate")
	if code != 1 || !strings.HasPrefix(stderr, "dmsgd: unknown command") {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
}
