package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const diffBase = `
listen: [tcp://127.0.0.1:9870]
shell:
  socket: ./run/shell.sock
node:
  label: dev-a
span:
  max_relays: 2
media:
  - name: lab
    copies:
      - {copyid: 1, path: "span:127.0.0.1:9871"}
log:
  level: info
`

func TestDiffSeparatesLiveChangesFromRestarts(t *testing.T) {
	old := mustLoad(t, writeConfig(t, diffBase))
	tests := []struct {
		name    string
		edit    func(*Config)
		changes []string
		restart []string
	}{
		{
			name: "an unchanged config has no differences",
			edit: func(*Config) {},
		},
		{
			name:    "a new log level applies live",
			edit:    func(c *Config) { c.Log.Level = LogDebug },
			changes: []string{"log.level: info -> debug"},
		},
		{
			name:    "limits apply live",
			edit:    func(c *Config) { c.Limits.MaxLinks = 8; c.Limits.QueueBytesPerLink = 1 << 20 },
			changes: []string{"limits.max_links: 1024 -> 8", "limits.queue_bytes_per_link: 16MiB -> 1MiB"},
		},
		{
			name: "the span and circuit budgets apply live",
			edit: func(c *Config) {
				c.Limits.MaxNodes, c.Limits.MaxRelays, c.Limits.MaxCircuitsPerLink = 10, 20, 30
			},
			changes: []string{"limits.max_nodes: 65536 -> 10", "limits.max_relays: 262144 -> 20",
				"limits.max_circuits_per_link: 16384 -> 30"},
		},
		{
			name: "the link budgets and admission limits apply live",
			edit: func(c *Config) {
				c.Limits.MaxTransactions, c.Limits.MaxLinksPerSource = 100, 4
				c.Limits.SlowConsumerGrace = time.Second
			},
			changes: []string{"limits.slow_consumer_grace: 5s -> 1s", "limits.max_transactions: 262144 -> 100",
				"limits.max_links_per_source: 32 -> 4"},
		},
		{
			name:    "span and keepalive options apply live",
			edit:    func(c *Config) { c.Span.MaxRelays = 3; c.Keepalive.Timeout = 0 },
			changes: []string{"span.max_relays: 2 -> 3", "keepalive.timeout: 10s -> 0s"},
		},
		{
			name:    "shell.tcp and shell.remote apply live",
			edit:    func(c *Config) { c.Shell.TCP = ShellTCPOff; c.Shell.Remote = false },
			changes: []string{"shell.tcp: loopback -> off", "shell.remote: true -> false"},
		},
		{
			name: "media targets apply live",
			edit: func(c *Config) {
				c.Media = append(c.Media, Media{Name: "more", Copies: []Copy{{CopyID: 1, Path: "span:127.0.0.1:9872"}}})
			},
			changes: []string{"media: changed (1 -> 2 entries)"},
		},
		{
			name:    "the readiness target count applies live",
			edit:    func(c *Config) { c.Metrics.ReadyTargets = 1 },
			changes: []string{"metrics.ready_targets: 0 -> 1"},
		},
		{
			name:    "listen needs a restart",
			edit:    func(c *Config) { c.Listen = []string{"tcp://127.0.0.1:9999"} },
			restart: []string{"listen"},
		},
		{
			name:    "the shell socket needs a restart",
			edit:    func(c *Config) { c.Shell.Socket = "/elsewhere.sock" },
			restart: []string{"shell.socket"},
		},
		{
			name:    "the node identity needs a restart",
			edit:    func(c *Config) { c.Node.Label = "dev-b"; c.Node.ID = NodeIDFor("dev-b") },
			restart: []string{"node.label", "node.id"},
		},
		{
			name: "tls, metrics and the log format need a restart",
			edit: func(c *Config) {
				c.TLS.InsecurePlainTCP = true
				c.Metrics.Listen = "127.0.0.1:1"
				c.Log.Format = LogConsole
			},
			restart: []string{"tls.insecure_plain_tcp", "log.format", "metrics.listen"},
		},
		{
			name:    "live and restart changes are reported together",
			edit:    func(c *Config) { c.Log.Level = LogWarn; c.Listen = nil },
			changes: []string{"log.level: info -> warn"},
			restart: []string{"listen"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newer := mustLoad(t, old.File)
			tt.edit(newer)
			changes, restart := old.Diff(newer)
			if !reflect.DeepEqual(changes, tt.changes) {
				t.Errorf("changes = %q, want %q", changes, tt.changes)
			}
			if !reflect.DeepEqual(restart, tt.restart) {
				t.Errorf("restartNeeded = %q, want %q", restart, tt.restart)
			}
		})
	}
}

func TestResolveShellSocket(t *testing.T) {
	dir := t.TempDir()
	withSocket := filepath.Join(dir, "with.yaml")
	withoutSocket := filepath.Join(dir, "without.yaml")
	broken := filepath.Join(dir, "broken.yaml")
	for path, content := range map[string]string{
		withSocket:    "shell:\n  socket: /from/config.sock\nlimits:\n  max_links: nonsense\n",
		withoutSocket: "log:\n  level: debug\n",
		broken:        "shell: [\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		flag   string
		env    string
		config string
		want   string
	}{
		{"the flag wins over everything", "/from/flag.sock", "/from/env.sock", withSocket, "/from/flag.sock"},
		{"the environment wins over the config file", "", "/from/env.sock", withSocket, "/from/env.sock"},
		{"the config file wins over the default, even if otherwise invalid", "", "", withSocket, "/from/config.sock"},
		{"a config file without a socket gives the default", "", "", withoutSocket, DefaultShellSocket},
		{"an unparsable config file gives the default", "", "", broken, DefaultShellSocket},
		{"a missing config file gives the default", "", "", filepath.Join(dir, "missing.yaml"), DefaultShellSocket},
		{"no config file gives the default", "", "", "", DefaultShellSocket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DMSGD_SHELL_SOCKET", tt.env)
			if got := ResolveShellSocket(tt.flag, tt.config); got != tt.want {
				t.Errorf("ResolveShellSocket(%q, %q) with env %q = %q, want %q", tt.flag, tt.config, tt.env, got, tt.want)
			}
		})
	}
}

// An empty list and an absent one are the same configuration, at any
// depth: a reload from one to the other changes nothing.
func TestDiffTakesAnEmptyListForAnAbsentOne(t *testing.T) {
	old := mustLoad(t, writeConfig(t, "media: []\nlisten: []\ntls:\n  peers:\n    - name: node-b\n      pubkey: "+
		`"ed25519:`+strings.Repeat("A", 43)+`="`+"\n      nodes: []\n"))
	newer := mustLoad(t, writeConfig(t, "tls:\n  peers:\n    - name: node-b\n      pubkey: "+
		`"ed25519:`+strings.Repeat("A", 43)+`="`+"\n"))
	if old.Media == nil || old.Listen == nil || old.TLS.Peers[0].Nodes == nil {
		t.Fatalf("the empty lists did not load as empty lists: media %#v, listen %#v, nodes %#v",
			old.Media, old.Listen, old.TLS.Peers[0].Nodes)
	}
	changes, restart := old.Diff(newer)
	if len(changes) != 0 || len(restart) != 0 {
		t.Errorf("changes = %q, restartNeeded = %q; want none", changes, restart)
	}
	newer.Media = []Media{{Name: "lab"}}
	if changes, _ := old.Diff(newer); !reflect.DeepEqual(changes, []string{"media: changed (0 -> 1 entries)"}) {
		t.Errorf("a media entry added: changes = %q", changes)
	}
}
