package config

import "fmt"

// warn reports what is valid but risky: plain TCP off loopback (allowed by
// tls.insecure_plain_tcp), where no peer's identity can be checked, and
// grants that hand privileged shell commands or any node's identity to
// whoever asks.
func warn(c *Config, ws *problems) {
	for i, l := range c.Listeners {
		if l.Network == NetworkTCP && !l.IsLoopback() {
			ws.add(fmt.Sprintf("listen[%d]", i), "%s is plain TCP on a non-loopback address: its peers are not "+
				"authenticated, any of them can claim any node's identity, and none gets signed advertisements; use tls:// where you can", l)
		}
	}
	for i, m := range c.Media {
		for k, cp := range m.Copies {
			if t := cp.Target; t.Host != "" && !t.TLS && !t.IsLoopback() {
				ws.add(fmt.Sprintf("media[%d].copies[%d].path", i, k), "%s is plain TCP to a non-loopback address: "+
					"the peer is not authenticated; use span+tls: where you can", t)
			}
		}
	}
	if c.Shell.TCPPrivileged == PrivilegedAll && c.Shell.TCP == ShellTCPAll {
		ws.add("shell.tcp_privileged", "every TCP peer may run privileged shell commands, such as span, which makes this router dial any address")
	}
	if c.Shell.RemotePrivileged == PrivilegedAll && c.Shell.Remote {
		ws.add("shell.remote_privileged", "a circuit over any link may run privileged shell commands, such as span, "+
			"which makes this router dial any address")
	}
	if c.VolConf.From == PrivilegedAll {
		ws.add("volconf.from", "every peer's LNK_VOLCONF is obeyed: any peer can make this router connect to any address")
	}
	for i, p := range c.TLS.Peers {
		if p.Claims.Any {
			ws.add(fmt.Sprintf("tls.peers[%d].nodes", i), "%q lets %s speak for every node of the cluster", AnyNode, p.Name)
		}
	}
}
