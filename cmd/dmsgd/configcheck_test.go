package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clearDmsgdEnv blanks every DMSGD_* variable for the test; config
// loading ignores empty ones.
func clearDmsgdEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "DMSGD_") {
			t.Setenv(name, "")
		}
	}
}

func TestConfigCheck(t *testing.T) {
	clearDmsgdEnv(t)
	good := writeFile(t, "good.yaml", "listen: [tcp://127.0.0.1:9870]\nnode:\n  label: dev-a\n")
	bad := writeFile(t, "bad.yaml", "listen:\n  - tcp://0.0.0.0:987\nspan:\n  max_relays: 0\nlog:\n  levle: debug\n")
	missing := filepath.Join(t.TempDir(), "missing.yaml")

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "a valid file prints FILE: ok and exits 0",
			args:       []string{"config", "check", "--config", good},
			wantStdout: good + ": ok\n",
		},
		{
			name:       "the file may be given as an argument",
			args:       []string{"config", "check", good},
			wantStdout: good + ": ok\n",
		},
		{
			name:     "a bad file prints each problem with its line and exits 1",
			args:     []string{"config", "check", "--config", bad},
			wantCode: 1,
			wantStderr: bad + ":2: listen[0]: tcp://0.0.0.0:987 is plain TCP on a non-loopback address; use tls:// or set tls.insecure_plain_tcp: true\n" +
				bad + ":4: span.max_relays: must be at least 1, not 0\n" +
				bad + ":6: log.levle: unknown key (did you mean \"level\"?)\n",
		},
		{
			name:       "a bad environment override is reported",
			args:       []string{"config", "check", "--config", good},
			env:        map[string]string{"DMSGD_KEEPALIVE_INTERVAL": "soon"},
			wantCode:   1,
			wantStderr: good + `: keepalive.interval: "soon" is not a duration such as 10s (set by $DMSGD_KEEPALIVE_INTERVAL)` + "\n",
		},
		{
			name:       "a bad --log-level is reported",
			args:       []string{"config", "check", "--config", good, "--log-level", "loud"},
			wantCode:   1,
			wantStderr: good + `: log.level: must be debug, info, warn or error, not "loud" (set by --log-level)` + "\n",
		},
		{
			name:       "a missing file is reported and exits 1",
			args:       []string{"config", "check", "--config", missing},
			wantCode:   1,
			wantStderr: missing + ": cannot read: no such file or directory\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			stdout, stderr, code := runDmsgd(t, tt.args...)
			if code != tt.wantCode || stdout != tt.wantStdout || stderr != tt.wantStderr {
				t.Errorf("dmsgd %s:\ncode %d, want %d\nstdout %q\nwant   %q\nstderr %q\nwant   %q",
					strings.Join(tt.args, " "), code, tt.wantCode, stdout, tt.wantStdout, stderr, tt.wantStderr)
			}
		})
	}
}

func TestTheShippedConfigsPassConfigCheck(t *testing.T) {
	clearDmsgdEnv(t)
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob("../../configs/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, examples...)
	if len(files) == 0 {
		t.Fatal("no shipped configs found under configs/: the test must run from the repository")
	}
	for _, f := range files {
		stdout, stderr, code := runDmsgd(t, "config", "check", "--config", f)
		if code != 0 || stdout != f+": ok\n" {
			t.Errorf("dmsgd config check %s: code %d\n%s%s", f, code, stdout, stderr)
		}
	}
}

func TestConfigCheckWarnsAndReadsTheTLSFiles(t *testing.T) {
	clearDmsgdEnv(t)
	dir := t.TempDir()
	if _, err := ensureKeyPair(dir, "node-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := ensureKeyPair(other, "node-x", time.Now()); err != nil {
		t.Fatal(err)
	}
	plain := writeFile(t, "plain.yaml", "listen:\n  - tcp://0.0.0.0:9870\ntls:\n  insecure_plain_tcp: true\n")
	good := writeFile(t, "tls.yaml", fmt.Sprintf("listen: [tls://127.0.0.1:9870]\ntls:\n  cert: %s/node.crt\n  key: %s/node.key\n", dir, dir))
	mismatch := writeFile(t, "mismatch.yaml", fmt.Sprintf("listen: [tls://127.0.0.1:9870]\ntls:\n  cert: %s/node.crt\n  key: %s/node.key\n", dir, other))
	missing := writeFile(t, "missing.yaml", fmt.Sprintf("listen: [tls://127.0.0.1:9870]\ntls:\n  cert: %s/none.crt\n  key: %s/node.key\n", dir, dir))

	tests := []struct {
		name       string
		file       string
		wantCode   int
		wantStdout string
		wantStderr []string // prefixes, one per line
	}{
		{"a plain listener off loopback passes with a warning", plain, 0, plain + ": ok\n",
			[]string{plain + ":2: listen[0]: warning: tcp://0.0.0.0:9870 is plain TCP on a non-loopback address"}},
		{"a certificate and its key pass", good, 0, good + ": ok\n", nil},
		{"a key that is not the certificate's fails at tls.key", mismatch, 1, "",
			[]string{mismatch + ":4: tls.key: " + other + "/node.key is not the key of tls.cert"}},
		{"a missing certificate fails at tls.cert", missing, 1, "",
			[]string{missing + ":3: tls.cert: cannot read " + dir + "/none.crt: no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runDmsgd(t, "config", "check", "--config", tt.file)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if stderr == "" {
				lines = nil
			}
			ok := code == tt.wantCode && stdout == tt.wantStdout && len(lines) == len(tt.wantStderr)
			for i := 0; ok && i < len(lines); i++ {
				ok = strings.HasPrefix(lines[i], tt.wantStderr[i])
			}
			if !ok {
				t.Errorf("code %d stdout %q stderr:\n%s\nwant code %d, stdout %q, stderr lines starting %q",
					code, stdout, stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
