package router_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/testnet"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// dialSpy is a listener of the test's own: whatever the router is made to
// dial, it counts.
type dialSpy struct {
	l     net.Listener
	dials atomic.Int32
}

func newDialSpy(t *testing.T) *dialSpy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dialSpy{l: l}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.dials.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return s
}

func (s *dialSpy) addr() string { return s.l.Addr().String() }

// routerPeer is a raw peer that introduces itself as a router labelled
// label and can open circuits toward the spans the router relays to it.
type routerPeer struct {
	*rawPeer
	nextCirc uint64
}

func dialRouterPeer(tb testing.TB, addr, label string) *routerPeer {
	tb.Helper()
	p := &routerPeer{rawPeer: dialRaw(tb, addr, true), nextCirc: 0x2000}
	p.send(connMsg(routerLNKConn(label), false, 0x1000))
	return p
}

// routerLNKConn is the LNK_CONN of a router labelled label.
func routerLNKConn(label string) dmsg.Conn {
	return dmsg.Conn{PfsFsid: config.NodeIDFor(label), PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter,
		ProtoVersion: 1, Rnss: 5, PfsMask: ^uint64(0), FsLabel: label}
}

// spanOf waits for the router to open a LNK_SPAN for the node labelled
// label and returns it.
func (p *rawPeer) spanOf(label string) *dmsg.Msg {
	p.tb.Helper()
	p.Rewind()
	return p.Expect("a LNK_SPAN of "+label, func(m *dmsg.Msg) bool {
		if !isCmd(dmsg.LnkSpan, dmsg.FlagCreate)(m) {
			return false
		}
		s, _ := m.Span()
		return s.FsLabel == label
	})
}

// openCircuit opens a LNK_CIRC toward the span the router sent with msgid
// target and waits until the far end accepts it.
func (p *routerPeer) openCircuit(target uint64) uint64 {
	p.tb.Helper()
	p.nextCirc++
	id := p.nextCirc
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target})
	m.MsgID = id
	p.send(m)
	p.Expect("the circuit accepted", func(m *dmsg.Msg) bool {
		return m.MsgID == id && m.Circuit == 0 && m.Cmd&(dmsg.FlagCreate|dmsg.FlagReply) == dmsg.FlagCreate|dmsg.FlagReply &&
			m.Cmd&dmsg.FlagDelete == 0
	})
	return id
}

// run sends a shell command inside circuit circ and returns its output
// up to the prompt.
func (p *routerPeer) run(circ uint64, line string) string {
	p.tb.Helper()
	m := dmsgtest.ShellLine(line)
	m.Circuit = circ
	p.send(m)
	var out strings.Builder
	for {
		r := p.Expect("shell output on the circuit", func(m *dmsg.Msg) bool {
			return m.Circuit == circ && dmsg.Base(m.Cmd) == dmsg.DbgShell && m.Cmd&dmsg.FlagReply != 0
		})
		if t := dmsgtest.Text(r); t == shell.Prompt {
			return out.String()
		} else {
			out.WriteString(t)
		}
	}
}

// runLink sends a shell command on the link itself (circuit 0).
func (p *routerPeer) runLink(line string) string {
	p.tb.Helper()
	p.send(dmsgtest.ShellLine(line))
	var out strings.Builder
	for {
		r := p.Expect("shell output", isShellReply)
		if t := dmsgtest.Text(r); t == shell.Prompt {
			return out.String()
		} else {
			out.WriteString(t)
		}
	}
}

// The attack of the shell bypass: with shell.tcp off, a peer opens a
// circuit to the router's own advertisement and sends DBG_SHELL inside
// it. Read-only commands are served (shell.remote), privileged ones are
// refused naming the setting, and the router dials nothing: the test's
// own listener sees no connection. With shell.remote_privileged granting
// the link, the same command does dial it, which shows the listener would
// have seen the attack.
func TestAShellCommandInsideACircuitRunsOnlyWhatTheRuleAllows(t *testing.T) {
	tests := []struct {
		name    string
		opts    []routerOption
		dialled bool
	}{
		{"with the defaults and shell.tcp off, span is refused", []routerOption{withShellTCP(config.ShellTCPOff)}, false},
		{"shell.remote_privileged pinned does not admit a plain link", []routerOption{withShellTCP(config.ShellTCPOff),
			func(c *config.Config) { c.Shell.RemotePrivileged = config.PrivilegedPinned }}, false},
		{"shell.remote_privileged loopback admits the loopback link", []routerOption{withShellTCP(config.ShellTCPOff),
			func(c *config.Config) { c.Shell.RemotePrivileged = config.PrivilegedLoopback }}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spy := newDialSpy(t)
			r := newRouter(t, "r", tt.opts...)
			p := dialRouterPeer(t, r.tcpURL(), "mallory")
			circ := p.openCircuit(p.spanOf("r").MsgID)

			if out := p.run(circ, "tree"); !strings.Contains(out, "(r)") {
				t.Fatalf("tree over the circuit: %q", out)
			}
			out := p.run(circ, "span "+spy.addr())
			if tt.dialled {
				if !strings.HasPrefix(out, "Connected to ") {
					t.Fatalf("span with the grant: %q", out)
				}
				eventually(t, "the spy listener is dialled", func() error {
					if spy.dials.Load() == 0 {
						return fmt.Errorf("no dial")
					}
					return nil
				})
				return
			}
			if !strings.HasPrefix(out, "refused: span is a privileged command; shell.remote_privileged is") ||
				!strings.HasSuffix(out, "(on r)\n") {
				t.Fatalf("span over the circuit answered %q", out)
			}
			for _, line := range []string{"@r span " + spy.addr(), "@r @r span " + spy.addr(), "@elsewhere span " + spy.addr()} {
				if out := p.run(circ, line); !strings.HasPrefix(out, "refused: ") {
					t.Fatalf("%s over the circuit answered %q", line, out)
				}
			}
			// The link itself is refused everything (shell.tcp off).
			if out := p.runLink("span " + spy.addr()); !strings.Contains(out, "shell.tcp is off") {
				t.Fatalf("span on the link answered %q", out)
			}
			p.run(circ, "tree") // everything asked before has been handled
			time.Sleep(100 * time.Millisecond)
			if n := spy.dials.Load(); n != 0 {
				t.Fatalf("the router dialled the spy %d times", n)
			}
		})
	}
}

// shell.remote false refuses every command inside circuits, read-only
// ones included.
func TestShellRemoteFalseRefusesCircuits(t *testing.T) {
	r := newRouter(t, "r", func(c *config.Config) { c.Shell.Remote = false })
	p := dialRouterPeer(t, r.tcpURL(), "peer")
	circ := p.openCircuit(p.spanOf("r").MsgID)
	if out := p.run(circ, "tree"); !strings.HasPrefix(out, "refused: tree is a read-only command; shell.remote is false") {
		t.Fatalf("tree over the circuit: %q", out)
	}
}

// Privileged commands from a TCP peer need shell.tcp_privileged; the
// shell socket runs them anyway.
func TestPrivilegedCommandsFromTCPPeersNeedTheirOwnGrant(t *testing.T) {
	tests := []struct {
		name    string
		grant   string
		socket  bool
		dialled bool
	}{
		{"refused by default", config.PrivilegedOff, false, false},
		{"refused to a plain peer when only pinned keys are granted", config.PrivilegedPinned, false, false},
		{"served to a loopback peer when loopback is granted", config.PrivilegedLoopback, false, true},
		{"served on the shell socket without a grant", config.PrivilegedOff, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spy := newDialSpy(t)
			r := newRouter(t, "r", func(c *config.Config) { c.Shell.TCPPrivileged = tt.grant })
			addr := r.tcpURL()
			if tt.socket {
				addr = r.shellURL()
			}
			p := dialRouterPeer(t, addr, "sh")
			out := p.runLink("span " + spy.addr())
			if tt.dialled != strings.HasPrefix(out, "Connected to ") {
				t.Fatalf("span answered %q", out)
			}
			if !tt.dialled {
				if !strings.Contains(out, "shell.tcp_privileged is "+tt.grant) {
					t.Fatalf("refusal %q does not name the setting", out)
				}
				if out := p.runLink("@r span " + spy.addr()); !strings.HasPrefix(out, "refused: span is a privileged command") {
					t.Fatalf("@r span answered %q", out)
				}
				if out := p.runLink("links"); !strings.Contains(out, "LINK") {
					t.Fatalf("links answered %q", out)
				}
				time.Sleep(100 * time.Millisecond)
				if n := spy.dials.Load(); n != 0 {
					t.Fatalf("the router dialled the spy %d times", n)
				}
			}
		})
	}
}

// `@node` of a read-only command works across routers by default; of a
// privileged one it is refused where it is typed over TCP, and at the
// far router when it comes over a circuit.
func TestRemoteReadOnlyCommandsWorkAndPrivilegedOnesAreJudgedAtBothEnds(t *testing.T) {
	spy := newDialSpy(t)
	rs := line(t, 3, func(c *config.Config) { c.Shell.TCPPrivileged = config.PrivilegedLoopback })
	a := rs[0]
	p := dialRouterPeer(t, a.tcpURL(), "sh")
	if out := p.runLink("@r3 tree"); !strings.Contains(out, "(r3)\n\tSLink msgid 0000000000000000 dist=0 via local") {
		t.Fatalf("@r3 tree: %q", out)
	}
	// r1 lets its loopback TCP peer run span, but r3 judges the circuit
	// by the link it arrived on (from r2), which it does not grant.
	out := p.runLink("@r3 span " + spy.addr())
	if !strings.HasPrefix(out, "refused: span is a privileged command; shell.remote_privileged is off") ||
		!strings.Contains(out, "(on r3)") {
		t.Fatalf("@r3 span: %q", out)
	}
	time.Sleep(100 * time.Millisecond)
	if n := spy.dials.Load(); n != 0 {
		t.Fatalf("a router dialled the spy %d times", n)
	}
}

// A TCP peer's shell commands are peer text it can repeat at will: a
// flood of long command lines, refused or served, writes no line per
// command at info, and no log line carries a whole command.
func TestAFloodOfShellCommandsFromATCPPeerWritesAFewShortLines(t *testing.T) {
	for _, policy := range []string{config.ShellTCPOff, config.ShellTCPLoopback} {
		t.Run("shell.tcp "+policy, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			log := zap.New(zapcore.NewTee(core, testLogger(t).Core()))
			r := testnet.Start(t, "r", log, withShellTCP(policy))
			p := dialRouterPeer(t, "tcp://"+r.Addr(), "mallory")
			pad := strings.Repeat("x", 64<<10)
			const n = 200
			for i := range n {
				if i%2 == 0 {
					p.send(dmsgtest.ShellLine("help " + pad)) // read-only
				} else {
					p.send(dmsgtest.ShellLine("span 127.0.0.1:1 " + pad)) // privileged
				}
			}
			eventually(t, "every command answered", func() error {
				if got := countPrompts(p.All()); got < n {
					return fmt.Errorf("%d of %d answered", got, n)
				}
				return nil
			})
			lines := logs.All()
			if len(lines) > 20 {
				t.Errorf("%d commands wrote %d lines at info and above", n, len(lines))
			}
			for _, e := range lines {
				for k, v := range e.ContextMap() {
					if s, ok := v.(string); ok && len(s) > 1024 {
						t.Fatalf("%q logged %s of %d bytes", e.Message, k, len(s))
					}
				}
			}
		})
	}
}

func countPrompts(ms []*dmsg.Msg) int {
	n := 0
	for _, m := range ms {
		if isShellReply(m) && dmsgtest.Text(m) == shell.Prompt {
			n++
		}
	}
	return n
}

// A `@node` waits up to 10 s for a router that does not answer, holding a
// goroutine and a circuit: a peer's session runs one at a time, and all
// peers together at most limits.max_shell_tasks, so a peer sending them
// without waiting for the prompt (on its link or over many circuits)
// cannot pile them up. The shell socket is not held to it.
func TestBackgroundShellCommandsOfPeersAreBounded(t *testing.T) {
	r := newRouter(t, "r", func(c *config.Config) { c.Limits.MaxShellTasks = 2 })
	ghost := dialRouterPeer(t, r.tcpURL(), "ghost") // never answers a circuit
	if ans := advertiseRaw(ghost.rawPeer, 0x3000, routerSpan("ghost"), nil); refusedParam(ans) {
		t.Fatal("ghost's advertisement was refused")
	}
	eventually(t, "r holds ghost", func() error { return r.Holds("ghost") })

	p := dialRouterPeer(t, r.tcpURL(), "mallory")
	p.send(dmsgtest.ShellLine("@ghost tree"))
	if out := p.runLink("@ghost tree"); !strings.Contains(out, "refused: busy: the previous command") {
		t.Fatalf("a second @node on the same session answered %q", out)
	}
	self := p.spanOf("r").MsgID
	c1, c2 := p.openCircuit(self), p.openCircuit(self)
	m := dmsgtest.ShellLine("@ghost tree")
	m.Circuit = c1
	p.send(m) // the second task running
	if out := p.run(c2, "@ghost tree"); !strings.Contains(out, "limits.max_shell_tasks") {
		t.Fatalf("a third @node answered %q", out)
	}
	if n := testnet.LimitHits(r.Metrics(), "max_shell_tasks"); n != 1 {
		t.Errorf("max_shell_tasks counted %v times, want 1", n)
	}
	// The operator is served whatever the peers hold.
	op := dialLeaf(t, r.shellURL(), leafConfig{Label: "op"})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if out, err := op.Shell(ctx, "@r links"); err != nil || !strings.Contains(out, "ghost") {
		t.Fatalf("the operator's @r links answered %q, %v", out, err)
	}
}
