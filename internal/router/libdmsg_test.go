package router_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// cPeer plays the libdmsg 2014+ service on a raw link: it sends its
// LNK_CONN in the 0x1106 form, refuses the router's 0x1108 form and
// acknowledges its 0x1106 one, as testdata/dmsg-c-peer shows, then
// advertises a node of its own. It has no LNK_CIRC: the real service dies
// on one (msg.c:2444), so the test fails if anything of a circuit reaches
// it.
func dialCPeer(t *testing.T, r *testRouter, node string) *rawPeer {
	t.Helper()
	p := dialRaw(t, r.tcpURL(), true)
	p.send(connMsg(libdmsgConn(), true, 0x1000))
	first := p.Expect("the router's 0x1108 LNK_CONN", isCmd(dmsg.LnkConn, dmsg.FlagCreate))
	p.send(dmsgtest.Refuse(first.MsgID, dmsg.ErrNoSupp))
	p.Rewind()
	second := p.Expect("the router's 0x1106 LNK_CONN", isCmd(dmsg.LnkConnV2, dmsg.FlagCreate))
	p.send(dmsgtest.Ack(second.MsgID))
	s := hammer2Span(node, "c-cluster", 1, 5)
	ad := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
	ad.MsgID = 0x2000
	p.send(ad)
	p.Rewind()
	p.Expect("the router's acknowledgement of the span", func(m *dmsg.Msg) bool {
		return m.MsgID == 0x2000 && m.Cmd&dmsg.FlagReply != 0 && m.Cmd&dmsg.FlagCreate != 0
	})
	return p
}

// noCircuitTraffic fails the test if the C peer was sent a LNK_CIRC or
// any message on a circuit.
func noCircuitTraffic(t *testing.T, p *rawPeer) {
	t.Helper()
	p.Barrier()
	for _, m := range p.All() {
		if dmsg.Base(m.Cmd) == dmsg.LnkCirc || m.Circuit != 0 {
			t.Fatalf("the libdmsg peer was sent %s circuit %d; transcript:\n%s", dmsg.CmdString(m.Cmd), m.Circuit, p.Transcript())
		}
	}
}

// openCircuit opens a LNK_CIRC from leaf l toward the span msgid and
// returns a function waiting for its end's error (0 once accepted and
// closed without one).
func openCircuit(t *testing.T, l *leaf, spanID uint64) func() uint32 {
	t.Helper()
	c, err := l.OpenCircuit(spanID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() uint32 {
		t.Helper()
		waitChan(t, "the LNK_CIRC answered with its end", c.Done())
		_, code := c.End()
		return code
	}
}

// docs/PROTOCOL.md section 10: the libdmsg 2014+ service has no LNK_CIRC. A
// circuit toward a span it advertised is refused with CANTCIRC by the
// router next to it, whether the LNK_CIRC comes from a leaf of that
// router or through another router, and `@node` does not try; nothing
// of a circuit ever reaches the C peer.
func TestCircuitsTowardALibdmsgPeerAreRefusedByTheRouter(t *testing.T) {
	r1 := newRouter(t, "r1")
	r2 := newRouter(t, "r2")
	connect(t, r1, r2)
	c := dialCPeer(t, r1, "cnode")

	for _, tc := range []struct {
		name string
		r    *testRouter
	}{
		{"from a leaf of the router the C peer is linked to", r1},
		{"through another router", r2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := dialLeaf(t, tc.r.tcpURL(), leafConfig{Label: "asker-" + tc.r.label})
			got := l.waitSpans("cnode", 1)
			end := openCircuit(t, l, got[0].MsgID)
			if code := end(); code != dmsg.ErrCantCirc {
				t.Fatalf("the LNK_CIRC ended with %s, want CANTCIRC", dmsg.ErrorString(code))
			}
			eventually(t, "no circuit left", func() error {
				for _, r := range []*testRouter{r1, r2} {
					if cs := r.Tree().Circuits; len(cs) != 0 {
						return fmt.Errorf("%s relays %+v", r.label, cs)
					}
				}
				return nil
			})
			noCircuitTraffic(t, c)
		})
	}

	t.Run("@node from the router the C peer is linked to", func(t *testing.T) {
		out := strings.Join(r1.Remote("cnode", "help"), "")
		if !strings.Contains(out, "libdmsg") {
			t.Fatalf("@cnode help at r1 = %q, want a refusal naming libdmsg", out)
		}
		noCircuitTraffic(t, c)
	})
	t.Run("@node through another router", func(t *testing.T) {
		out := strings.Join(r2.Remote("cnode", "help"), "")
		if !strings.Contains(out, "CANTCIRC") {
			t.Fatalf("@cnode help at r2 = %q, want the circuit refused with CANTCIRC", out)
		}
		noCircuitTraffic(t, c)
	})
	t.Run("the refusals are counted", func(t *testing.T) {
		if v, _ := sample(t, r1.Metrics().Registry(), "dmsgd_circuits_refused_total",
			map[string]string{"reason": "libdmsg_next_hop"}); v != 3 {
			t.Fatalf("r1 counted %v circuits refused toward the libdmsg peer, want 3", v)
		}
	})
}
