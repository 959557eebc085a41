package endpoint_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

func TestMain(m *testing.M) { testnet.Main(m) }

// node is the LNK_CONN of a test node labelled label that asks for every
// span and offers per-circuit flow control with the smallest window.
func node(label string) dmsg.Conn {
	return dmsg.Conn{PfsFsid: config.NodeIDFor(label), PeerMask: ^uint64(0), PfsMask: ^uint64(0),
		PeerType: dmsg.PeerHammer2, ProtoVersion: 1, FsLabel: label,
		Caps: dmsg.CapCircWindow, CircWindow: dmsg.MinCircWindow}
}

// span is the advertisement of a test node labelled label.
func span(label string) dmsg.Span {
	return dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: config.NodeIDFor(label),
		PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testnet.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// dial connects an endpoint with cfg to r and waits until the router
// acknowledged its LNK_CONN. The test's cleanup closes it.
func dial(t *testing.T, r *testnet.Router, cfg endpoint.Config) *endpoint.Endpoint {
	t.Helper()
	e, err := endpoint.Dial(ctxFor(t), "tcp", r.Addr(), cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", r.Addr(), err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.Ready(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	return e
}

// echo answers every transaction inside a circuit with its own aux and
// closes it, and counts one-way messages.
type echo struct{ oneWay chan string }

func (h echo) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	r := &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}}
	r.SetAux(m.Aux)
	tx.Send(r)
	tx.Close()
	return nil
}

func (h echo) OneWay(_ *iocom.Link, m *dmsg.Msg) { h.oneWay <- string(m.Aux) }

func TestTwoEndpointsTalkOverACircuitAcrossTwoRouters(t *testing.T) {
	a, b := testnet.Start(t, "A", nil), testnet.Start(t, "B", nil)
	a.SpanTo(b.Addr())
	got := echo{oneWay: make(chan string, 1)}
	far := dial(t, b, endpoint.Config{Conn: node("far"), AcceptCircuit: func(*endpoint.Circuit) iocom.Handler { return got }})
	if _, err := far.Advertise(span("far")); err != nil {
		t.Fatal(err)
	}
	near := dial(t, a, endpoint.Config{Conn: node("near")})
	if _, _, ok := near.Link().CircWindows(); !ok {
		t.Fatal("flow control not in force though both LNK_CONNs offer it")
	}
	s, err := near.WaitRelay(ctxFor(t), "far")
	if err != nil {
		t.Fatal(err)
	}
	if s.Dist != 2 {
		t.Errorf("span of far at dist %d, want 2 (B, then A)", s.Dist)
	}
	c, err := near.OpenCircuit(s.MsgID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctxFor(t)); err != nil {
		t.Fatal(err)
	}

	answer := make(chan string, 1)
	req := dmsg.NewMsg(dmsg.ProtoHM2 | 0x00001001)
	req.SetAux([]byte("hello"))
	if _, err := c.Open(req, func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagReply != 0 && len(m.Aux) > 0 {
			answer <- string(m.Aux)
		}
		if m.Cmd&dmsg.FlagDelete != 0 {
			tx.Close()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, answer); s != "hello" {
		t.Errorf("echo answered %q, want hello", s)
	}
	one := dmsg.NewMsg(dmsg.DbgShell)
	one.SetAux([]byte("one-way"))
	if err := c.SendOneWay(one); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, got.oneWay); s != "one-way" {
		t.Errorf("one-way arrived as %q", s)
	}

	if n := len(far.Accepted()); n != 1 {
		t.Fatalf("far accepted %d circuits, want 1", n)
	}
	c.Close()
	testnet.WaitChan(t, "the near end of the circuit ends", c.Done())
	testnet.WaitChan(t, "the far end of the circuit ends", far.Accepted()[0].Done())
	if err := c.Err(); err != nil {
		t.Errorf("a circuit closed normally ended with %v", err)
	}
	testnet.Eventually(t, "no circuits left open", func() error {
		if n, m := near.OpenCircuits(), far.OpenCircuits(); n+m != 0 {
			return errors.New("still open")
		}
		return nil
	})
}

func TestACircuitToANodeThatRefusesItEndsWithCantCirc(t *testing.T) {
	r := testnet.Start(t, "R", nil)
	far := dial(t, r, endpoint.Config{Conn: node("far")}) // accepts no circuit
	if _, err := far.Advertise(span("far")); err != nil {
		t.Fatal(err)
	}
	near := dial(t, r, endpoint.Config{Conn: node("near")})
	s, err := near.WaitRelay(ctxFor(t), "far")
	if err != nil {
		t.Fatal(err)
	}
	c, err := near.OpenCircuit(s.MsgID, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Wait(ctxFor(t))
	var ce *endpoint.CircuitError
	if !errors.As(err, &ce) || !ce.Refused() || ce.Code != dmsg.ErrCantCirc {
		t.Fatalf("Wait = %v, want a refusal with CANTCIRC", err)
	}
}

func TestAWithdrawnAdvertisementLeavesEveryEndpoint(t *testing.T) {
	r := testnet.Start(t, "R", nil)
	far := dial(t, r, endpoint.Config{Conn: node("far")})
	ad, err := far.Advertise(span("far"))
	if err != nil {
		t.Fatal(err)
	}
	near := dial(t, r, endpoint.Config{Conn: node("near")})
	if _, err := near.WaitRelay(ctxFor(t), "far"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the router acknowledges the advertisement", func() error {
		if !ad.State().Acked {
			return errors.New("not yet")
		}
		return nil
	})
	ad.Withdraw()
	testnet.Eventually(t, "near no longer holds far", func() error {
		if n := len(near.RelaysOf("far")); n != 0 {
			return errors.New("still held")
		}
		return nil
	})
}

func TestTheShellRunsCommandsOnTheSocketAndInsideACircuit(t *testing.T) {
	r := testnet.Start(t, "R", nil, func(c *config.Config) { c.Shell.Remote = true })
	sh, err := endpoint.DialShell(ctxFor(t), "unix", r.Socket, "tester")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	out, err := sh.Shell(ctxFor(t), "help")
	if err != nil || !strings.Contains(out, "tree") {
		t.Fatalf("help = %q, %v", out, err)
	}

	near := dial(t, r, endpoint.Config{Conn: node("near")})
	s, err := near.WaitRelay(ctxFor(t), "R")
	if err != nil {
		t.Fatal(err)
	}
	c, err := near.OpenCircuit(s.MsgID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Shell(ctxFor(t), "links"); err != nil || !strings.Contains(out, "near") {
		t.Fatalf("links inside a circuit = %q, %v", out, err)
	}

	// Output over the limit aborts the circuit rather than being held.
	c.SetShellLimit(16)
	_, err = c.Shell(ctxFor(t), "tree")
	if !errors.Is(err, endpoint.ErrOutputLimit) {
		t.Fatalf("tree with a 16-byte limit: %v, want ErrOutputLimit", err)
	}
	testnet.WaitChan(t, "the circuit over the limit ends", c.Done())
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(testnet.Timeout):
		t.Fatal("nothing arrived")
		return ""
	}
}
