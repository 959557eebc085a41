package router_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// libdmsgConn is the LNK_CONN a libdmsg 2014+ peer sends: ROUTER, every
// peer type, nothing else set (as in testdata/dmsg-c-peer).
func libdmsgConn() dmsg.Conn {
	return dmsg.Conn{PeerType: dmsg.PeerRouter, PeerMask: ^uint64(0), ProtoVersion: 1}
}

// The router opens its LNK_CONN in the dmsgd form first, identifying
// itself, without waiting for the peer's.
func TestTheRouterSendsItsDmsgdFormLNKCONNFirst(t *testing.T) {
	r := newRouter(t, "r")
	p := dialRaw(t, r.tcpURL(), true)
	m := p.Next("the router's first message")
	if m.Cmd != dmsg.LnkConn|dmsg.FlagCreate || m.MsgID == 0 || m.Circuit != 0 {
		t.Fatalf("first message = %s msgid %016x circuit %d, want LNK_CONN|CREATE (0x1108) on circuit 0",
			dmsg.CmdString(m.Cmd), m.MsgID, m.Circuit)
	}
	c, err := m.Conn()
	if err != nil {
		t.Fatal(err)
	}
	want := dmsg.Conn{PfsFsid: config.NodeIDFor("r"), PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter,
		ProtoVersion: 1, Rnss: r.rnss(), PfsMask: ^uint64(0), FsLabel: "r",
		Caps: dmsg.CapCircWindow, CircWindow: config.DefaultCircuitWindow}
	if c != want {
		t.Errorf("router LNK_CONN = %+v\nwant %+v", c, want)
	}
}

// docs/PROTOCOL.md section 10: a peer that shows it speaks only the libdmsg
// form gets our LNK_CONN again in that form under a new msgid, and a
// refusal of that form is final.
func TestTheLNKCONNExchangeFallsBackToTheLibdmsgFormOnce(t *testing.T) {
	tests := []struct {
		name string
		// provoke makes the router fall back, given the msgid of its
		// dmsgd-form LNK_CONN; it returns whether the router must also
		// acknowledge a LNK_CONN of ours.
		provoke func(p *rawPeer, first uint64) (sentConn bool)
	}{
		{"when the peer's own LNK_CONN is the 0x1106 form", func(p *rawPeer, first uint64) bool {
			p.send(connMsg(libdmsgConn(), true, 0x1000))
			return true
		}},
		{"when the peer refuses the 0x1108 form with NOSUPP", func(p *rawPeer, first uint64) bool {
			p.send(dmsgtest.Refuse(first, dmsg.ErrNoSupp))
			return false
		}},
		{"when the peer does both, as a libdmsg shell does", func(p *rawPeer, first uint64) bool {
			p.send(connMsg(libdmsgConn(), true, 0x1000))
			p.send(dmsgtest.Refuse(first, dmsg.ErrNoSupp))
			return true
		}},
		{"when the peer's 0x1106 form arrives before the router sent anything", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, "r")
			p := dialRaw(t, r.tcpURL(), true)
			sentConn := tc.provoke == nil
			if sentConn {
				// Peers send their LNK_CONN without waiting for ours.
				p.send(connMsg(libdmsgConn(), true, 0x1000))
			}
			first := p.Expect("the router's 0x1108 LNK_CONN", isCmd(dmsg.LnkConn, dmsg.FlagCreate))
			if tc.provoke != nil {
				sentConn = tc.provoke(p, first.MsgID)
			}

			if sentConn {
				p.Expect("the acknowledgement of our LNK_CONN", func(m *dmsg.Msg) bool {
					return m.Cmd == dmsg.LnkError|dmsg.FlagCreate|dmsg.FlagReply|dmsg.FlagRevTrans && m.MsgID == 0x1000
				})
			}
			p.Rewind() // the DELETE may come before or after the acknowledgement
			p.Expect("the router closing its 0x1108 LNK_CONN", func(m *dmsg.Msg) bool {
				return m.Cmd == dmsg.LnkError|dmsg.FlagDelete && m.MsgID == first.MsgID
			})
			second := p.Expect("the 0x1106 LNK_CONN", isCmd(dmsg.LnkConnV2, dmsg.FlagCreate))
			if second.MsgID == first.MsgID || second.MsgID == 0 {
				t.Errorf("0x1106 LNK_CONN msgid %016x, want a new one (the 0x1108 had %016x)", second.MsgID, first.MsgID)
			}
			c, err := second.Conn()
			if err != nil {
				t.Fatal(err)
			}
			if c.PfsFsid != config.NodeIDFor("r") || c.FsLabel != "r" || c.PeerType != dmsg.PeerRouter || c.Rnss != r.rnss() {
				t.Errorf("0x1106 LNK_CONN = %+v, want the router's identity", c)
			}

			// Refusing the libdmsg form too ends the exchange: the router
			// closes its side and sends no third LNK_CONN.
			p.send(dmsgtest.Refuse(second.MsgID, dmsg.ErrNoSupp))
			rest := p.Barrier()
			var closed bool
			for _, m := range rest {
				if isConnCreate(m) {
					t.Errorf("a third LNK_CONN after the 0x1106 was refused: %s msgid %016x", dmsg.CmdString(m.Cmd), m.MsgID)
				}
				closed = closed || m.Cmd == dmsg.LnkError|dmsg.FlagDelete && m.MsgID == second.MsgID
			}
			if !closed {
				t.Errorf("the router did not close its refused 0x1106 LNK_CONN; after the refusal it sent:\n%s", p.Transcript())
			}
			if n := countIf(p.All(), isConnCreate); n != 2 {
				t.Errorf("the router opened %d LNK_CONNs, want 2; transcript:\n%s", n, p.Transcript())
			}
		})
	}
}

func countIf(ms []*dmsg.Msg, f func(*dmsg.Msg) bool) int {
	n := 0
	for _, m := range ms {
		if f(m) {
			n++
		}
	}
	return n
}

// A LNK_CONN carrying our own node id means we dialled ourselves (or a
// peer pretends to be us): the link is refused and closed.
func TestALinkToOurselvesIsRefused(t *testing.T) {
	t.Run("when a peer's LNK_CONN carries our node id", func(t *testing.T) {
		r := newRouter(t, "r")
		p := dialRaw(t, r.tcpURL(), true)
		c := libdmsgConn()
		c.PfsFsid = config.NodeIDFor("r")
		c.FsLabel = "impostor"
		p.send(connMsg(c, false, 0x1000))
		if err := p.WaitEnd(); !closedByRouter(err) {
			t.Errorf("link ended with %v, want EOF from the router", err)
		}
		eventually(t, "r forgets the link", func() error { return noLinks(r) })
	})
	t.Run("when the router is told to span to its own address", func(t *testing.T) {
		r := newRouter(t, "r")
		if out := r.Span(r.addr()); !strings.HasPrefix(out, "Connected to") {
			t.Logf("span to itself: %q", out)
		}
		eventually(t, "r drops both ends of the link", func() error { return noLinks(r) })
		tr := r.Tree()
		if len(tr.Clusters) != 1 || len(tr.Clusters[0].Nodes) != 1 || len(tr.Clusters[0].Nodes[0].Adverts) != 1 {
			t.Errorf("r holds more than its own advertisement: %+v", tr.Clusters)
		}
	})
}

func noLinks(r *testRouter) error {
	if ls := r.Tree().Links; len(ls) != 0 {
		return fmt.Errorf("%s links: %+v", r.label, ls)
	}
	return nil
}

// limits.max_links: a connection beyond the limit is closed at once,
// before any DMSG is exchanged, and one is accepted again once a link
// goes.
func TestAConnectionBeyondMaxLinksIsClosedAtOnce(t *testing.T) {
	r := newRouter(t, "r", withMaxLinks(2))
	l1 := dialLeaf(t, r.tcpURL(), leafConfig{Label: "l1"})
	dialLeaf(t, r.tcpURL(), leafConfig{Label: "l2"})
	eventually(t, "both leaves linked", func() error {
		for _, l := range []string{"l1", "l2"} {
			if _, err := r.LinkTo(l); err != nil {
				return err
			}
		}
		return nil
	})

	extra := dialRaw(t, r.tcpURL(), false)
	if err := extra.WaitEnd(); !closedByRouter(err) {
		t.Errorf("the third connection ended with %v, want EOF", err)
	}
	if extra.Transcript() != "" {
		t.Errorf("the refused connection received:\n%s", extra.Transcript())
	}

	l1.Close()
	eventually(t, "r forgets l1", func() error {
		if ls := r.Tree().Links; len(ls) != 1 {
			return fmt.Errorf("links %+v", ls)
		}
		return nil
	})
	again := dialRaw(t, r.tcpURL(), true)
	again.Expect("the router's LNK_CONN on a connection within the limit", isConnCreate)
}

// listenRaw listens on loopback for one connection, which accept returns
// as a raw peer: a router's outbound link to a peer the test plays.
func listenRaw(t *testing.T) (addr string, accept func() *rawPeer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			got <- nc
		}
	}()
	return ln.Addr().String(), func() *rawPeer {
		select {
		case nc := <-got:
			return startRaw(t, nc, true)
		case <-time.After(waitTimeout):
			t.Fatal("the router did not dial its target")
			return nil
		}
	}
}

// withConnForm sets the LNK_CONN form of the router's static targets.
func withConnForm(f config.ConnForm) routerOption {
	return func(c *config.Config) {
		for i := range c.Media {
			for k := range c.Media[i].Copies {
				c.Media[i].Copies[k].ConnForm = string(f)
				c.Media[i].Copies[k].Target.ConnForm = f
			}
		}
	}
}

// docs/PROTOCOL.md section 10 lets a target force either LNK_CONN form.
func TestATargetsConnFormForcesTheLNKCONNForm(t *testing.T) {
	t.Run("libdmsg sends the 0x1106 form from the start", func(t *testing.T) {
		addr, accept := listenRaw(t)
		newRouter(t, "r", withTarget(t, addr), withConnForm(config.ConnLibdmsg))
		p := accept()
		first := p.Expect("the router's LNK_CONN", isConnCreate)
		if first.Cmd != dmsg.LnkConnV2|dmsg.FlagCreate {
			t.Fatalf("first LNK_CONN is %s, want the 0x1106 form", dmsg.CmdString(first.Cmd))
		}
		if c, err := first.Conn(); err != nil || c.FsLabel != "r" {
			t.Fatalf("0x1106 LNK_CONN = %+v, %v; want the router's identity", c, err)
		}
	})
	t.Run("dmsgd never falls back", func(t *testing.T) {
		addr, accept := listenRaw(t)
		newRouter(t, "r", withTarget(t, addr), withConnForm(config.ConnDmsgd))
		p := accept()
		first := p.Expect("the router's 0x1108 LNK_CONN", isCmd(dmsg.LnkConn, dmsg.FlagCreate))
		// Both signs that would make an auto target fall back.
		p.send(connMsg(libdmsgConn(), true, 0x1000))
		p.send(dmsgtest.Refuse(first.MsgID, dmsg.ErrNoSupp))
		rest := p.Barrier()
		for _, m := range rest {
			if dmsg.Base(m.Cmd) == dmsg.LnkConnV2 {
				t.Fatalf("the router sent the 0x1106 form although conn_form is dmsgd:\n%s", p.Transcript())
			}
		}
	})
}
