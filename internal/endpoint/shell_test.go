package endpoint_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
)

// fakeRouter is the far end of an endpoint's link played by the test on
// the wire: it answers nothing unless told to.
func fakeRouter(t *testing.T) (*endpoint.Endpoint, *dmsgtest.Peer, *dmsgtest.Recorder) {
	t.Helper()
	a, b := net.Pipe()
	e := endpoint.New(a, endpoint.Config{Conn: node("leaf")})
	t.Cleanup(func() { e.Close() })
	p := dmsgtest.NewPeer(b)
	return e, p, p.Record(t, dmsgtest.RecordOptions{AutoPong: true})
}

// reply is shell output as a router sends it, on circuit 0 or inside
// circuit (the endpoint opened it, so it carries REVCIRC).
func reply(circuit uint64, text string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagReply)
	if circuit != 0 {
		m.Cmd |= dmsg.FlagRevCirc
		m.Circuit = circuit
	}
	m.SetAux(append([]byte(text), 0))
	return m
}

func shellLine(line string) func(*dmsg.Msg) bool {
	return func(m *dmsg.Msg) bool { return dmsg.Base(m.Cmd) == dmsg.DbgShell && dmsgtest.Text(m) == line }
}

func TestACommandOverTheLimitLeavesTheNextOneItsOwnOutput(t *testing.T) {
	e, router, rec := fakeRouter(t)
	e.SetShellLimit(16)
	first := make(chan error, 1)
	go func() {
		_, err := e.Shell(context.Background(), "big")
		first <- err
	}()
	rec.Expect("the big command", shellLine("big"))
	router.Send(reply(0, strings.Repeat("a", 20)))
	if err := <-first; !errors.Is(err, endpoint.ErrOutputLimit) {
		t.Fatalf("big: %v, want ErrOutputLimit", err)
	}
	second := make(chan string, 1)
	go func() {
		out, _ := e.Shell(context.Background(), "small")
		second <- out
	}()
	rec.Expect("the small command", shellLine("small"))
	// The rest of big's output, and its prompt, come after small was sent.
	router.Send(reply(0, "tail of big\n"), reply(0, dmsg.ShellPrompt))
	router.Send(reply(0, "small\n"), reply(0, dmsg.ShellPrompt))
	if out := <-second; out != "small\n" {
		t.Fatalf("small answered %q, want its own output", out)
	}
}

func TestACommandWhoseContextEndsLeavesTheNextOneItsOwnOutput(t *testing.T) {
	e, router, rec := fakeRouter(t)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := e.Shell(ctx, "slow")
		first <- err
	}()
	rec.Expect("the slow command", shellLine("slow"))
	router.Send(reply(0, "part of slow\n"))
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("slow: %v, want context.Canceled", err)
	}
	router.Send(reply(0, "rest of slow\n"), reply(0, dmsg.ShellPrompt))
	second := make(chan string, 1)
	go func() {
		out, _ := e.Shell(context.Background(), "next")
		second <- out
	}()
	rec.Expect("the next command", shellLine("next"))
	router.Send(reply(0, "next\n"), reply(0, dmsg.ShellPrompt))
	if out := <-second; out != "next\n" {
		t.Fatalf("next answered %q, want its own output", out)
	}
}

func TestAFarEndBreakingTheProtocolEndsAShellInItsCircuitAtOnce(t *testing.T) {
	e, router, rec := fakeRouter(t)
	c, err := e.OpenCircuit(0x42, nil)
	if err != nil {
		t.Fatal(err)
	}
	lnkCirc := rec.Expect("the LNK_CIRC", func(m *dmsg.Msg) bool { return dmsg.Base(m.Cmd) == dmsg.LnkCirc })
	router.Send(dmsgtest.Ack(lnkCirc.MsgID))
	if err := c.Wait(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Shell(ctxFor(t), "tree")
		done <- err
	}()
	rec.Expect("the command inside the circuit", shellLine("tree"))
	// A reply to a transaction nobody opened in the circuit; then the far
	// end ignores the abort it earns.
	router.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagReply | dmsg.FlagRevCirc | dmsg.FlagRevTrans,
		MsgID: 0x999, Circuit: lnkCirc.MsgID}})
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shell = %v, want the far end's violation", err)
		}
	case <-ctxFor(t).Done():
		t.Fatal("Shell still waits after the far end broke the protocol")
	}
}
