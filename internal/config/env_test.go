package config

import (
	"reflect"
	"testing"
	"time"
)

func TestEnvironmentVariablesOverrideTheFile(t *testing.T) {
	path := writeConfig(t, `
shell:
  socket: /from/file.sock
span:
  max_relays: 3
log:
  level: debug
`)
	tests := []struct {
		name  string
		env   map[string]string
		check func(*Config) bool
	}{
		{
			name:  "DMSGD_SHELL_SOCKET sets shell.socket",
			env:   map[string]string{"DMSGD_SHELL_SOCKET": "/from/env.sock"},
			check: func(c *Config) bool { return c.Shell.Socket == "/from/env.sock" },
		},
		{
			name:  "DMSGD_LOG_LEVEL sets log.level",
			env:   map[string]string{"DMSGD_LOG_LEVEL": "error"},
			check: func(c *Config) bool { return c.Log.Level == LogError },
		},
		{
			name:  "DMSGD_SPAN_MAX_RELAYS sets span.max_relays from a string",
			env:   map[string]string{"DMSGD_SPAN_MAX_RELAYS": "5"},
			check: func(c *Config) bool { return c.Span.MaxRelays == 5 },
		},
		{
			name:  "DMSGD_SPAN_SYMMETRIC sets a boolean",
			env:   map[string]string{"DMSGD_SPAN_SYMMETRIC": "true"},
			check: func(c *Config) bool { return c.Span.Symmetric },
		},
		{
			name:  "DMSGD_KEEPALIVE_TIMEOUT sets a duration",
			env:   map[string]string{"DMSGD_KEEPALIVE_TIMEOUT": "1m"},
			check: func(c *Config) bool { return c.Keepalive.Timeout == time.Minute },
		},
		{
			name:  "DMSGD_LIMITS_QUEUE_BYTES_PER_LINK sets a size",
			env:   map[string]string{"DMSGD_LIMITS_QUEUE_BYTES_PER_LINK": "2MiB"},
			check: func(c *Config) bool { return c.Limits.QueueBytesPerLink == 2<<20 },
		},
		{
			name:  "DMSGD_NODE_CLUSTER_LABEL sets a key with an underscore",
			env:   map[string]string{"DMSGD_NODE_CLUSTER_LABEL": "lab"},
			check: func(c *Config) bool { return c.Node.ClusterLabel == "lab" && c.Node.ClusterID == NodeIDFor("lab") },
		},
		{
			name:  "DMSGD_NODE_PEER_TYPE accepts a name",
			env:   map[string]string{"DMSGD_NODE_PEER_TYPE": "client"},
			check: func(c *Config) bool { return c.Node.PeerType == PeerClient },
		},
		{
			name: "DMSGD_LISTEN is a comma-separated list",
			env:  map[string]string{"DMSGD_LISTEN": "tcp://127.0.0.1:1, unix:///run/x.sock"},
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Listen, []string{"tcp://127.0.0.1:1", "unix:///run/x.sock"})
			},
		},
		{
			name: "DMSGD_MEDIA is a list in YAML form",
			env:  map[string]string{"DMSGD_MEDIA": `[{name: m, copies: [{copyid: 1, path: "span:127.0.0.1"}]}]`},
			check: func(c *Config) bool {
				return len(c.Media) == 1 && c.Media[0].Copies[0].Target == Target{Name: "m", Host: "127.0.0.1", Port: 987}
			},
		},
		{
			name:  "an empty variable is ignored",
			env:   map[string]string{"DMSGD_LOG_LEVEL": ""},
			check: func(c *Config) bool { return c.Log.Level == LogDebug },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg := mustLoad(t, path)
			if !tt.check(cfg) {
				t.Errorf("with %v: config = %+v", tt.env, cfg)
			}
		})
	}
}

func TestEnvironmentVariablesWorkWithoutAFile(t *testing.T) {
	t.Setenv("DMSGD_NODE_LABEL", "from-env")
	cfg := mustLoad(t, "")
	if cfg.Node.Label != "from-env" || cfg.Node.ID != NodeIDFor("from-env") {
		t.Errorf("node = %+v", cfg.Node)
	}
	if !cfg.IsSet("node.label") {
		t.Error("node.label set by the environment is not reported as set")
	}
}

func TestABadEnvironmentValueNamesTheVariable(t *testing.T) {
	path := writeConfig(t, "span:\n  max_relays: 3\n")
	tests := []struct {
		name string
		env  string
		val  string
		want string
	}{
		{"a word for an integer", "DMSGD_SPAN_MAX_RELAYS", "many",
			path + ": span.max_relays: must be an integer (set by $DMSGD_SPAN_MAX_RELAYS)"},
		{"a rule broken by the environment", "DMSGD_SPAN_MAX_RELAYS", "0",
			path + ": span.max_relays: must be at least 1, not 0 (set by $DMSGD_SPAN_MAX_RELAYS)"},
		{"a bad list item", "DMSGD_LISTEN", "tcp://127.0.0.1:1,ftp://x",
			path + `: listen[1]: listen address "ftp://x": unknown scheme "ftp" (want tcp, tls or unix) (set by $DMSGD_LISTEN)`},
		{"a typo inside a list in YAML form", "DMSGD_MEDIA", `[{name: m, copies: [{copyid: 1, path: "span:127.0.0.1", pth: x}]}]`,
			path + `: media[0].copies[0].pth: unknown key (did you mean "path"?) (set by $DMSGD_MEDIA)`},
		{"a half number for an integer", "DMSGD_SPAN_MAX_RELAYS", "2.5",
			path + ": span.max_relays: must be an integer (set by $DMSGD_SPAN_MAX_RELAYS)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.val)
			_, err := Load(path)
			got := problemLines(t, err)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("problems = %q, want [%q]", got, tt.want)
			}
		})
	}
}
