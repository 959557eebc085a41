package config

import (
	"crypto/ed25519"
	"os"
	"time"

	"github.com/google/uuid"
)

// DefaultPath is the configuration file `dmsgd` reads when --config is not
// given.
const DefaultPath = "/etc/dmsgd/dmsgd.yaml"

// DefaultShellSocket is the shell socket path when neither a flag, the
// DMSGD_SHELL_SOCKET environment variable nor the config file names one.
const DefaultShellSocket = "/run/dmsgd/shell.sock"

// EnvPrefix starts every environment override: DMSGD_<SECTION>_<KEY>.
const EnvPrefix = "DMSGD"

// Shell TCP policies (shell.tcp).
const (
	ShellTCPOff      = "off"
	ShellTCPLoopback = "loopback"
	ShellTCPAll      = "all"
)

// Privileged shell policies (shell.tcp_privileged, shell.remote_privileged):
// which links may run privileged shell commands (docs/INTERFACE.md).
const (
	PrivilegedOff      = "off"      // none
	PrivilegedLoopback = "loopback" // unix sockets and TCP from a loopback address
	PrivilegedPinned   = "pinned"   // TLS links whose peer presented a key in tls.peers
	PrivilegedAll      = "all"      // every link
)

// Log levels (log.level) and formats (log.format).
const (
	LogDebug = "debug"
	LogInfo  = "info"
	LogWarn  = "warn"
	LogError = "error"

	LogJSON    = "json"
	LogConsole = "console"
)

// DefaultMemoryLimit is limits.memory_limit's default: with the other
// limits' defaults, what a router holds stays below it, so the process
// stays under about 1 GiB whatever its peers do.
const DefaultMemoryLimit = 768 << 20

// MinMemoryLimit is the smallest limits.memory_limit other than 0: below
// it the collector would run all the time.
const MinMemoryLimit = 64 << 20

// MaxLabelLen is the longest node or cluster label: the wire field is 128
// bytes and always NUL terminated.
const MaxLabelLen = 127

// Config is the whole dmsgd configuration. The mapstructure tags name the
// YAML keys; fields tagged "-" are derived by Load and never read from the
// file.
type Config struct {
	// Listen lists where peers connect: tcp://HOST:PORT, tls://HOST:PORT,
	// unix://PATH.
	Listen    []string   `mapstructure:"listen"`
	Shell     Shell      `mapstructure:"shell"`
	Node      Node       `mapstructure:"node"`
	Span      SpanEngine `mapstructure:"span"`
	Keepalive Keepalive  `mapstructure:"keepalive"`
	// Media are static volume copies; their span paths are outbound links.
	Media []Media `mapstructure:"media"`
	// VolConf says whose LNK_VOLCONF messages make outbound links.
	VolConf VolConfPolicy `mapstructure:"volconf"`
	TLS     TLS           `mapstructure:"tls"`
	Limits  Limits        `mapstructure:"limits"`
	Log     Log           `mapstructure:"log"`
	Metrics MetricsHTTP   `mapstructure:"metrics"`

	// File is the file the configuration was loaded from, "" if none.
	File string `mapstructure:"-"`
	// Listeners are the parsed Listen entries, in order.
	Listeners []Listener `mapstructure:"-"`

	// explicit holds the keys set by the file, the environment or an
	// override rather than by a default.
	explicit map[string]bool
	// warnings are what Load found risky but valid.
	warnings []Problem
}

// Shell configures the debug shell.
type Shell struct {
	// Socket is the unix socket `dmsgd tree` and `dmsgd shell` connect
	// to; empty disables it.
	Socket string `mapstructure:"socket"`
	// TCP says which TCP peers may run shell commands: ShellTCPOff,
	// ShellTCPLoopback or ShellTCPAll.
	TCP string `mapstructure:"tcp"`
	// Remote allows read-only shell commands arriving over circuits (the
	// far half of `@node`).
	Remote bool `mapstructure:"remote"`
	// TCPPrivileged says which TCP peers, among those TCP admits, may also
	// run privileged commands: a Privileged* policy.
	TCPPrivileged string `mapstructure:"tcp_privileged"`
	// RemotePrivileged says over which links a circuit must have arrived
	// for privileged commands inside it to run (Remote must allow it too):
	// a Privileged* policy.
	RemotePrivileged string `mapstructure:"remote_privileged"`
}

// Node is this router's own advertisement.
type Node struct {
	// Advertise sends a dist-0 LNK_SPAN for this router on every link.
	Advertise bool `mapstructure:"advertise"`
	// Label is fs_label; the host name by default.
	Label string `mapstructure:"label"`
	// ID is pfs_fsid; uuid.NewSHA1(uuid.NameSpaceOID, Label) by default,
	// or KeyNodeID of the TLS key with IDFromKey.
	ID uuid.UUID `mapstructure:"id"`
	// IDFromKey derives ID from the public key of tls.key (KeyNodeID).
	IDFromKey bool `mapstructure:"id_from_key"`
	// ClusterLabel is cl_label.
	ClusterLabel string `mapstructure:"cluster_label"`
	// ClusterID is pfs_clid; uuid.NewSHA1(uuid.NameSpaceOID, ClusterLabel)
	// by default.
	ClusterID uuid.UUID `mapstructure:"cluster_id"`
	// PeerType is the peer type of the self advertisement.
	PeerType PeerType `mapstructure:"peer_type"`
}

// SpanEngine configures the span engine.
type SpanEngine struct {
	// MaxRelays is how many relays a router keeps per node (>= 1).
	MaxRelays int  `mapstructure:"max_relays"`
	Symmetric bool `mapstructure:"symmetric"`
}

// Keepalive configures link liveness.
type Keepalive struct {
	// Interval between keepalives on an idle link.
	Interval time.Duration `mapstructure:"interval"`
	// Timeout after which a silent link is closed; 0 disables it.
	Timeout time.Duration `mapstructure:"timeout"`
}

// Media is one static volume: a name and its copies.
type Media struct {
	Name   string `mapstructure:"name"`
	Copies []Copy `mapstructure:"copies"`
}

// Copy is one copy of a Media.
type Copy struct {
	// CopyID is 1..255.
	CopyID int `mapstructure:"copyid"`
	// Path is a span path, span:HOST[:PORT] or span+tls:HOST[:PORT].
	Path string `mapstructure:"path"`
	// ConnForm is "auto" (or empty), "dmsgd" or "libdmsg": see ConnForm.
	ConnForm string `mapstructure:"conn_form"`
	// Target is Path parsed, with Name set to the media name and the
	// LNK_CONN form.
	Target Target `mapstructure:"-"`
}

// VolConfPolicy configures the outbound links peers ask for with LNK_VOLCONF
// (docs/PROTOCOL.md section 6): a LNK_VOLCONF makes the router connect where
// it says, so it is obeyed only from the links From admits.
type VolConfPolicy struct {
	// From says which links' LNK_VOLCONF messages are obeyed: a
	// Privileged* policy, as for privileged shell commands. The default,
	// PrivilegedLoopback, admits unix sockets and loopback peers, where a
	// HAMMER2 mount's LNK_VOLCONF comes from.
	From string `mapstructure:"from"`
}

// ConnForm is the LNK_CONN form a router sends on an outbound link
// (docs/PROTOCOL.md section 10).
type ConnForm string

const (
	// ConnAuto sends the dmsgd form (0x1108) and falls back to the
	// libdmsg 2014+ form (0x1106) when the peer shows it needs that.
	ConnAuto ConnForm = ""
	// ConnDmsgd sends only the dmsgd form: a refusal is final.
	ConnDmsgd ConnForm = "dmsgd"
	// ConnLibdmsg sends the libdmsg form from the start.
	ConnLibdmsg ConnForm = "libdmsg"
)

// TLS configures TLS 1.3 with pinned peer keys.
type TLS struct {
	Cert  string `mapstructure:"cert"`
	Key   string `mapstructure:"key"`
	Peers []Peer `mapstructure:"peers"`
	// InsecurePlainTCP allows tcp:// listeners and span: targets on
	// non-loopback addresses.
	InsecurePlainTCP bool `mapstructure:"insecure_plain_tcp"`
	// Identity is this node's key pair, read from Cert and Key when Load
	// was asked to read the TLS files (WithTLSFiles); nil otherwise.
	Identity *Identity `mapstructure:"-"`
}

// Peer is a pinned peer public key and the nodes it may speak for.
type Peer struct {
	Name string `mapstructure:"name"`
	// PubKey is "ed25519:<base64 of 32 bytes>".
	PubKey string `mapstructure:"pubkey"`
	// Nodes lists the node labels and node ids (UUIDs) this key may
	// advertise as their origin, or "*" for any node (see Claims).
	Nodes []string `mapstructure:"nodes"`
	// Key is PubKey parsed.
	Key ed25519.PublicKey `mapstructure:"-"`
	// Claims is Nodes parsed, with its defaults applied.
	Claims Claims `mapstructure:"-"`
}

// Limits bound the resources peers can make the router commit.
type Limits struct {
	MaxLinks        int `mapstructure:"max_links"`
	MaxSpansPerLink int `mapstructure:"max_spans_per_link"`
	// MaxSpansPerNode bounds the spans one link may hold for one node.
	MaxSpansPerNode int `mapstructure:"max_spans_per_node"`
	// MaxSpans, MaxNodes and MaxRelays bound the spans received, the
	// nodes held and the relays open over all links; each link may hold
	// no more of them than is still free.
	MaxSpans  int `mapstructure:"max_spans"`
	MaxNodes  int `mapstructure:"max_nodes"`
	MaxRelays int `mapstructure:"max_relays"`
	// MaxSpanRefusals is how many LNK_SPANs a link may have refused per
	// minute before it is closed.
	MaxSpanRefusals int `mapstructure:"max_span_refusals"`
	// MaxCircuits counts every circuit, those ending at this router
	// included; MaxCircuitsPerLink those one link opened.
	MaxCircuits        int      `mapstructure:"max_circuits"`
	MaxCircuitsPerLink int      `mapstructure:"max_circuits_per_link"`
	QueueBytesPerLink  ByteSize `mapstructure:"queue_bytes_per_link"`
	// CircuitQueueBytes is per circuit, per router: what the router holds
	// of a circuit toward, or from, a link without per-circuit flow
	// control (docs/PROTOCOL.md 11.2).
	CircuitQueueBytes ByteSize `mapstructure:"circuit_queue_bytes"`
	// CircuitStall is how long a circuit may wait with a zero window (or
	// stay full toward a link without flow control) before it is aborted.
	CircuitStall time.Duration `mapstructure:"circuit_stall"`
	// CircuitWindow is the window the router grants per circuit and
	// direction on links with per-circuit flow control: the circ_window
	// of its LNK_CONN (docs/PROTOCOL.md 11.2).
	CircuitWindow ByteSize `mapstructure:"circuit_window"`
	// CircuitMemory bounds what all relayed circuits together may make
	// the router hold; a circuit that does not fit is refused.
	CircuitMemory ByteSize `mapstructure:"circuit_memory"`

	// SlowConsumerGrace is how long a link's queue may stay over
	// QueueBytesPerLink without draining before the link is closed.
	SlowConsumerGrace time.Duration `mapstructure:"slow_consumer_grace"`
	// MaxTransactionsPerLink bounds the transactions a peer holds open on
	// one link, MaxTransactions those of all peers together: refused ones
	// until the peer closes them, and accepted ones no other budget holds
	// (accepted spans and circuits have budgets of their own).
	MaxTransactionsPerLink int `mapstructure:"max_transactions_per_link"`
	MaxTransactions        int `mapstructure:"max_transactions"`
	// LinkRate is the work per second one link's peer may make the router
	// do (messages handled, spans fanned out), in bursts of twice that.
	LinkRate int `mapstructure:"link_rate"`

	// Link admission. MaxLinks counts the links accepted on listeners and
	// opened for VOLCONF; the shell socket has MaxShellLinks of its own
	// and configured targets always get in.
	MaxLinksPerSource int `mapstructure:"max_links_per_source"`
	MaxPendingLinks   int `mapstructure:"max_pending_links"`
	MaxShellLinks     int `mapstructure:"max_shell_links"`
	// AcceptRatePerSource is how many new links per second one source may
	// open, in bursts of MaxLinksPerSource; the rest wait.
	AcceptRatePerSource int `mapstructure:"accept_rate_per_source"`
	// HandshakeTimeout bounds a TLS handshake, ConnTimeout the time from
	// the transport being up to the peer's LNK_CONN.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	ConnTimeout      time.Duration `mapstructure:"conn_timeout"`

	// MaxShellTasks bounds the shell commands that run in the background
	// at once (`@node`, `span`) for every shell peer but the shell socket:
	// each holds a goroutine, a circuit or a dial for up to 10 s.
	MaxShellTasks int `mapstructure:"max_shell_tasks"`

	// MaxVolconfTargets bounds the LNK_VOLCONF slots all links together
	// hold, each an outbound target kept with a goroutine that redials
	// it; a link may hold no more of them than are still free.
	MaxVolconfTargets int `mapstructure:"max_volconf_targets"`

	// RemoteOutputBytes bounds the output `@node cmd` collects from the
	// far router; a call over it is aborted and says so.
	RemoteOutputBytes ByteSize `mapstructure:"remote_output_bytes"`

	// MemoryLimit is the Go runtime's soft memory limit for the daemon
	// (runtime/debug.SetMemoryLimit): the collector works harder as the
	// process nears it, so memory stays near what is live rather than
	// twice it. 0 leaves the runtime's own (GOMEMLIMIT, or none).
	MemoryLimit ByteSize `mapstructure:"memory_limit"`
}

// Log configures logging.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// MetricsHTTP configures the metrics HTTP endpoint.
type MetricsHTTP struct {
	// Listen is host:port serving /metrics, /healthz and /readyz; empty
	// is off.
	Listen string `mapstructure:"listen"`
	// ReadyTargets is how many of the configured outbound targets (media
	// copies) must have a link up for /readyz to answer ready.
	ReadyTargets int `mapstructure:"ready_targets"`
}

// Defaults returns the configuration used for every key not set
// elsewhere. Node.ID and Node.ClusterID are zero here: Load derives them
// from the final labels.
func Defaults() *Config {
	return &Config{
		Shell: Shell{
			Socket:           DefaultShellSocket,
			TCP:              ShellTCPLoopback,
			Remote:           true,
			TCPPrivileged:    PrivilegedOff,
			RemotePrivileged: PrivilegedOff,
		},
		Node: Node{
			Advertise:    true,
			Label:        defaultLabel(),
			ClusterLabel: "default",
			PeerType:     PeerRouter,
		},
		Span:      SpanEngine{MaxRelays: 2},
		VolConf:   VolConfPolicy{From: PrivilegedLoopback},
		Keepalive: Keepalive{Interval: time.Second, Timeout: 10 * time.Second},
		Limits: Limits{
			MaxLinks:           1024,
			MaxSpansPerLink:    65536,
			MaxSpansPerNode:    32,
			MaxSpans:           131072,
			MaxNodes:           65536,
			MaxRelays:          262144,
			MaxSpanRefusals:    65536,
			MaxCircuits:        65536,
			MaxCircuitsPerLink: 16384,
			QueueBytesPerLink:  16 << 20,
			CircuitQueueBytes:  4 << 20,
			CircuitStall:       30 * time.Second,
			CircuitWindow:      DefaultCircuitWindow,
			CircuitMemory:      1 << 30,

			SlowConsumerGrace:      5 * time.Second,
			MaxTransactionsPerLink: 65536,
			MaxTransactions:        262144,
			LinkRate:               20000,

			MaxLinksPerSource:   32,
			MaxPendingLinks:     64,
			MaxShellLinks:       64,
			AcceptRatePerSource: 10,
			HandshakeTimeout:    5 * time.Second,
			ConnTimeout:         5 * time.Second,

			MaxShellTasks:     64,
			MaxVolconfTargets: 256,
			RemoteOutputBytes: 16 << 20,
			MemoryLimit:       DefaultMemoryLimit,
		},
		Log: Log{Level: LogInfo, Format: LogJSON},
	}
}

// defaultLabel is the host name, truncated to a valid label.
func defaultLabel() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "dmsgd"
	}
	if len(h) > MaxLabelLen {
		h = h[:MaxLabelLen]
	}
	return h
}

// DefaultCircuitWindow is limits.circuit_window's default: enough for one
// circuit to move data at full speed over a loopback hop.
const DefaultCircuitWindow = 4 << 20

// MinCircuitWindow is the smallest limits.circuit_window: half a window
// must hold the largest DMSG message (a 2 KiB header and 1 MiB of aux
// data), since credit comes back half a window at a time.
const MinCircuitWindow = 2 * (2<<10 + 1<<20)

// MaxCircuitWindow is the largest limits.circuit_window, the range of the
// LNK_CONN field that carries it.
const MaxCircuitWindow = 1<<32 - 1

// NodeIDFor returns the default node id for a label.
func NodeIDFor(label string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(label))
}

// Warnings returns what Load found valid but risky, in file order: each
// Problem has Warning set.
func (c *Config) Warnings() []Problem { return c.warnings }

// IsSet reports whether key (such as "log.format") was set by the config
// file, the environment or an override rather than left at its default.
func (c *Config) IsSet(key string) bool { return c.explicit[key] }

// Targets returns the distinct outbound targets of all media copies, in
// file order; each carries the name of the first media that named it.
func (c *Config) Targets() []Target {
	var out []Target
	seen := make(map[Target]bool)
	for _, m := range c.Media {
		for _, cp := range m.Copies {
			key := cp.Target
			key.Name = ""
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, cp.Target)
		}
	}
	return out
}
