package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// writeConfig writes content (with its leading newline removed) to a
// fresh config file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dmsgd.yaml")
	if err := os.WriteFile(path, []byte(strings.TrimPrefix(content, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problemLines returns the problem lines of a Load error, failing the test
// when the error is not a *ValidationError.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load error = %v, want a *ValidationError", err)
	}
	out := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		out[i] = p.String()
	}
	return out
}

func mustLoad(t *testing.T, path string, opts ...Option) *Config {
	t.Helper()
	cfg, err := Load(path, opts...)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	return cfg
}

func TestLoadWithoutAFileAppliesEveryDefault(t *testing.T) {
	cfg := mustLoad(t, "")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Node.Label = host
	want.Node.ID = uuid.NewSHA1(uuid.NameSpaceOID, []byte(host))
	want.Node.ClusterID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("default"))
	want.explicit = map[string]bool{}

	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(\"\") =\n%+v\nwant\n%+v", cfg, want)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"the shell socket is " + DefaultShellSocket, cfg.Shell.Socket == DefaultShellSocket},
		{"the shell answers loopback TCP peers", cfg.Shell.TCP == ShellTCPLoopback},
		{"the shell answers over circuits", cfg.Shell.Remote},
		{"the node advertises itself", cfg.Node.Advertise},
		{"the cluster label is default", cfg.Node.ClusterLabel == "default"},
		{"the node is a router", cfg.Node.PeerType == PeerRouter},
		{"two relays are kept", cfg.Span.MaxRelays == 2},
		{"keepalives go every second", cfg.Keepalive.Interval == time.Second},
		{"links time out after ten seconds", cfg.Keepalive.Timeout == 10*time.Second},
		{"1024 links are allowed", cfg.Limits.MaxLinks == 1024},
		{"65536 spans per link are allowed", cfg.Limits.MaxSpansPerLink == 65536},
		{"32 spans per node and link are allowed", cfg.Limits.MaxSpansPerNode == 32},
		{"131072 spans are allowed", cfg.Limits.MaxSpans == 131072},
		{"65536 nodes are allowed", cfg.Limits.MaxNodes == 65536},
		{"262144 relays are allowed", cfg.Limits.MaxRelays == 262144},
		{"a link may be refused 65536 spans a minute", cfg.Limits.MaxSpanRefusals == 65536},
		{"65536 circuits are allowed", cfg.Limits.MaxCircuits == 65536},
		{"16384 circuits per link are allowed", cfg.Limits.MaxCircuitsPerLink == 16384},
		{"a link queues 16MiB", cfg.Limits.QueueBytesPerLink == 16<<20},
		{"a circuit queues 4MiB", cfg.Limits.CircuitQueueBytes == 4<<20},
		{"a circuit stalls for 30s", cfg.Limits.CircuitStall == 30*time.Second},
		{"a slow consumer has 5s of grace", cfg.Limits.SlowConsumerGrace == 5*time.Second},
		{"a peer holds 65536 transactions per link", cfg.Limits.MaxTransactionsPerLink == 65536},
		{"peers hold 262144 transactions in all", cfg.Limits.MaxTransactions == 262144},
		{"a link's peer gets 20000 units of work a second", cfg.Limits.LinkRate == 20000},
		{"a source opens 32 links", cfg.Limits.MaxLinksPerSource == 32},
		{"64 links may be waiting for their LNK_CONN", cfg.Limits.MaxPendingLinks == 64},
		{"the shell socket takes 64 links", cfg.Limits.MaxShellLinks == 64},
		{"a source opens 10 links a second", cfg.Limits.AcceptRatePerSource == 10},
		{"a TLS handshake takes 5s at most", cfg.Limits.HandshakeTimeout == 5*time.Second},
		{"a LNK_CONN is due within 5s", cfg.Limits.ConnTimeout == 5*time.Second},
		{"peers run 64 background shell commands", cfg.Limits.MaxShellTasks == 64},
		{"@node collects 16MiB of a far router's output", cfg.Limits.RemoteOutputBytes == 16<<20},
		{"the log level is info", cfg.Log.Level == LogInfo},
		{"the log format is json", cfg.Log.Format == LogJSON},
		{"nothing counts as explicitly set", !cfg.IsSet("log.format")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("by default %s: not so", c.name)
		}
	}
}

func TestLoadReadsEveryKeyOfAFile(t *testing.T) {
	path := writeConfig(t, `
listen:
  - tls://0.0.0.0:987
  - tcp://127.0.0.1:9870
  - unix://./run/dmsgd.sock
shell:
  socket: ./run/shell.sock
  tcp: off
  remote: false
  tcp_privileged: loopback
  remote_privileged: pinned
node:
  advertise: false
  label: node-a
  id: 6ba7b812-9dad-11d1-80b4-00c04fd430c8
  id_from_key: false
  cluster_label: lab
  cluster_id: ""
  peer_type: 3
span:
  max_relays: 4
  symmetric: true
keepalive:
  interval: 2s
  timeout: 0
media:
  - name: lab
    copies:
      - copyid: 1
        path: span+tls:10.0.0.2
      - copyid: 2
        path: span:[::1]:9871
        conn_form: libdmsg
volconf:
  from: pinned
tls:
  cert: node.crt
  key: node.key
  peers:
    - name: node-b
      pubkey: "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
      nodes: [node-b, b-backup, 0f3b1c2a-7d4e-4f60-9a8b-1c2d3e4f5a6b]
  insecure_plain_tcp: false
limits:
  max_links: 10
  max_spans_per_link: 20
  max_spans_per_node: 3
  max_spans: 40
  max_nodes: 50
  max_relays: 60
  max_span_refusals: 70
  max_circuits: 30
  max_circuits_per_link: 5
  queue_bytes_per_link: 1MiB
  circuit_queue_bytes: 65536
  circuit_stall: 1m
  slow_consumer_grace: 2s
  max_transactions_per_link: 40
  max_transactions: 50
  link_rate: 60
  max_links_per_source: 3
  max_pending_links: 4
  max_shell_links: 5
  accept_rate_per_source: 6
  handshake_timeout: 7s
  conn_timeout: 8s
  max_shell_tasks: 9
  remote_output_bytes: 2MiB
  circuit_window: 3MiB
  circuit_memory: 64MiB
  max_volconf_targets: 10
  memory_limit: 512MiB
log:
  level: debug
  format: console
metrics:
  listen: 127.0.0.1:9881
  ready_targets: 2
`)
	cfg := mustLoad(t, path)
	pub := make([]byte, 32)
	for i := range pub {
		pub[i] = byte(i)
	}
	want := &Config{
		Listen: []string{"tls://0.0.0.0:987", "tcp://127.0.0.1:9870", "unix://./run/dmsgd.sock"},
		Shell: Shell{Socket: "./run/shell.sock", TCP: ShellTCPOff, Remote: false,
			TCPPrivileged: PrivilegedLoopback, RemotePrivileged: PrivilegedPinned},
		Node: Node{
			Advertise:    false,
			Label:        "node-a",
			ID:           uuid.MustParse("6ba7b812-9dad-11d1-80b4-00c04fd430c8"),
			ClusterLabel: "lab",
			ClusterID:    uuid.NewSHA1(uuid.NameSpaceOID, []byte("lab")),
			PeerType:     PeerHammer2,
		},
		Span:      SpanEngine{MaxRelays: 4, Symmetric: true},
		Keepalive: Keepalive{Interval: 2 * time.Second, Timeout: 0},
		Media: []Media{{Name: "lab", Copies: []Copy{
			{CopyID: 1, Path: "span+tls:10.0.0.2", Target: Target{Name: "lab", TLS: true, Host: "10.0.0.2", Port: 987}},
			{CopyID: 2, Path: "span:[::1]:9871", ConnForm: "libdmsg", Target: Target{Name: "lab", Host: "::1", Port: 9871, ConnForm: ConnLibdmsg}},
		}}},
		VolConf: VolConfPolicy{From: PrivilegedPinned},
		TLS: TLS{Cert: "node.crt", Key: "node.key", Peers: []Peer{{
			Name: "node-b", PubKey: "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", Key: pub,
			Nodes: []string{"node-b", "b-backup", "0f3b1c2a-7d4e-4f60-9a8b-1c2d3e4f5a6b"},
			Claims: Claims{Labels: []string{"node-b", "b-backup"},
				IDs: []uuid.UUID{uuid.MustParse("0f3b1c2a-7d4e-4f60-9a8b-1c2d3e4f5a6b")}},
		}}},
		Limits: Limits{
			MaxLinks: 10, MaxSpansPerLink: 20, MaxSpansPerNode: 3, MaxSpans: 40, MaxNodes: 50, MaxRelays: 60,
			MaxSpanRefusals: 70, MaxCircuits: 30, MaxCircuitsPerLink: 5,
			QueueBytesPerLink: 1 << 20, CircuitQueueBytes: 65536, CircuitStall: time.Minute,
			SlowConsumerGrace: 2 * time.Second, MaxTransactionsPerLink: 40, MaxTransactions: 50, LinkRate: 60,
			MaxLinksPerSource: 3, MaxPendingLinks: 4, MaxShellLinks: 5, AcceptRatePerSource: 6,
			HandshakeTimeout: 7 * time.Second, ConnTimeout: 8 * time.Second, MaxShellTasks: 9,
			CircuitWindow: 3 << 20, CircuitMemory: 64 << 20, MaxVolconfTargets: 10, RemoteOutputBytes: 2 << 20,
			MemoryLimit: 512 << 20,
		},
		Log:     Log{Level: LogDebug, Format: LogConsole},
		Metrics: MetricsHTTP{Listen: "127.0.0.1:9881", ReadyTargets: 2},
		File:    path,
		Listeners: []Listener{
			{Network: NetworkTLS, Address: "0.0.0.0:987"},
			{Network: NetworkTCP, Address: "127.0.0.1:9870"},
			{Network: NetworkUnix, Address: "./run/dmsgd.sock"},
		},
	}
	want.explicit = cfg.explicit
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", cfg, want)
	}
	if !cfg.IsSet("log.format") || cfg.IsSet("metrics.nothing") {
		t.Errorf("IsSet does not follow the file")
	}
}

func TestABadFileYieldsEveryProblemAtItsLine(t *testing.T) {
	path := writeConfig(t, `
listen:
  - tcp://0.0.0.0:987
  - tls://127.0.0.1:988
  - http://x
shell:
  sokcet: /tmp/x
  tcp: everyone
node:
  peer_type: 64
  id: not-a-uuid
span:
  max_relays: 0
keepalive:
  interval: 1
  timeout: 500ms
media:
  - name: lab
    copies:
      - copyid: 0
        path: span:[::1
      - copyid: 2
        path: span:10.0.0.2
        conn_form: v3
tls:
  peers:
    - name: b
      pubkey: ed25519:AAAA
limits:
  queue_bytes_per_link: 16XB
  circuit_stall: -1s
  circuit_window: 64KiB
  circuit_memory: 1MiB
log:
  level: verbose
metrics:
  listen: localhost
  ready_targets: 3
extra: 1
`)
	_, err := Load(path)
	want := []string{
		path + `:2: listen[0]: tcp://0.0.0.0:987 is plain TCP on a non-loopback address; use tls:// or set tls.insecure_plain_tcp: true`,
		path + `:3: listen[1]: tls://127.0.0.1:988 needs tls.cert and tls.key`,
		path + `:4: listen[2]: listen address "http://x": unknown scheme "http" (want tcp, tls or unix)`,
		path + `:6: shell.sokcet: unknown key (did you mean "socket"?)`,
		path + `:7: shell.tcp: must be off, loopback or all, not "everyone"`,
		path + `:9: node.peer_type: peer type 64: out of range 0..63`,
		path + `:10: node.id: "not-a-uuid" is not a UUID`,
		path + `:12: span.max_relays: must be at least 1, not 0`,
		path + `:14: keepalive.interval: must be a duration with a unit, such as 1s`,
		path + `:15: keepalive.timeout: 500ms must be longer than keepalive.interval (1s), or 0 to disable it`,
		path + `:19: media[0].copies[0].copyid: must be 1..255, not 0`,
		path + `:20: media[0].copies[0].path: span path "span:[::1": missing ']' after IPv6 address`,
		path + `:22: media[0].copies[1].path: span:10.0.0.2:987 is plain TCP to a non-loopback address; use span+tls: or set tls.insecure_plain_tcp: true`,
		path + `:23: media[0].copies[1].conn_form: must be auto, dmsgd or libdmsg, not "v3"`,
		path + `:27: tls.peers[0].pubkey: public key: 3 bytes, want 32`,
		path + `:29: limits.queue_bytes_per_link: size "16XB": must be a whole number of bytes with an optional unit (KiB, MiB, GiB, KB, MB, GB)`,
		path + `:30: limits.circuit_stall: must be positive, not -1s`,
		path + `:31: limits.circuit_window: must be at least 2052KiB (twice the largest message), not 64KiB`,
		path + `:32: limits.circuit_memory: must hold at least one circuit (8MiB: twice the larger of circuit_window and circuit_queue_bytes), not 1MiB`,
		path + `:34: log.level: must be debug, info, warn or error, not "verbose"`,
		path + `:36: metrics.listen: "localhost" must be HOST:PORT, as in 127.0.0.1:9881`,
		path + `:37: metrics.ready_targets: is 3, but only 2 outbound target(s) are configured under media`,
		path + `:38: extra: unknown key`,
	}
	got := problemLines(t, err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestStructuralProblemsAreReportedWithTheirLines(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // with FILE for the path
	}{
		{
			name:    "a YAML syntax error names its line",
			content: "\nlog:\n  level: info\n   format: json\n",
			want:    []string{"FILE:3: invalid YAML: mapping values are not allowed in this context"},
		},
		{
			name:    "a duplicate key names both lines",
			content: "\nlog:\n  level: info\n  level: debug\n",
			want:    []string{"FILE:3: log.level: duplicate key (first at line 2)"},
		},
		{
			name:    "a section that is not a mapping is refused",
			content: "\nshell: yes\n",
			want:    []string{"FILE:1: shell: must be a mapping"},
		},
		{
			name:    "a top level that is not a mapping is refused",
			content: "\n- listen\n",
			want:    []string{"FILE:1: the configuration must be a mapping of sections (listen:, node:, ...)"},
		},
		{
			name:    "a typo inside a list item is caught",
			content: "\nmedia:\n  - name: lab\n    copies:\n      - copyid: 1\n        pth: span:127.0.0.1\n",
			want: []string{
				`FILE:4: media[0].copies[0].path: span path "": must start with "span:" or "span+tls:"`,
				`FILE:5: media[0].copies[0].pth: unknown key (did you mean "path"?)`,
			},
		},
		{
			name:    "a list given as a mapping is refused",
			content: "\nlisten:\n  tcp: 127.0.0.1:1\n",
			want:    []string{"FILE:1: listen: must be a list"},
		},
		{
			name:    "a string key given a list is refused",
			content: "\nnode:\n  label: [a, b]\n",
			want:    []string{"FILE:2: node.label: must be a single value, not a list"},
		},
		{
			name:    "a missing copy list is reported at its media",
			content: "\nmedia:\n  - name: lab\n",
			want:    []string{"FILE:2: media[0].copies: must list at least one copy"},
		},
		{
			name:    "a cert without a key is reported at the tls section",
			content: "\ntls:\n  cert: node.crt\n",
			want:    []string{"FILE:1: tls.key: must be set when tls.cert is"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			_, err := Load(path)
			got := problemLines(t, err)
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = strings.ReplaceAll(w, "FILE", path)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestAnEmptyFileMeansDefaults(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "---\n"} {
		cfg := mustLoad(t, writeConfig(t, content))
		if cfg.Span.MaxRelays != 2 || cfg.Log.Level != LogInfo {
			t.Errorf("file %q: defaults not applied: %+v", content, cfg)
		}
	}
}

func TestAMissingFileIsAnError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want os.ErrNotExist", err)
	}
}

func TestNodeIDsDeriveFromTheLabels(t *testing.T) {
	cfg := mustLoad(t, writeConfig(t, "node:\n  label: dev-a\n  cluster_label: lab\n"))
	if want := uuid.NewSHA1(uuid.NameSpaceOID, []byte("dev-a")); cfg.Node.ID != want {
		t.Errorf("node.id = %s, want %s", cfg.Node.ID, want)
	}
	if want := uuid.NewSHA1(uuid.NameSpaceOID, []byte("lab")); cfg.Node.ClusterID != want {
		t.Errorf("node.cluster_id = %s, want %s", cfg.Node.ClusterID, want)
	}
}

func TestThePlainTCPAndTLSRules(t *testing.T) {
	tlsKeys := "tls:\n  cert: c\n  key: k\n"
	insecure := "tls:\n  insecure_plain_tcp: true\n"
	media := func(path string) string {
		return "media:\n  - name: m\n    copies:\n      - copyid: 1\n        path: " + path + "\n"
	}
	tests := []struct {
		name    string
		content string
		ok      bool
	}{
		{"plain TCP on loopback is allowed", "listen: [tcp://127.0.0.1:1]\n", true},
		{"plain TCP on IPv6 loopback is allowed", "listen: ['tcp://[::1]:1']\n", true},
		{"plain TCP on localhost is allowed", "listen: [tcp://localhost:1]\n", true},
		{"plain TCP on all addresses is refused", "listen: [tcp://:987]\n", false},
		{"plain TCP on a LAN address is refused", "listen: [tcp://10.0.0.1:987]\n", false},
		{"plain TCP off loopback is allowed when insecure", "listen: [tcp://0.0.0.0:987]\n" + insecure, true},
		{"a TLS listener without keys is refused", "listen: [tls://0.0.0.0:987]\n", false},
		{"a TLS listener with keys is allowed", "listen: [tls://0.0.0.0:987]\n" + tlsKeys, true},
		{"a unix listener needs no TLS", "listen: [unix:///run/x.sock]\n", true},
		{"a plain span target on loopback is allowed", media("span:127.0.0.1"), true},
		{"a plain span target off loopback is refused", media("span:10.0.0.2"), false},
		{"a plain span target off loopback is allowed when insecure", media("span:10.0.0.2") + insecure, true},
		{"a TLS span target without keys is refused", media("span+tls:10.0.0.2"), false},
		{"a TLS span target with keys is allowed", media("span+tls:10.0.0.2") + tlsKeys, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.content))
			if (err == nil) != tt.ok {
				t.Errorf("Load error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTheShippedConfigsAreValid(t *testing.T) {
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
		if _, err := Load(f); err != nil {
			t.Errorf("%s is not valid:\n%v", f, err)
		}
	}
}

// configs/dmsgd.yaml documents every default: its limits are the
// defaults, so the sizing arithmetic in its comments is about what runs.
func TestTheDocumentedConfigStatesTheDefaultLimits(t *testing.T) {
	cfg := mustLoad(t, "../../configs/dmsgd.yaml")
	if want := Defaults().Limits; cfg.Limits != want {
		t.Errorf("configs/dmsgd.yaml limits =\n%+v\nwant the defaults\n%+v", cfg.Limits, want)
	}
}

func TestEveryBudgetMustBeAtLeastOne(t *testing.T) {
	for _, key := range []string{"max_spans_per_node", "max_spans", "max_nodes", "max_relays",
		"max_span_refusals", "max_circuits_per_link"} {
		path := writeConfig(t, "limits:\n  "+key+": 0\n")
		_, err := Load(path)
		want := []string{path + ":2: limits." + key + ": must be at least 1, not 0"}
		if got := problemLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: 0: problems %q, want %q", key, got, want)
		}
	}
}

func TestTargetsAreDeduplicatedInFileOrder(t *testing.T) {
	cfg := mustLoad(t, writeConfig(t, `
media:
  - name: a
    copies:
      - {copyid: 1, path: "span:127.0.0.1:9872"}
      - {copyid: 2, path: "span:127.0.0.1:9871"}
  - name: b
    copies:
      - {copyid: 1, path: "span:127.0.0.1:9872"}
`))
	want := []Target{
		{Name: "a", Host: "127.0.0.1", Port: 9872},
		{Name: "a", Host: "127.0.0.1", Port: 9871},
	}
	if got := cfg.Targets(); !reflect.DeepEqual(got, want) {
		t.Errorf("Targets() = %+v, want %+v", got, want)
	}
}

func TestAnOverrideBeatsTheFileAndNamesItselfInProblems(t *testing.T) {
	path := writeConfig(t, "log:\n  level: debug\n")
	cfg := mustLoad(t, path, WithOverride("log.level", "warn", "--log-level"))
	if cfg.Log.Level != LogWarn {
		t.Errorf("log.level = %q, want warn", cfg.Log.Level)
	}
	_, err := Load(path, WithOverride("log.level", "loud", "--log-level"))
	want := []string{path + `: log.level: must be debug, info, warn or error, not "loud" (set by --log-level)`}
	if got := problemLines(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
	if _, err := Load(path, WithOverride("log.nope", "x", "--nope")); err == nil {
		t.Error("an override of an unknown key was accepted")
	}
}

// TestMain clears DMSGD_* variables so the tests see only the environment
// they set themselves.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix+"_") {
			os.Unsetenv(name)
		}
	}
	os.Exit(m.Run())
}

func TestEveryLinkBudgetMustBeSet(t *testing.T) {
	for _, key := range []string{"max_transactions_per_link", "max_transactions", "link_rate",
		"max_links_per_source", "max_pending_links", "max_shell_links", "accept_rate_per_source", "max_shell_tasks",
		"remote_output_bytes"} {
		path := writeConfig(t, "limits:\n  "+key+": 0\n")
		_, err := Load(path)
		want := []string{path + ":2: limits." + key + ": must be at least 1, not 0"}
		if got := problemLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: 0: problems %q, want %q", key, got, want)
		}
	}
	for _, key := range []string{"slow_consumer_grace", "handshake_timeout", "conn_timeout"} {
		path := writeConfig(t, "limits:\n  "+key+": 0s\n")
		_, err := Load(path)
		want := []string{path + ":2: limits." + key + ": must be positive, not 0s"}
		if got := problemLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: 0s: problems %q, want %q", key, got, want)
		}
	}
}
