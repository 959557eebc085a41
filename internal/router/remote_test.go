package router_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// farShell plays the far router of `@node`: an endpoint advertising a
// node to the router under test, whose answers to the circuits the
// router opens toward it the test chooses.
type farShell struct {
	*endpoint.Endpoint
	mode farMode
	// lines is what a "lines" far shell answers, before its prompt.
	lines []string

	mu      sync.Mutex
	circs   int // LNK_CIRCs the router opened
	flooded int // bytes of output a flooding far shell queued
}

type farMode int

const (
	farRefuses farMode = iota // every LNK_CIRC answered CANTCIRC at once
	farFloods                 // output without end, as fast as the circuit takes it
	farLines                  // lines, then the prompt
)

// dialFarShell connects a far shell advertising label to r; a farLines
// one answers lines. With window > 0 it offers per-circuit flow control
// with that window.
func dialFarShell(tb testing.TB, r *testRouter, label string, mode farMode, window uint32, lines ...string) *farShell {
	tb.Helper()
	f := &farShell{mode: mode, lines: lines}
	c := dmsg.Conn{PeerType: dmsg.PeerRouter, PeerMask: ^uint64(0), ProtoVersion: 1, FsLabel: label,
		PfsFsid: config.NodeIDFor(label)}
	if window > 0 {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, window
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	e, err := endpoint.Dial(ctx, "tcp", r.addr(), endpoint.Config{Conn: c, AcceptCircuit: f.accept,
		Link: iocom.Config{ID: "far-" + label}})
	if err != nil {
		tb.Fatal(err)
	}
	f.Endpoint = e
	tb.Cleanup(func() { e.Close() })
	if _, err := e.Advertise(hammer2Span(label, "far", 1, 1)); err != nil {
		tb.Fatal(err)
	}
	return f
}

// accept answers a LNK_CIRC as the far shell's mode says.
func (f *farShell) accept(c *endpoint.Circuit) iocom.Handler {
	f.mu.Lock()
	f.circs++
	f.mu.Unlock()
	if f.mode == farRefuses {
		return nil // CANTCIRC
	}
	return &farCircuit{f: f, c: c}
}

// farCircuit runs the far shell inside one circuit.
type farCircuit struct {
	f *farShell
	c *endpoint.Circuit
}

func (c *farCircuit) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }

func (c *farCircuit) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply != 0 {
		return
	}
	switch c.f.mode {
	case farLines:
		for _, l := range c.f.lines {
			c.c.SendOneWay(shellReply(l))
		}
		c.c.SendOneWay(shellReply(shell.Prompt))
	case farFloods:
		go c.f.flood(c.c)
	}
}

// flood sends output on c until the circuit goes, within its credit.
func (f *farShell) flood(c *endpoint.Circuit) {
	chunk := strings.Repeat("x", 8<<10) + "\n"
	for c.WaitRoom(context.Background()) == nil {
		if c.SendOneWay(shellReply(chunk)) != nil {
			return
		}
		f.mu.Lock()
		f.flooded += len(chunk)
		f.mu.Unlock()
	}
}

func shellReply(text string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagReply)
	m.SetAux(append([]byte(text), 0))
	return m
}

// circuitEnds returns how many LNK_CIRCs the router opened, and how the
// ones accepted ended so far: the cmd and error of each terminating
// message.
func (f *farShell) circuitEnds() (opened int, cmds, codes []uint32) {
	f.mu.Lock()
	opened = f.circs
	f.mu.Unlock()
	for _, c := range f.Accepted() {
		select {
		case <-c.Done():
			cmd, code := c.End()
			cmds, codes = append(cmds, cmd), append(codes, code)
		default:
		}
	}
	return opened, cmds, codes
}

func withRemoteOutputBytes(n int) routerOption {
	return func(c *config.Config) { c.Limits.RemoteOutputBytes = config.ByteSize(n) }
}

// A far router that answers `@node` with output without end fills no
// memory: once limits.remote_output_bytes of it are held the circuit is
// aborted with IO, the command says why, the refusal is counted, and the
// far router's link stays up.
func TestRemoteOutputBeyondItsLimitAbortsTheCircuit(t *testing.T) {
	const limit = 256 << 10
	for _, tc := range []struct {
		name   string
		window uint32
	}{
		{"from a peer with per-circuit flow control", dmsg.MinCircWindow},
		{"from a peer without it", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, "r", withRemoteOutputBytes(limit))
			far := dialFarShell(t, r, "far", farFloods, tc.window)
			waitNode(t, r, "far")
			out := r.Remote("far", "tree")
			text := strings.Join(out, "")
			last := out[len(out)-1]
			if want := fmt.Sprintf("@far: output over %d bytes", limit); !strings.HasPrefix(last, want) {
				t.Fatalf("@far tree ended with %q, want %q...", last, want)
			}
			if held := len(text) - len(last); held > limit {
				t.Errorf("@far tree returned %d bytes of output, over the %d-byte limit", held, limit)
			}
			eventually(t, "the far router told the circuit was aborted", func() error {
				if _, cmds, _ := far.circuitEnds(); len(cmds) == 0 {
					return errors.New("its LNK_CIRC is still open")
				}
				return nil
			})
			_, cmds, codes := far.circuitEnds()
			if cmds[0]&dmsg.FlagAbort == 0 || codes[0] != dmsg.ErrIO {
				t.Errorf("the far router's LNK_CIRC ended with %s %s, want ABORT|DELETE IO",
					dmsg.CmdString(cmds[0]), dmsg.ErrorString(codes[0]))
			}
			if v, _ := sample(t, r.Metrics().Registry(), "dmsgd_limit_refusals_total",
				map[string]string{"limit": "remote_output_bytes"}); v != 1 {
				t.Errorf("counted %v refusals for remote_output_bytes, want 1", v)
			}
			select {
			case <-far.Done():
				t.Fatal("the far router's link went down with the circuit")
			default:
			}
			eventually(t, "the router forgets the circuit", func() error {
				if cs := r.Tree().Circuits; len(cs) != 0 {
					return fmt.Errorf("still holds %+v", cs)
				}
				return nil
			})
		})
	}
}

// Every line of a long answer arrives, in order, through the shell socket:
// output is never dropped because the caller is slower than the link, nor
// because the whole of it is larger than one DMSG message may carry.
func TestRemoteOutputArrivesWhole(t *testing.T) {
	r := newRouter(t, "r")
	var lines []string
	for i := range 120000 { // about 1.4 MB, past dmsg.MaxAuxSize
		lines = append(lines, fmt.Sprintf("line %d\n", i))
	}
	far := dialFarShell(t, r, "far", farLines, dmsg.MinCircWindow, lines...)
	waitNode(t, r, "far")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sh, err := endpoint.DialShell(ctx, "unix", r.socket, "tester")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	got, err := sh.Shell(ctx, "@far tree")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(far.lines, ""); got != want {
		gl := strings.SplitAfter(got, "\n")
		t.Fatalf("@far tree returned %d bytes in %d lines, want %d bytes in %d; last line %q",
			len(got), len(gl), len(want), len(far.lines), gl[len(gl)-1])
	}
}

// A circuit the far end refuses at once, even before the command is sent
// into it, reports the refusal ("circuit failed: CANTCIRC"), never the
// closed scope it left behind.
func TestRemoteRefusedAtOnceSaysWhy(t *testing.T) {
	r := newRouter(t, "r")
	far := dialFarShell(t, r, "far", farRefuses, dmsg.MinCircWindow)
	waitNode(t, r, "far")
	const calls = 300
	for i := range calls {
		out := strings.Join(r.Remote("far", "help"), "")
		if out != "@far: circuit failed: CANTCIRC\n" {
			t.Fatalf("call %d: @far help = %q, want the circuit refused with CANTCIRC", i, out)
		}
	}
	if opened, _, _ := far.circuitEnds(); opened != calls {
		t.Errorf("the far end saw %d LNK_CIRCs, want %d", opened, calls)
	}
}

// waitNode waits until r holds a span of the node labelled label.
func waitNode(t *testing.T, r *testRouter, label string) {
	t.Helper()
	eventually(t, r.label+" holds "+label+"'s span", func() error { return r.Holds(label) })
}
