package router_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// signedSource starts router a holding n signed advertisements (nodes n0
// to n<n-1>, cluster "bench") that a SIGNED_SPANS peer keyed src sent it,
// and returns a with its tls:// address, its key and the key of a pinned
// peer, dst, that a relays them to.
func signedSource(tb testing.TB, n int) (a *testRouter, tlsAddr string, ka, kd nodeKey) {
	tb.Helper()
	ks := newNodeKey(tb, "src")
	ka, kd = newNodeKey(tb, "a"), newNodeKey(tb, "dst")
	a = newRouter(tb, "a", withTLS(ka, map[string]nodeKey{"dst": kd}), withPeer("src", ks, "*"), func(c *config.Config) {
		c.Listen = append(c.Listen, "tcp://127.0.0.1:0")
		c.Limits.LinkRate = 1 << 30 // the source's records are checked at full speed
	})
	tlsAddr = listenAddr(a, "tls://")
	src := dialRawTLS(tb, tlsAddr, ks)
	conn := routerLNKConn("src")
	conn.Caps = dmsg.CapSignedSpans
	src.send(connMsg(conn, false, 0x1000))
	src.spanOf("a")
	for i := range n {
		s := hammer2Span(fmt.Sprintf("n%d", i), "bench", 0, 1)
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 0x10000 + uint64(i)
		m.SetAux(dmsg.ExtendSignedSpan(dmsg.SignSpan(ks.priv, 1, &s), ka.pub, ks.priv))
		src.send(m)
	}
	eventually(tb, "a holds every signed advertisement", func() error {
		if got := a.Engine().Stats().Nodes; got < n+1 { // the bench nodes and a
			return fmt.Errorf("%d nodes", got)
		}
		return nil
	})
	return a, tlsAddr, ka, kd
}

// dialSigned connects a raw peer keyed k, labelled label, with signed
// advertisements in force.
func dialSigned(tb testing.TB, addr, label string, k nodeKey) *rawPeer {
	tb.Helper()
	p := dialRawTLS(tb, addr, k)
	conn := routerLNKConn(label)
	conn.Caps = dmsg.CapSignedSpans
	p.send(connMsg(conn, false, 0x1000))
	return p
}

// signedRelaysSeen counts the signed LNK_SPANs the router opened toward
// p, from message from on.
func signedRelaysSeen(p *rawPeer, from int) int {
	n := 0
	for _, m := range p.All()[from:] {
		if isCmd(dmsg.LnkSpan, dmsg.FlagCreate)(m) && len(m.Aux) > 0 {
			n++
		}
	}
	return n
}

// checkRelayedRecords waits for n signed relays of the bench nodes on p
// and checks each record as p, keyed me, would: sent to it by from.
func checkRelayedRecords(t *testing.T, p *rawPeer, n int, me, from nodeKey) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d signed relays", n), func() error {
		if got := signedRelaysSeen(p, 0); got < n {
			return fmt.Errorf("%d", got)
		}
		return nil
	})
	for _, m := range p.All() {
		if !isCmd(dmsg.LnkSpan, dmsg.FlagCreate)(m) || len(m.Aux) == 0 {
			continue
		}
		s, _ := m.Span()
		rec, err := dmsg.ParseSignedSpan(m.Aux)
		if err == nil {
			err = rec.Check(&s, me.pub, from.pub)
		}
		if err != nil {
			t.Errorf("relay of %s: %v", s.FsLabel, err)
		}
	}
}

func TestRelayHopsAreSignedOutsideTheSpanEngineLock(t *testing.T) {
	const n = 8
	a, addr, ka, kd := signedSource(t, n)
	// Whenever a hop is signed, the engine must be free: Stats takes its
	// mutex, which OpenSpan's caller holds.
	var probes, stuck atomic.Int32
	a.OnHopSign(func() {
		if probes.Add(1); stuck.Load() > 0 {
			return // once is proof enough
		}
		done := make(chan struct{})
		go func() { a.Engine().Stats(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			stuck.Add(1)
		}
	})
	dst := dialSigned(t, addr, "dst", kd)
	defer dst.Close()
	checkRelayedRecords(t, dst, n+1, kd, ka) // the bench nodes and a itself
	if probes.Load() == 0 {
		t.Fatal("no hop was signed")
	}
	if k := stuck.Load(); k > 0 {
		t.Fatalf("%d of %d hops were signed while the span engine's lock was held", k, probes.Load())
	}
}

func TestHopsSignedForAPeerAreCopiedWhenItsLinkComesBack(t *testing.T) {
	const n = 8
	a, addr, ka, kd := signedSource(t, n)
	dst := dialSigned(t, addr, "dst", kd)
	checkRelayedRecords(t, dst, n+1, kd, ka)
	signed, reused := a.HopSignatures()
	if signed < n+1 {
		t.Fatalf("%d hops signed for %d relays", signed, n+1)
	}
	dst.Close()
	eventually(t, "dst's link gone", func() error {
		if _, err := a.LinkTo("dst"); err == nil {
			return fmt.Errorf("still up")
		}
		return nil
	})

	dst = dialSigned(t, addr, "dst", kd)
	defer dst.Close()
	checkRelayedRecords(t, dst, n+1, kd, ka)
	signed2, reused2 := a.HopSignatures()
	if signed2 != signed || reused2-reused < n+1 {
		t.Fatalf("the same records to the same key again: %d more hops signed, %d copied; want 0 and %d",
			signed2-signed, reused2-reused, n+1)
	}
}
