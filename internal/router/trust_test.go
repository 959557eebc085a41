package router_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// dialRawTLS connects a raw peer presenting key k to a tls:// listener.
func dialRawTLS(tb testing.TB, addr string, k nodeKey) *rawPeer {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert},
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		tb.Fatalf("raw TLS peer: dial %s: %v", addr, err)
	}
	return startRaw(tb, nc, true)
}

// routerSpan is the dist-0 advertisement of the router labelled label in
// the default cluster, with rnss 0: the best possible rank.
func routerSpan(label string) dmsg.Span {
	return dmsg.Span{PfsClid: config.NodeIDFor("default"), PfsFsid: config.NodeIDFor(label),
		PeerType: dmsg.PeerRouter, ProtoVersion: 1, ClLabel: "default", FsLabel: label}
}

// advertiseRaw opens a LNK_SPAN with msgid carrying s and, if rec is not
// nil, that signed record, and returns the router's first answer to it.
func advertiseRaw(p *rawPeer, msgid uint64, s dmsg.Span, rec []byte) *dmsg.Msg {
	p.tb.Helper()
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
	m.MsgID = msgid
	if rec != nil {
		m.SetAux(rec)
	}
	p.send(m)
	return p.Expect("the answer to the LNK_SPAN", func(m *dmsg.Msg) bool {
		return m.MsgID == msgid && m.Cmd&dmsg.FlagReply != 0
	})
}

func refusedParam(m *dmsg.Msg) bool {
	return m.Cmd&dmsg.FlagDelete != 0 && m.Error == dmsg.ErrParam
}

// bestVia returns the link the router's best advertisement of the router
// node labelled label arrived on, and whether it is verified.
func (r *testRouter) bestVia(label string) (string, bool, error) {
	n := findNode(r.Tree(), "router", label)
	if n == nil || len(n.Adverts) == 0 {
		return "", false, fmt.Errorf("%s does not hold %s", r.label, label)
	}
	return n.Adverts[0].Via, n.Adverts[0].Verified, nil
}

// Without TLS nothing proves who a peer is, but a router speaks only for
// itself: a dist-0 router advertisement that does not name the router its
// LNK_CONN names is refused, and the real one stays the best.
func TestAPeerMayNotAdvertiseAnotherRouterAsItselfWithoutTLS(t *testing.T) {
	a, b := newRouter(t, "a"), newRouter(t, "b")
	connect(t, b, a)
	viaB := a.mustLinkTo("b")
	p := dialRouterPeer(t, a.tcpURL(), "mallory")
	if ans := advertiseRaw(p.rawPeer, 0x3000, routerSpan("b"), nil); !refusedParam(ans) {
		t.Fatalf("the spoof was answered %s error %s, want a refusal with PARAM", dmsg.CmdString(ans.Cmd), dmsg.ErrorString(ans.Error))
	}
	if ans := advertiseRaw(p.rawPeer, 0x3001, routerSpan("mallory"), nil); refusedParam(ans) {
		t.Fatal("the peer's own advertisement was refused")
	}
	eventually(t, "a holds mallory", func() error { return a.Holds("mallory") })
	if via, _, err := a.bestVia("b"); err != nil || via != viaB {
		t.Fatalf("a's best link of b is via %s (%v), want b's own link %s", via, err, viaB)
	}
	if out := a.Remote("b", "links"); !strings.Contains(strings.Join(out, ""), " a\n") {
		t.Fatalf("@b links went elsewhere: %q", out)
	}
}

// tlsCluster starts routers named by names, each pinning every other's key
// (so that every advertisement can be verified everywhere), linked in a
// line over TLS.
func tlsCluster(t *testing.T, names ...string) (map[string]*testRouter, map[string]nodeKey) {
	t.Helper()
	keys := make(map[string]nodeKey)
	for _, n := range names {
		keys[n] = newNodeKey(t, n)
	}
	rs := make(map[string]*testRouter)
	for _, n := range names {
		rs[n] = newRouter(t, n, withTLS(keys[n], keys))
	}
	for i := 1; i < len(names); i++ {
		connectTLS(t, rs[names[i]], rs[names[i-1]])
	}
	for _, r := range rs {
		for _, n := range names {
			eventually(t, r.label+" holds "+n+" verified", func() error {
				if _, ok, err := r.bestVia(n); err != nil || !ok {
					return fmt.Errorf("%s: verified %v, %v", n, ok, err)
				}
				return nil
			})
		}
	}
	return rs, keys
}

// listenAddr is the bound address of the router's first listener of
// scheme.
func listenAddr(r *testRouter, scheme string) string {
	for i, l := range r.Config().Listen {
		if strings.HasPrefix(l, scheme) {
			return r.Addrs()[i].String()
		}
	}
	r.tb.Fatalf("%s has no %s listener", r.label, scheme)
	return ""
}

func connectTLS(t *testing.T, from, to *testRouter) {
	t.Helper()
	if out := from.Span("span+tls:" + to.addr()); !strings.HasPrefix(out, "Connected to ") {
		t.Fatalf("%s: span+tls %s: %q", from.label, to.addr(), out)
	}
	waitLinked(t, from, to)
}

// withPeer pins one more key under name, claiming nodes.
func withPeer(name string, k nodeKey, nodes ...string) routerOption {
	return func(c *config.Config) {
		c.TLS.Peers = append(c.TLS.Peers, config.Peer{Name: name, PubKey: config.FormatPubKey(k.pub), Key: k.pub, Nodes: nodes})
	}
}

// Three routers pinning each other's keys hold each other verified, hop
// by hop; a fourth peer whose key a pins, but which may speak only for
// itself, cannot make a prefer its advertisements of the others: its
// dist-0 claim of b is refused, its own signature on c's advertisement is
// refused as forged, its unsigned copy of c is held unverified and never
// chosen nor relayed, and neither is a real record it replays.
func TestAPinnedPeerWithAValidKeyCannotSpeakForOtherRouters(t *testing.T) {
	keys := map[string]nodeKey{"a": newNodeKey(t, "a"), "b": newNodeKey(t, "b"), "c": newNodeKey(t, "c")}
	km := newNodeKey(t, "mallory")
	a := newRouter(t, "a", withTLS(keys["a"], keys), withPeer("mallory", km))
	b := newRouter(t, "b", withTLS(keys["b"], keys))
	c := newRouter(t, "c", withTLS(keys["c"], keys))
	connectTLS(t, b, a)
	connectTLS(t, c, b)
	for _, n := range []string{"b", "c"} {
		eventually(t, "a holds "+n+" verified", func() error {
			if _, ok, err := a.bestVia(n); err != nil || !ok {
				return fmt.Errorf("verified %v, %v", ok, err)
			}
			return nil
		})
	}
	viaB := a.mustLinkTo("b")

	p := dialRawTLS(t, a.addr(), km)
	conn := routerLNKConn("mallory")
	conn.Caps = dmsg.CapSignedSpans
	p.send(connMsg(conn, false, 0x1000))
	relayedC := p.spanOf("c") // a's relay of c to mallory, signed to mallory's key
	if len(relayedC.Aux) == 0 {
		t.Fatal("a relayed c to a SIGNED_SPANS peer without its record")
	}

	// Mallory's own advertisement, signed by its own key: verified.
	own := routerSpan("mallory")
	own.Rnss = 9
	rec := dmsg.ExtendSignedSpan(dmsg.SignSpan(km.priv, 1, &own), keys["a"].pub, km.priv)
	if ans := advertiseRaw(p, 0x3000, own, rec); refusedParam(ans) {
		t.Fatal("mallory's own signed advertisement was refused")
	}

	spoofB := routerSpan("b")
	spoofB.Rnss = 0
	recB := dmsg.ExtendSignedSpan(dmsg.SignSpan(km.priv, 1, &spoofB), keys["a"].pub, km.priv)
	c1 := routerSpan("c")
	c1.Dist = 1
	recC := dmsg.SignSpan(km.priv, 1, &c1)
	recC = dmsg.ExtendSignedSpan(dmsg.ExtendSignedSpan(recC, km.pub, km.priv), keys["a"].pub, km.priv)
	replay := relayedC.Aux // C -> b -> a -> mallory: not addressed to a
	replaySpan, _ := relayedC.Span()
	for _, tc := range []struct {
		name    string
		s       dmsg.Span
		rec     []byte
		refused bool
	}{
		{"a dist-0 claim of b", spoofB, nil, true},
		{"a dist-0 claim of b signed by its own key", spoofB, recB, true},
		{"c at dist 1 signed by its own key", c1, recC, true},
		{"c's real record replayed as received", replaySpan, replay, true},
		{"c at dist 1, unsigned", c1, nil, false},
	} {
		ans := advertiseRaw(p, 0x3100+uint64(len(tc.name)), tc.s, tc.rec)
		if refusedParam(ans) != tc.refused {
			t.Errorf("%s: answered %s error %s", tc.name, dmsg.CmdString(ans.Cmd), dmsg.ErrorString(ans.Error))
		}
	}
	eventually(t, "a holds mallory's unsigned copy of c", func() error {
		if n := findNode(a.Tree(), "router", "c"); n == nil || len(n.Adverts) < 2 {
			return fmt.Errorf("c: %+v", n)
		}
		return nil
	})
	tr := a.Tree()
	for _, label := range []string{"b", "c"} {
		n := findNode(tr, "router", label)
		if !n.Verified || !n.Adverts[0].Verified || n.Adverts[0].Via != viaB {
			t.Errorf("a's best of %s: %+v, want the verified one via b's link %s", label, n.Adverts[0], viaB)
		}
		for _, l := range n.Adverts[1:] {
			if l.Verified || len(l.Relays) != 0 {
				t.Errorf("a holds a copy of %s verified or relayed: %+v", label, l)
			}
		}
	}
	if n := findNode(tr, "router", "mallory"); n == nil || !n.Verified {
		t.Errorf("mallory's own advertisement: %+v", n)
	}
	if out := strings.Join(a.Remote("c", "tree"), ""); !strings.Contains(out, "(c) verified\n\tSLink msgid 0000000000000000 dist=0 via local") {
		t.Errorf("@c tree did not reach c: %q", out)
	}
	// b never hears of mallory's copy of c.
	if n := findNode(b.Tree(), "router", "c"); len(n.Adverts) != 1 {
		t.Errorf("b holds c as %+v, want only c's own link", n.Adverts)
	}
}

// On a TLS link the pinned key decides what its peer may claim, even
// when its LNK_CONN lies too: mallory, pinned as "mallory", says it is b.
func TestAPinnedKeyMayNotClaimAnotherNodeEvenInItsLNKCONN(t *testing.T) {
	rs, _ := tlsCluster(t, "a", "b")
	a := rs["a"]
	viaB := a.mustLinkTo("b")
	km := newNodeKey(t, "mallory")
	newer := *a.Config()
	newer.TLS.Peers = append(append([]config.Peer(nil), newer.TLS.Peers...),
		config.Peer{Name: "mallory", PubKey: config.FormatPubKey(km.pub), Key: km.pub})
	if _, err := a.Reload(&newer); err != nil {
		t.Fatal(err)
	}
	p := dialRawTLS(t, a.addr(), km)
	p.send(connMsg(routerLNKConn("b"), false, 0x1000))
	if ans := advertiseRaw(p, 0x3000, routerSpan("b"), nil); !refusedParam(ans) {
		t.Fatalf("mallory's claim of b answered %s", dmsg.CmdString(ans.Cmd))
	}
	if via, ok, _ := a.bestVia("b"); via != viaB || !ok {
		t.Fatalf("a's best of b is via %s verified %v", via, ok)
	}
}

// A node whose key a pins is reached by `@node` only over a verified
// advertisement: b relays c to a over a plain link, where nothing is
// signed, so a refuses `@c`; `@b`, whose key a does not pin, works.
func TestAtNodeGoesOnlyToVerifiedRoutersWhoseKeyIsPinned(t *testing.T) {
	kc := newNodeKey(t, "c")
	a := newRouter(t, "a", func(c *config.Config) {
		c.TLS.Peers = []config.Peer{{Name: "c", PubKey: config.FormatPubKey(kc.pub), Key: kc.pub}}
	})
	b := newRouter(t, "b")
	c := newRouter(t, "c")
	connect(t, b, a)
	connect(t, c, b)
	eventually(t, "a holds c", func() error { return a.Holds("c") })
	out := strings.Join(a.Remote("c", "tree"), "")
	if !strings.Contains(out, "no verified advertisement") {
		t.Fatalf("@c tree answered %q", out)
	}
	if out := strings.Join(a.Remote("b", "tree"), ""); !strings.Contains(out, "(b)\n\tSLink msgid 0000000000000000 dist=0 via local") {
		t.Fatalf("@b tree answered %q", out)
	}
}

// The links between TLS routers say who their peer is and that signed
// advertisements are in force; the tree marks verified nodes.
func TestTheTreeShowsWhoIsVerified(t *testing.T) {
	rs, _ := tlsCluster(t, "a", "b", "c")
	tr := rs["a"].Tree()
	var l *shell.Link
	for i := range tr.Links {
		if tr.Links[i].PeerLabel == "b" {
			l = &tr.Links[i]
		}
	}
	if l == nil || l.TLSPeer != "b" || !l.SignedSpans {
		t.Fatalf("a's link to b: %+v", l)
	}
	text := strings.Join(shell.TextLines(tr), "")
	for _, n := range []string{"a", "b", "c"} {
		if !strings.Contains(text, "("+n+") verified\n") {
			t.Errorf("text tree lacks %s verified:\n%s", n, text)
		}
	}
}

// A reload that unpins a key closes that peer's link, logged, and leaves
// the others up; a key pinned by a reload is accepted at once.
func TestAReloadOfTLSPeersClosesOnlyTheLinksOfRemovedKeys(t *testing.T) {
	keys := map[string]nodeKey{"a": newNodeKey(t, "a"), "b": newNodeKey(t, "b"), "x": newNodeKey(t, "x")}
	a := newRouter(t, "a", withTLS(keys["a"], keys))
	b := newRouter(t, "b", withTLS(keys["b"], keys))
	x := newRouter(t, "x", withTLS(keys["x"], keys))
	connectTLS(t, b, a)
	connectTLS(t, x, a)
	viaB := a.mustLinkTo("b")

	newer := *a.Config()
	newer.TLS.Peers = nil
	for _, p := range a.Config().TLS.Peers {
		if p.Name != "x" {
			newer.TLS.Peers = append(newer.TLS.Peers, p)
		}
	}
	changes, err := a.Reload(&newer)
	if err != nil || len(changes) != 1 || !strings.HasPrefix(changes[0], "tls.peers: changed") {
		t.Fatalf("reload: %q, %v", changes, err)
	}
	eventually(t, "x's link is closed", func() error { return a.lacks("x") })
	if got := a.mustLinkTo("b"); got != viaB {
		t.Fatalf("b's link changed from %s to %s", viaB, got)
	}
	if _, ok, err := a.bestVia("b"); !ok || err != nil {
		t.Fatalf("b after the reload: verified %v, %v", ok, err)
	}
	if out := x.Span("span+tls:" + a.addr()); strings.HasPrefix(out, "Connected to ") {
		eventually(t, "x's new link is dropped", func() error { return x.lacks("a") })
	}

	ky := newNodeKey(t, "y")
	y := newRouter(t, "y", withTLS(ky, keys))
	added := *a.Config()
	added.TLS.Peers = append(append([]config.Peer(nil), added.TLS.Peers...),
		config.Peer{Name: "y", PubKey: config.FormatPubKey(ky.pub), Key: ky.pub})
	if _, err := a.Reload(&added); err != nil {
		t.Fatal(err)
	}
	connectTLS(t, y, a)
	if got := a.mustLinkTo("b"); got != viaB {
		t.Fatalf("b's link changed from %s to %s", viaB, got)
	}
}

// A libdmsg 2014+ peer (0x1106 LNK_CONN) on a router that signs still
// exchanges spans with it, and never sees a signed record: its span
// crosses to a TLS neighbour unverified, and what it receives has no aux.
func TestALibdmsgPeerStillCarriesSpansBesideSignedLinks(t *testing.T) {
	ka, kb := newNodeKey(t, "a"), newNodeKey(t, "b")
	keys := map[string]nodeKey{"a": ka, "b": kb}
	a := newRouter(t, "a", withTLS(ka, keys), func(c *config.Config) {
		c.Listen = append(c.Listen, "tcp://127.0.0.1:0")
	})
	b := newRouter(t, "b", withTLS(kb, keys))
	if out := b.Span("span+tls:" + listenAddr(a, "tls://")); !strings.HasPrefix(out, "Connected to ") {
		t.Fatal(out)
	}
	waitLinked(t, a, b)
	plain := "tcp://" + listenAddr(a, "tcp://")
	p := dialRaw(t, plain, true)
	p.send(connMsg(libdmsgConn(), true, 0x1000))
	if ans := advertiseRaw(p, 0x2000, hammer2Span("cpfs", "h2", 1, 0x10000000), nil); refusedParam(ans) {
		t.Fatal("the C peer's span was refused")
	}
	eventually(t, "b holds the C peer's span", func() error { return b.Holds("cpfs") })
	if n := findNode(b.Tree(), "hammer2", "cpfs"); n.Verified {
		t.Fatal("an unsigned span is shown verified")
	}
	for _, label := range []string{"a", "b"} {
		m := p.spanOf(label)
		if len(m.Aux) != 0 || m.AuxBytes != 0 {
			t.Fatalf("the C peer got %s's span with %d bytes of aux", label, len(m.Aux))
		}
	}
	for _, m := range p.All() {
		// CIRC_WINDOW is offered on every link (the C peer refuses our
		// 0x1108 form unread); signed spans never on a plain one.
		if c, err := m.Conn(); err == nil && c.Caps&dmsg.CapSignedSpans != 0 {
			t.Fatalf("the C peer was offered caps %#x", c.Caps)
		}
	}
}

// A peer that keeps sending records that fail their checks (each may cost
// many signature checks) loses its link after 16; other refusals do not
// count.
func TestAPeerSendingBrokenSignedRecordsIsClosed(t *testing.T) {
	ka, km := newNodeKey(t, "a"), newNodeKey(t, "mallory")
	a := newRouter(t, "a", withTLS(ka, map[string]nodeKey{"mallory": km}), withKeepaliveTimeout(time.Minute))
	p := dialRawTLS(t, a.addr(), km)
	conn := routerLNKConn("mallory")
	conn.Caps = dmsg.CapSignedSpans
	p.send(connMsg(conn, false, 0x1000))
	p.spanOf("a")
	for i := range uint64(15) {
		own := routerSpan("mallory")
		rec := dmsg.ExtendSignedSpan(dmsg.SignSpan(km.priv, 1, &own), ka.pub, km.priv)
		rec[0x190] ^= 1 // the origin signature
		if ans := advertiseRaw(p, 0x3000+i, own, rec); !refusedParam(ans) {
			t.Fatalf("broken record %d answered %s", i, dmsg.CmdString(ans.Cmd))
		}
	}
	if err := a.Holds("mallory"); err == nil {
		t.Fatal("a holds mallory from a broken record")
	}
	own := routerSpan("mallory")
	rec := dmsg.ExtendSignedSpan(dmsg.SignSpan(km.priv, 1, &own), ka.pub, km.priv)
	rec[len(rec)-1] ^= 1
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &own)
	m.MsgID = 0x4000
	m.SetAux(rec)
	p.send(m)
	if err := p.WaitEnd(); !closedByRouter(err) {
		t.Fatalf("the link ended with %v, want the router to close it", err)
	}
}

// `@node` names a node by label alone, so an advertisement of another
// node that carries a pinned router's label must not stand in for it:
// mallory, on a plain link, advertises nodes labelled b with ids of its
// own, in b's cluster and in one that sorts first. `@b` still reaches
// the verified b, and mallory is never asked for a circuit.
func TestAtNodeIgnoresOtherNodesCarryingAPinnedRoutersLabel(t *testing.T) {
	ka, kb := newNodeKey(t, "a"), newNodeKey(t, "b")
	keys := map[string]nodeKey{"a": ka, "b": kb}
	a := newRouter(t, "a", withTLS(ka, keys), func(c *config.Config) {
		c.Listen = append(c.Listen, "tcp://127.0.0.1:0")
	})
	b := newRouter(t, "b", withTLS(kb, keys))
	if out := b.Span("span+tls:" + listenAddr(a, "tls://")); !strings.HasPrefix(out, "Connected to ") {
		t.Fatal(out)
	}
	eventually(t, "a holds b verified", func() error {
		if _, ok, err := a.bestVia("b"); err != nil || !ok {
			return fmt.Errorf("verified %v, %v", ok, err)
		}
		return nil
	})

	p := dialRouterPeer(t, "tcp://"+listenAddr(a, "tcp://"), "mallory")
	sameCluster := routerSpan("b")
	sameCluster.Dist, sameCluster.PfsFsid = 1, [16]byte{15: 1} // sorts before b's own id
	otherType := routerSpan("b")
	otherType.Dist, otherType.PeerType, otherType.PfsFsid = 1, dmsg.PeerNone, [16]byte{15: 2}
	for i, s := range []dmsg.Span{sameCluster, otherType} {
		if ans := advertiseRaw(p.rawPeer, 0x3000+uint64(i), s, nil); refusedParam(ans) {
			t.Fatalf("mallory's span %d was refused; the test needs it held", i)
		}
	}
	eventually(t, "a holds mallory's nodes labelled b", func() error {
		n := 0
		for _, c := range a.Tree().Clusters {
			for _, nd := range c.Nodes {
				if nd.Label == "b" {
					n++
				}
			}
		}
		if n != 3 {
			return fmt.Errorf("%d nodes labelled b", n)
		}
		return nil
	})
	if out := strings.Join(a.Remote("b", "links"), ""); !strings.Contains(out, " a\n") {
		t.Errorf("@b links did not reach b: %q", out)
	}
	p.Barrier()
	for _, m := range p.All() {
		if dmsg.Base(m.Cmd) == dmsg.LnkCirc {
			t.Fatalf("mallory was asked for a circuit: %s", dmsg.CmdString(m.Cmd))
		}
	}
}

// readerPauses returns dmsgd_link_reader_pauses_total{limit=limit}.
func readerPauses(t *testing.T, r *testRouter, limit string) float64 {
	t.Helper()
	mfs, err := r.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dmsgd_link_reader_pauses_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == limit {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Checking a signed record costs the receiver a signature check per hop,
// thousands of times what handling the LNK_SPAN does: the checks are
// charged to the sender's limits.link_rate, so a pinned peer sending long
// records (all valid, of nodes nobody pins) is slowed like any peer
// making the router work.
func TestSignatureChecksAreChargedToTheSendersLinkRate(t *testing.T) {
	ka, km := newNodeKey(t, "a"), newNodeKey(t, "mallory")
	a := newRouter(t, "a", withTLS(ka, map[string]nodeKey{"mallory": km}), func(c *config.Config) {
		c.Limits.LinkRate = 500 // bursts of 1000 units
	})
	p := dialRawTLS(t, a.addr(), km)
	conn := routerLNKConn("mallory")
	conn.Caps = dmsg.CapSignedSpans
	p.send(connMsg(conn, false, 0x1000))
	p.spanOf("a")
	const spans, hops = 8, dmsg.SignedMaxHops
	var path []ed25519.PrivateKey
	for range hops - 1 {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		path = append(path, k)
	}
	path = append(path, km.priv)
	for i := range uint64(spans) {
		s := routerSpan(fmt.Sprintf("far%d", i))
		s.Dist = hops - 1
		rec := dmsg.SignSpan(path[0], 1, &s)
		for h := range hops {
			to := ka.pub
			if h+1 < len(path) {
				to = path[h+1].Public().(ed25519.PublicKey)
			}
			rec = dmsg.ExtendSignedSpan(rec, to, path[h])
		}
		if ans := advertiseRaw(p, 0x3000+i, s, rec); refusedParam(ans) {
			t.Fatalf("span %d with a valid record was refused", i)
		}
	}
	for range 200 { // messages after the checks: the reader settles its bill
		p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPad}})
	}
	eventually(t, "a's reader of mallory pauses for limits.link_rate", func() error {
		if n := readerPauses(t, a, "link_rate"); n == 0 {
			return fmt.Errorf("no pause")
		}
		return nil
	})
}
