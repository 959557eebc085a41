package config

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// validate checks the rules that span keys and fills the derived fields
// (Listeners, Copy.Target, Peer.Key). Every problem is reported.
func validate(c *Config, ps *problems) {
	validateListen(c, ps)
	validateShell(c, ps)
	validateNode(c, ps)
	if c.Span.MaxRelays < 1 {
		ps.add("span.max_relays", "must be at least 1, not %d", c.Span.MaxRelays)
	}
	validateKeepalive(c, ps)
	validateMedia(c, ps)
	validateTLS(c, ps)
	validateLimits(c, ps)
	validateLog(c, ps)
	validateMetrics(c, ps)
}

func validateMetrics(c *Config, ps *problems) {
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			ps.add("metrics.listen", "%q must be HOST:PORT, as in 127.0.0.1:9881", c.Metrics.Listen)
		} else if _, err := parsePort(port); err != nil {
			ps.add("metrics.listen", "%v", err)
		}
	}
	switch n, have := c.Metrics.ReadyTargets, len(c.Targets()); {
	case n < 0:
		ps.add("metrics.ready_targets", "must not be negative, not %d", n)
	case n > have:
		ps.add("metrics.ready_targets", "is %d, but only %d outbound target(s) are configured under media", n, have)
	}
}

func hasTLSKeys(c *Config) bool { return c.TLS.Cert != "" && c.TLS.Key != "" }

func validateListen(c *Config, ps *problems) {
	c.Listeners = nil
	first := make(map[Listener]int)
	for i, s := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		l, err := ParseListen(s)
		if err != nil {
			ps.add(key, "%v", err)
			continue
		}
		if j, dup := first[l]; dup {
			ps.add(key, "%s is already listed as listen[%d]", s, j)
			continue
		}
		first[l] = i
		switch l.Network {
		case NetworkTCP:
			if !l.IsLoopback() && !c.TLS.InsecurePlainTCP {
				ps.add(key, "%s is plain TCP on a non-loopback address; use tls:// or set tls.insecure_plain_tcp: true", s)
			}
		case NetworkTLS:
			if !hasTLSKeys(c) {
				ps.add(key, "%s needs tls.cert and tls.key", s)
			}
		}
		c.Listeners = append(c.Listeners, l)
	}
}

func validateShell(c *Config, ps *problems) {
	switch c.Shell.TCP {
	case ShellTCPOff, ShellTCPLoopback, ShellTCPAll:
	default:
		ps.add("shell.tcp", "must be off, loopback or all, not %q", c.Shell.TCP)
	}
	if strings.ContainsRune(c.Shell.Socket, 0) {
		ps.add("shell.socket", "contains a NUL byte")
	}
	for _, f := range []struct{ key, v string }{
		{"shell.tcp_privileged", c.Shell.TCPPrivileged},
		{"shell.remote_privileged", c.Shell.RemotePrivileged},
		{"volconf.from", c.VolConf.From},
	} {
		switch f.v {
		case PrivilegedOff, PrivilegedLoopback, PrivilegedPinned, PrivilegedAll:
		default:
			ps.add(f.key, "must be off, loopback, pinned or all, not %q", f.v)
		}
	}
}

func validateLabel(ps *problems, key, label string, required bool) {
	switch {
	case label == "" && required:
		ps.add(key, "must not be empty")
	case len(label) > MaxLabelLen:
		ps.add(key, "is %d bytes long; at most %d fit the wire format", len(label), MaxLabelLen)
	case strings.ContainsRune(label, 0):
		ps.add(key, "contains a NUL byte")
	}
}

func validateNode(c *Config, ps *problems) {
	validateLabel(ps, "node.label", c.Node.Label, true)
	validateLabel(ps, "node.cluster_label", c.Node.ClusterLabel, false)
	if c.Node.IDFromKey {
		if c.IsSet("node.id") {
			ps.add("node.id_from_key", "node.id is set too; the node id comes from one or the other")
		}
		if !hasTLSKeys(c) {
			ps.add("node.id_from_key", "needs tls.cert and tls.key: the id is derived from that key")
		}
	}
}

func validateKeepalive(c *Config, ps *problems) {
	k := c.Keepalive
	if k.Interval <= 0 {
		ps.add("keepalive.interval", "must be positive, not %s", k.Interval)
	}
	switch {
	case k.Timeout < 0:
		ps.add("keepalive.timeout", "must not be negative (0 disables it)")
	case k.Timeout > 0 && k.Interval > 0 && k.Timeout <= k.Interval:
		ps.add("keepalive.timeout", "%s must be longer than keepalive.interval (%s), or 0 to disable it", k.Timeout, k.Interval)
	}
}

// checkTarget applies the plain-TCP and TLS rules to a span target.
func checkTarget(c *Config, ps *problems, key string, t Target) {
	switch {
	case t.TLS && !hasTLSKeys(c):
		ps.add(key, "%s needs tls.cert and tls.key", t)
	case !t.TLS && !t.IsLoopback() && !c.TLS.InsecurePlainTCP:
		ps.add(key, "%s is plain TCP to a non-loopback address; use span+tls: or set tls.insecure_plain_tcp: true", t)
	}
}

func validateMedia(c *Config, ps *problems) {
	names := make(map[string]int)
	for i := range c.Media {
		m := &c.Media[i]
		key := fmt.Sprintf("media[%d]", i)
		switch j, dup := names[m.Name]; {
		case m.Name == "":
			ps.add(key+".name", "must not be empty")
		case dup:
			ps.add(key+".name", "%q is already the name of media[%d]", m.Name, j)
		default:
			names[m.Name] = i
		}
		if len(m.Copies) == 0 {
			ps.add(key+".copies", "must list at least one copy")
		}
		ids := make(map[int]int)
		for k := range m.Copies {
			cp := &m.Copies[k]
			ckey := fmt.Sprintf("%s.copies[%d]", key, k)
			if cp.CopyID < 1 || cp.CopyID > 255 {
				ps.add(ckey+".copyid", "must be 1..255, not %d", cp.CopyID)
			} else if j, dup := ids[cp.CopyID]; dup {
				ps.add(ckey+".copyid", "%d is already used by copies[%d]", cp.CopyID, j)
			} else {
				ids[cp.CopyID] = k
			}
			t, err := ParseSpanPath(cp.Path)
			if err != nil {
				ps.add(ckey+".path", "%v", err)
				continue
			}
			t.Name = m.Name
			switch cp.ConnForm {
			case "", "auto":
				t.ConnForm = ConnAuto
			case string(ConnDmsgd), string(ConnLibdmsg):
				t.ConnForm = ConnForm(cp.ConnForm)
			default:
				ps.add(ckey+".conn_form", "must be auto, dmsgd or libdmsg, not %q", cp.ConnForm)
			}
			cp.Target = t
			checkTarget(c, ps, ckey+".path", t)
		}
	}
}

func validateTLS(c *Config, ps *problems) {
	if c.TLS.Cert != "" && c.TLS.Key == "" {
		ps.add("tls.key", "must be set when tls.cert is")
	}
	if c.TLS.Key != "" && c.TLS.Cert == "" {
		ps.add("tls.cert", "must be set when tls.key is")
	}
	names := make(map[string]int)
	keys := make(map[string]int)
	for i := range c.TLS.Peers {
		p := &c.TLS.Peers[i]
		key := fmt.Sprintf("tls.peers[%d]", i)
		switch j, dup := names[p.Name]; {
		case p.Name == "":
			ps.add(key+".name", "must not be empty")
		case dup:
			ps.add(key+".name", "%q is already the name of tls.peers[%d]", p.Name, j)
		default:
			names[p.Name] = i
		}
		k, err := ParsePubKey(p.PubKey)
		switch j, dup := keys[string(k)]; {
		case err != nil:
			ps.add(key+".pubkey", "%v", err)
		case dup:
			ps.add(key+".pubkey", "is already the key of tls.peers[%d]", j)
		default:
			keys[string(k)] = i
			p.Key = k
		}
		p.Claims = parseClaims(p, key, ps)
	}
}

func validateLimits(c *Config, ps *problems) {
	l := c.Limits
	for _, f := range []struct {
		key string
		n   int64
	}{
		{"limits.max_links", int64(l.MaxLinks)},
		{"limits.max_spans_per_link", int64(l.MaxSpansPerLink)},
		{"limits.max_spans_per_node", int64(l.MaxSpansPerNode)},
		{"limits.max_spans", int64(l.MaxSpans)},
		{"limits.max_nodes", int64(l.MaxNodes)},
		{"limits.max_relays", int64(l.MaxRelays)},
		{"limits.max_span_refusals", int64(l.MaxSpanRefusals)},
		{"limits.max_circuits", int64(l.MaxCircuits)},
		{"limits.max_circuits_per_link", int64(l.MaxCircuitsPerLink)},
		{"limits.queue_bytes_per_link", int64(l.QueueBytesPerLink)},
		{"limits.circuit_queue_bytes", int64(l.CircuitQueueBytes)},
		{"limits.max_transactions_per_link", int64(l.MaxTransactionsPerLink)},
		{"limits.max_transactions", int64(l.MaxTransactions)},
		{"limits.link_rate", int64(l.LinkRate)},
		{"limits.max_links_per_source", int64(l.MaxLinksPerSource)},
		{"limits.max_pending_links", int64(l.MaxPendingLinks)},
		{"limits.max_shell_links", int64(l.MaxShellLinks)},
		{"limits.accept_rate_per_source", int64(l.AcceptRatePerSource)},
		{"limits.max_shell_tasks", int64(l.MaxShellTasks)},
		{"limits.max_volconf_targets", int64(l.MaxVolconfTargets)},
		{"limits.remote_output_bytes", int64(l.RemoteOutputBytes)},
	} {
		if f.n < 1 {
			ps.add(f.key, "must be at least 1, not %d", f.n)
		}
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"limits.circuit_stall", l.CircuitStall},
		{"limits.slow_consumer_grace", l.SlowConsumerGrace},
		{"limits.handshake_timeout", l.HandshakeTimeout},
		{"limits.conn_timeout", l.ConnTimeout},
	} {
		if f.d <= 0 {
			ps.add(f.key, "must be positive, not %s", f.d)
		}
	}
	if m := l.MemoryLimit; m != 0 && m < MinMemoryLimit {
		ps.add("limits.memory_limit", "must be 0 (the runtime's own) or at least %s, not %s", ByteSize(MinMemoryLimit), m)
	}
	switch w := l.CircuitWindow; {
	case w < MinCircuitWindow:
		ps.add("limits.circuit_window", "must be at least %s (twice the largest message), not %s", ByteSize(MinCircuitWindow), w)
	case w > MaxCircuitWindow:
		ps.add("limits.circuit_window", "must be at most %s, not %s", ByteSize(MaxCircuitWindow), w)
	}
	// One circuit reserves what it may hold in both directions.
	if one := 2 * max(l.CircuitWindow, l.CircuitQueueBytes); l.CircuitMemory < one {
		ps.add("limits.circuit_memory", "must hold at least one circuit (%s: twice the larger of circuit_window and circuit_queue_bytes), not %s", one, l.CircuitMemory)
	}
}

func validateLog(c *Config, ps *problems) {
	switch c.Log.Level {
	case LogDebug, LogInfo, LogWarn, LogError:
	default:
		ps.add("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	switch c.Log.Format {
	case LogJSON, LogConsole:
	default:
		ps.add("log.format", "must be json or console, not %q", c.Log.Format)
	}
}
