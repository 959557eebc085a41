package span

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// In a signing network a record is modelled as "origin#seq" followed by
// ">name" for every hop, name being the router the hop was sent to; the
// hop was signed by the name before it (the origin for the first). The
// daemon checks the real thing (internal/dmsg); the engine only ranks by
// what the daemon found. "forged" stands for a record whose signature
// fails.
func record(origin string, seq uint64) []byte {
	return []byte(origin + "#" + strconv.FormatUint(seq, 10))
}

// extend appends the hop its holder signs when sending it to `to`.
func extend(rec []byte, to string) []byte {
	if string(rec) == forgedRecord {
		return rec
	}
	return []byte(string(rec) + ">" + to)
}

const forgedRecord = "forged"

// judge is what the daemon of router me finds in an advertisement
// received from router from: verified when its record names the node it
// advertises and a path of as many hops as its dist says, the last sent
// to me by from; unverified without a record; forged (refused) otherwise.
// Every router knows every router's key.
func (n *network) judge(s *dmsg.Span, p *Proof, me, from string) (Proof, bool) {
	if p == nil || p.Record == nil {
		return Proof{}, false
	}
	head, path, _ := strings.Cut(string(p.Record), ">")
	origin, seq, ok := strings.Cut(head, "#")
	q, err := strconv.ParseUint(seq, 10, 64)
	hops := strings.Split(path, ">")
	signer := origin
	if len(hops) > 1 {
		signer = hops[len(hops)-2]
	}
	if !ok || err != nil || origin != s.FsLabel || uint32(len(hops)) != s.Dist+1 ||
		hops[len(hops)-1] != me || signer != from {
		return Proof{}, true
	}
	return Proof{Verified: n.signed, Seq: q, Record: p.Record}, false
}

// addForger attaches to router r a peer that advertises victim's identity
// at dist 0 with rnss 0 (so that it would win every tie) and the given
// record: nil (unsigned), forgedRecord, or a replay of a real one.
func (n *network) addForger(r int, victim string, rec []byte) *host {
	h := &host{idx: len(n.hosts), forger: true, adRec: rec}
	h.name = fmt.Sprintf("forger%d", h.idx)
	ad := routerSpan(victim)
	h.ad = &ad
	n.hosts = append(n.hosts, h)
	n.link(h.idx, r)
	return h
}

// checkTrusted adds to the invariant what signing promises: no router
// holds an unverified advertisement it got from another router (only the
// forgers' own links are unverified, and they are never relayed).
func (n *network) checkTrusted() {
	n.tb.Helper()
	n.check("with forgers")
	for _, h := range n.hosts {
		if !h.isRouter() {
			continue
		}
		for _, nd := range h.eng.nodes {
			for _, l := range nd.links {
				if l.conn == nil {
					continue
				}
				if from := l.conn.peer.(*end).peer.owner; from.isRouter() && !l.trusted() {
					n.tb.Fatalf("%s holds %s from router %s unverified: a relayed forgery", h.name, nd.key.label, from.name)
				}
			}
		}
	}
}

func TestASigningClusterPrefersVerifiedAdvertisementsEverywhere(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			n := newNetwork(t, seed, Config{})
			n.signed = true
			n.addRouters(12)
			for i := 1; i < 12; i++ { // a line with a few shortcuts
				n.link(i-1, i)
			}
			n.link(0, 6)
			n.link(3, 9)
			n.run()
			n.check("converged")
			// Forgers next to r0 and r11 claim far routers at dist 0 with
			// rnss 0: unsigned, with a bad signature, or replaying a real
			// origin block (which only the origin can extend to r11); each
			// would be the best path without verification.
			rec := func(i int) []byte { return record(routerName(i), n.hosts[i].seq) }
			n.addForger(0, "r11", nil)
			n.addForger(0, "r7", []byte(forgedRecord))
			n.addForger(11, "r1", rec(1))
			n.addForger(11, "r5", nil)
			n.run()
			n.checkTrusted()
			for _, c := range []struct{ at, victim string }{{"r0", "r11"}, {"r0", "r7"}, {"r11", "r1"}, {"r11", "r5"}} {
				h := n.hosts[mustIndex(t, c.at)]
				if best := bestOf(h, c.victim); best.conn.peer.(*end).peer.owner.forger {
					t.Fatalf("%s prefers the forger's advertisement of %s", c.at, c.victim)
				}
			}
			// A peer that once was r2's neighbour holds a record r2 really
			// sent it, and passes it on at dist 1, signing its own hop:
			// the path verifies, but once r2 has restarted and signed
			// anew, it is stale and ranks below every current one.
			old := extend(rec(2), "ex-neighbour")
			n.restart(2)
			n.run()
			ex := n.addForger(11, "r2", nil)
			ex.name, ex.adRec = "ex-neighbour", old
			ex.ad.Dist = 1
			n.run()
			n.checkTrusted()
			if best := bestOf(n.hosts[11], "r2"); best.conn.peer.(*end).peer.owner.forger {
				t.Fatal("r11 prefers the replay of r2's previous advertisement")
			}
			// Churn, then all the forgers' victims stay reachable.
			n.unlink(3, 9)
			n.unlink(5, 6)
			n.run()
			n.checkTrusted()
			n.link(5, 6)
			n.run()
			n.checkTrusted()
		})
	}
}

func TestWithoutSigningEveryAdvertisementRanksByDistanceAsBefore(t *testing.T) {
	n := newNetwork(t, 3, Config{})
	n.addRouters(4)
	for i := 1; i < 4; i++ {
		n.link(i-1, i)
	}
	n.addForger(0, "r3", nil)
	n.run()
	// The forger's dist-0 claim of r3 wins at r0, exactly as the base
	// protocol ranks it: without keys nothing can tell.
	if best := bestOf(n.hosts[0], "r3"); !best.conn.peer.(*end).peer.owner.forger {
		t.Fatal("without signing the dist-0 claim should rank first")
	}
}

func mustIndex(t *testing.T, name string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(name, "r"))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func bestOf(h *host, label string) *Advert {
	for _, nd := range h.eng.nodes {
		if nd.key.label == label {
			return nd.links[0]
		}
	}
	panic(h.name + " lacks " + label)
}

func TestAVerifiedLinkRanksAndIsRelayedBeforeNearerUnverifiedOnes(t *testing.T) {
	f := newFixture(t, Config{MaxRelays: 2})
	_, src := f.conn("src", allOf)
	_, src2 := f.conn("src2", allOf)
	dst, _ := f.conn("dst", allOf)
	f.msgid++
	far, err := f.e.SpanReceivedWith(src, f.msgid, rspan("n", 3, 50), Proof{Verified: true, Seq: 9, Record: []byte("r")})
	if err != nil {
		t.Fatal(err)
	}
	near := f.recv(src2, rspan("n", 0, 0))
	if got := dst.got(); len(got) != 1 || got[0] != "n@4" {
		t.Fatalf("dst holds %v, want only the verified link relayed (dist 4)", got)
	}
	nd := f.e.Snapshot().Clusters[0].Nodes[0]
	if !nd.Verified || !nd.Links[0].Verified || nd.Links[0].Dist != 3 || nd.Links[1].Verified {
		t.Fatalf("snapshot %+v, want the verified link first and marked", nd)
	}
	var tx *fakeTx
	for _, x := range dst.open {
		tx = x
	}
	if p := tx.relay.Proof(); string(p.Record) != "r" {
		t.Fatalf("the relay carries proof %+v", p)
	}

	// The key is no longer pinned: nothing is verified, (dist, rnss) rules.
	f.e.Reverify(func(_ dmsg.Span, p Proof) Proof { p.Verified = false; return p })
	if got := dst.got(); len(got) != 2 || got[0] != "n@1" && got[1] != "n@1" {
		t.Fatalf("after Reverify dst holds %v, want both, the nearer first", got)
	}
	if nd := f.e.Snapshot().Clusters[0].Nodes[0]; nd.Verified || nd.Links[0].Dist != 0 {
		t.Fatalf("after Reverify %+v", nd)
	}
	f.e.SpanWithdrawn(near)
	f.e.SpanWithdrawn(far)
	f.wantStats(Stats{Conns: 3})
}

func TestOurOwnAdvertisementIsSignedAsItIsSent(t *testing.T) {
	self := rspan("me", 7, 99)
	var signed []dmsg.Span
	f := newFixture(t, Config{Rnss: 1234, Self: &self, SignSelf: func(s dmsg.Span) Proof {
		signed = append(signed, s)
		return Proof{Verified: true, Seq: 1, Record: []byte("me")}
	}})
	dst, _ := f.conn("dst", allOf)
	tx := dst.only(t)
	if len(signed) != 1 || signed[0].Dist != 0 || signed[0].Rnss != 1234 || string(tx.relay.Proof().Record) != "me" {
		t.Fatalf("signed %+v, relay proof %+v", signed, tx.relay.Proof())
	}
	if nd := f.e.Snapshot().Clusters[0].Nodes[0]; !nd.Verified {
		t.Fatal("our own signed advertisement is not shown verified")
	}
	f.e.SetSelf(&self) // unchanged: not signed again
	if len(signed) != 1 {
		t.Fatalf("signed %d times", len(signed))
	}
}
