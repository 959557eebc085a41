package router

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/circ"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
)

// resolveCircuit tells the circuit relay where a span we sent leads: the
// link and msgid we received it on, or our own node.
func (r *Router) resolveCircuit(on *circ.Table, spanMsgID uint64) (circ.NextHop, bool) {
	l, _ := on.Owner().(*link)
	if l == nil {
		return circ.NextHop{}, false
	}
	o, ok := r.engine.RelayOrigin(l, spanMsgID)
	if !ok {
		return circ.NextHop{}, false
	}
	if o.From == nil {
		return circ.NextHop{Local: true, Label: o.Label}, true
	}
	next, _ := o.From.(*link)
	if next == nil {
		return circ.NextHop{}, false
	}
	return circ.NextHop{Next: next.circuits, NextMsgID: o.MsgID, Label: o.Label,
		NoCircuits: !next.carriesCircuits()}, true
}

// carriesCircuits reports whether LNK_CIRC may be sent on the link: not
// when the peer spoke the libdmsg 2014+ LNK_CONN (0x1106), whose protocol
// has no LNK_CIRC (docs/PROTOCOL.md section 10); that service dies on one.
func (l *link) carriesCircuits() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.peerV2
}

// AcceptCircuit ends a circuit at this router (its own node): it accepts
// it and serves shell commands inside it, judged by the link the circuit
// arrived on (auth.go).
func (r *Router) AcceptCircuit(tx *iocom.Tx) iocom.TxHandler {
	r.mu.Lock()
	via := r.links[tx.Link().ID()]
	r.mu.Unlock()
	if via == nil {
		tx.CloseError(dmsg.ErrCantCirc) // the link is going away
		return nil
	}
	ep := &circuitShell{r: r, tx: tx, via: via}
	scope, err := tx.Link().OpenScope(tx.MsgID(), false, ep)
	if err != nil {
		tx.CloseError(dmsg.ErrCantCirc)
		return nil
	}
	ep.scope = scope
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	tx.Link().Logger().Debug("circuit to this router accepted", zap.Uint64("circuit", tx.MsgID()))
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete == 0 {
			return
		}
		scope.Close(dmsg.ErrLostLink)
		tx.CloseError(m.Error)
	}
}

// circuitShell serves DBG_SHELL commands arriving inside a circuit that
// ends here: the far half of `@node cmd`.
type circuitShell struct {
	r       *Router
	tx      *iocom.Tx // the circuit's LNK_CIRC
	via     *link     // the link it arrived on
	scope   *iocom.Scope
	session *shell.Session
}

func (c *circuitShell) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }

// ScopeFailed aborts a circuit whose far end broke the protocol inside it.
func (c *circuitShell) ScopeFailed(*iocom.Scope, error) { c.tx.Abort(dmsg.ErrParam) }

func (c *circuitShell) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply != 0 {
		return
	}
	if c.outputStuck() {
		return
	}
	out := func(text string) {
		msg := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagReply)
		msg.SetAux(append([]byte(text), 0))
		c.scope.SendOneWay(msg)
	}
	if c.session == nil {
		noPing := func() error { return errors.New("not over a circuit") }
		c.session = shell.NewSession(c.r, out, noPing, c.r.spawn)
		c.session.SetAuthorizer(c.via.authorizer(shell.CarrierCircuit))
	}
	line := strings.TrimRight(string(m.Aux), "\x00")
	// Debug: `dmsgd map` asks every router for its tree this way.
	c.scope.Link().Logger().Debug("remote shell command", zap.String("command", line))
	c.r.metrics.ShellCommand("circuit")
	c.session.Exec(line)
}

// outputStuck aborts, with IO, a circuit whose far end sends commands but
// does not take their output: with per-circuit flow control the output
// waits in the circuit for credit, and that must stay bounded.
func (c *circuitShell) outputStuck() bool {
	limit := int(c.r.Config().Limits.CircuitQueueBytes)
	if p := c.scope.Pending(); p <= limit {
		return false
	}
	c.r.metrics.LimitHit("circuit_queue_bytes")
	c.r.events.Warn("circuit_shell_output", "circuit to this router aborted: its far end does not take the shell's output",
		zap.String("link", c.tx.Link().ID()), zap.String("peer", c.tx.Link().RemoteAddr()),
		zap.Uint64("circuit", c.tx.MsgID()), zap.Int("waiting_bytes", c.scope.Pending()))
	c.tx.Abort(dmsg.ErrIO)
	return true
}

// remoteTimeout bounds one `@node cmd`.
const remoteTimeout = 10 * time.Second

// Remote runs line on the router whose own node is labelled label, over a
// circuit built on the best span we hold for it, and returns the output.
func (r *Router) Remote(label, line string) []string {
	if label == r.label {
		var out []string
		s := shell.NewSession(r, func(t string) { out = append(out, t) }, func() error { return nil }, nil)
		s.SetAuthorizer(shell.AllowAll) // the caller judged the whole `@node` line
		s.Exec(line)
		if n := len(out); n > 0 && out[n-1] == shell.Prompt {
			out = out[:n-1]
		}
		return out
	}
	via, spanID, found, unverified := r.bestSpan(label)
	switch {
	case via == nil && unverified:
		return []string{"@" + label + ": no verified advertisement of that node (its key is pinned in tls.peers)\n"}
	case via == nil && found:
		return []string{"@" + label + ": reachable only through libdmsg 2014+ links, which carry no circuits\n"}
	case via == nil:
		return []string{"@" + label + ": no such node\n"}
	}
	ctx, cancel := context.WithTimeout(r.ctx, remoteTimeout) // ends with the router
	defer cancel()
	out, err := r.runRemote(ctx, via, spanID, line)
	if err != nil {
		out = append(out, "@"+label+": "+err.Error()+"\n")
	}
	return out
}

// bestSpan finds the link and msgid of the best span held for a node
// labelled label over a link that carries circuits. found reports whether
// any span for such a node is held at all. `@node` names a node by label
// alone, so every node carrying the label is a candidate, whatever its
// id, cluster or type: when a key pinned in tls.peers speaks for the
// label, only verified advertisements are (unverified reports one held
// without), else verified ones first, then the nearest.
func (r *Router) bestSpan(label string) (via *link, msgid uint64, found, unverified bool) {
	snap := r.engine.Snapshot()
	cfg := r.Config()
	pinned := labelPinned(&cfg.TLS, label)
	var best *span.AdvertInfo
	for _, c := range snap.Clusters {
		for _, n := range c.Nodes {
			if n.FsLabel != label || len(n.Links) == 0 {
				continue
			}
			found = true
			for i := range n.Links {
				sl := &n.Links[i]
				if pinned && !sl.Verified {
					unverified = true
					continue
				}
				r.mu.Lock()
				l := r.links[sl.Via]
				r.mu.Unlock()
				if l == nil || !l.carriesCircuits() {
					continue
				}
				if best == nil || betterForCircuit(sl, best) {
					best, via = sl, l
				}
				break // a node's links are best first
			}
		}
	}
	if via == nil {
		return nil, 0, found, unverified
	}
	return via, best.MsgID, true, false
}

// betterForCircuit ranks the best advertisements of different nodes that
// carry the same label: verified first, then the nearest.
func betterForCircuit(a, b *span.AdvertInfo) bool {
	if a.Verified != b.Verified {
		return a.Verified
	}
	return a.Dist < b.Dist
}
