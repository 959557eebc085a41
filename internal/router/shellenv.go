package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
)

// shellCommand runs one DBG_SHELL command line from the peer, as far as
// the shell authorization rule lets the link run it (auth.go).
func (l *link) shellCommand(m *dmsg.Msg) {
	l.mu.Lock()
	if l.session == nil {
		spawn := l.r.spawn
		if l.opts.shellSocket {
			spawn = l.r.spawnForOperator
		}
		l.session = shell.NewSession(l.r, l.shellOut, l.ping, spawn)
		l.session.SetAuthorizer(l.authorizer(l.trust.origin.Carrier))
	}
	s := l.session
	l.mu.Unlock()
	l.conn.Spend(shellCommandCost)
	line := strings.TrimRight(string(m.Aux), "\x00")
	if line != "" {
		// Peer text the peer can repeat at will: debug, and short. A
		// refused command, and a privileged one served, are logged by the
		// authorizer (auth.go), rate-limited.
		l.conn.Logger().Debug("shell command", zap.String("command", truncate(line, maxLoggedCommand)))
		via := "link"
		if l.opts.shellSocket {
			via = "socket"
		}
		l.r.metrics.ShellCommand(via)
	}
	s.Exec(line)
}

// shellCommandCost is what a shell command costs its link's peer under
// limits.link_rate beyond its output: most commands snapshot the router's
// whole state under its locks.
const shellCommandCost = 16

// shellOut sends one piece of shell output as a DBG_SHELL|REPLY. It
// waits while the replies queued on the link exceed its budget, so that a
// peer asking for large output (`tree --format json`) and not reading it
// holds at most about the budget queued, not one copy per command.
func (l *link) shellOut(text string) {
	if l.conn.WaitReplyRoom() != nil {
		return
	}
	l.conn.Spend(len(text) / 64) // limits.link_rate: output costs what messages of its size do
	m := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagReply)
	m.SetAux(append([]byte(text), 0))
	l.conn.SendOneWay(m)
}

func (l *link) ping() error {
	return l.conn.SendOneWay(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
}

// spawn runs a peer's background shell command (`@node`, `span`), unless
// limits.max_shell_tasks of them run already: each holds a goroutine and
// a circuit or a dial for up to 10 s. Shutdown waits for it.
func (r *Router) spawn(f func()) error {
	max := int64(r.Config().Limits.MaxShellTasks)
	if r.shellTasks.Add(1) > max {
		r.shellTasks.Add(-1)
		r.metrics.LimitHit("max_shell_tasks")
		r.events.Warn("shell.max_shell_tasks", "shell command refused: limits.max_shell_tasks reached",
			zap.Int64("max_shell_tasks", max))
		return fmt.Errorf("limits.max_shell_tasks (%d) commands run on this router already", max)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.shellTasks.Add(-1)
		f()
	}()
	return nil
}

// spawnForOperator runs a background command of the shell socket, whose
// users may run everything: never refused, not counted.
func (r *Router) spawnForOperator(f func()) error {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return nil
}

// Tree returns the router's view for the shell and `dmsgd tree`.
func (r *Router) Tree() *shell.Tree {
	snap := r.engine.Snapshot()
	cfg := r.Config()
	t := &shell.Tree{Node: shell.Self{Label: cfg.Node.Label, ID: r.nodeID.String(), Rnss: snap.Rnss}}
	t.Links = r.linkInfos()
	for _, c := range snap.Clusters {
		t.Clusters = append(t.Clusters, clusterView(c))
	}
	for _, c := range r.circuits.Snapshot() {
		state := "setup"
		if c.Open {
			state = "open"
		}
		t.Circuits = append(t.Circuits, shell.Circuit{ID: c.ID,
			A:      shell.CircuitEnd{Link: c.ALink, Circuit: shell.MsgID(c.ACirc)},
			B:      shell.CircuitEnd{Link: c.BLink, Circuit: shell.MsgID(c.BCirc)},
			Target: c.Target, State: state, Since: shell.Time(c.Since), Msgs: c.Msgs, Bytes: c.Bytes})
	}
	return t
}

func clusterView(c span.ClusterInfo) shell.Cluster {
	// Sized up front: a big tree's view is built for every `tree`.
	out := shell.Cluster{PeerType: shell.PeerTypeName(c.PeerType), ID: c.PfsClid.String(), Label: c.ClLabel,
		Nodes: sized[shell.Node](len(c.Nodes))}
	for _, n := range c.Nodes {
		nv := shell.Node{PfsType: n.PfsType, ID: n.PfsFsid.String(), Label: n.FsLabel, Verified: n.Verified,
			Adverts: sized[shell.Advert](len(n.Links))}
		for _, l := range n.Links {
			lv := shell.Advert{MsgID: shell.MsgID(l.MsgID), Dist: l.Dist, Rnss: l.Rnss, Via: l.Via, Verified: l.Verified,
				Relays: sized[shell.Relay](len(l.Relays))}
			for _, rl := range l.Relays {
				lv.Relays = append(lv.Relays, shell.Relay{MsgID: shell.MsgID(rl.MsgID), Via: rl.Via})
			}
			nv.Adverts = append(nv.Adverts, lv)
		}
		out.Nodes = append(out.Nodes, nv)
	}
	return out
}

// sized is an empty slice with room for n, nil when n is 0 (the JSON
// tells nil from empty).
func sized[E any](n int) []E {
	if n == 0 {
		return nil
	}
	return make([]E, 0, n)
}

// linkInfos lists every open link by id number.
func (r *Router) linkInfos() []shell.Link {
	r.mu.Lock()
	links := r.linkList()
	r.mu.Unlock()
	slices.SortFunc(links, func(a, b *link) int {
		return compareLinkIDs(a.id, b.id)
	})
	out := make([]shell.Link, 0, len(links))
	for _, l := range links {
		out = append(out, l.info())
	}
	return out
}

func compareLinkIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func (l *link) info() shell.Link {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := shell.Link{ID: l.id, Remote: l.conn.RemoteAddr(), State: "connecting", Since: shell.Time(l.conn.Since()),
		TLSPeer: l.opts.tlsPeer, SignedSpans: l.trust.signed}
	if l.peer != nil {
		v.PeerLabel = l.peer.FsLabel
		v.PeerType = shell.PeerTypeName(l.peer.PeerType)
		v.State = "up"
	}
	return v
}

// spanDialTimeout bounds the shell's `span <host>`.
const spanDialTimeout = 10 * time.Second

// Span opens a link to target for the shell's `span <host>`. A configured
// target waiting to redial is kicked instead.
func (r *Router) Span(target string) string {
	if !strings.HasPrefix(target, "span:") && !strings.HasPrefix(target, "span+tls:") {
		target = "span:" + target
	}
	t, err := config.ParseSpanPath(target)
	if err != nil {
		return fmt.Sprintf("Bad target: %v", err)
	}
	if r.media.Kick(t) {
		return "Redialling " + t.Addr()
	}
	ctx, cancel := context.WithTimeout(r.ctx, spanDialTimeout) // ends with the router
	defer cancel()
	if _, err := r.dial(ctx, t); err != nil {
		return fmt.Sprintf("Connection to %s failed: %v", t.Addr(), err)
	}
	return "Connected to " + t.Addr()
}
