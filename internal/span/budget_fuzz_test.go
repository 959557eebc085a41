package span

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// FuzzBudget drives one engine with tight budgets through any sequence of
// neighbors coming and going, spans arriving and leaving, peers refusing
// relays and reloads, and checks after every step that the engine's
// bookkeeping holds: what each neighbor is charged for matches what it
// holds, nothing exceeds a budget, every relay is of a live link the
// neighbor may carry, and a pair short of relays waits for budget.
// Everything returns to zero at the end.
func FuzzBudget(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 2, 0, 1, 0, 2, 0, 2, 0, 2, 1, 3, 0, 4, 0, 1, 1})
	f.Add([]byte{0, 0, 0, 1, 0, 1, 2, 0, 0, 0, 2, 0, 1, 1, 2, 1, 2, 2, 2, 2, 5, 3, 2, 0, 3, 2, 1, 0, 4, 1})
	f.Add([]byte{0, 2, 0, 0, 2, 1, 3, 0, 2, 1, 4, 1, 2, 1, 5, 1, 2, 1, 6, 1, 5, 0, 3, 1, 1, 1, 2, 2, 7, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 600 {
			return
		}
		z := newFuzzEngine(t)
		for i := 0; i+1 < len(ops); i += 2 {
			z.step(ops[i], ops[i+1])
			z.check(fmt.Sprintf("after op %d (%d %d)", i/2, ops[i], ops[i+1]))
		}
		z.finish()
	})
}

type fuzzEngine struct {
	t      *testing.T
	e      *Engine
	h      *host
	peers  []*fakePeer
	conns  []*Neighbor
	links  []*Advert
	msgid  uint64
	cfg    Config
	relays int // charged relays open after the last step
}

func newFuzzEngine(t *testing.T) *fuzzEngine {
	cfg := Config{MaxRelays: 2, Rnss: 1000, Self: ptr(rspan("me", 0, 0)),
		MaxSpansPerConn: 6, Budget: Budget{MaxNodes: 6, MaxSpans: 10, MaxRelays: 8, MaxSpansPerNode: 2}}
	e := New(cfg)
	return &fuzzEngine{t: t, e: e, h: &host{name: "fz", eng: e}, cfg: cfg}
}

func (z *fuzzEngine) step(op, arg byte) {
	switch op % 6 {
	case 0: // a neighbor comes up, as a leaf or a router, asking for all or nothing
		if len(z.conns) >= 6 {
			return
		}
		info := dmsg.Conn{PeerType: dmsg.PeerHammer2}
		if arg&1 != 0 {
			info.PeerType = dmsg.PeerRouter
		}
		if arg&2 == 0 {
			info.PeerMask = ^uint64(0)
		}
		p := newPeer(fmt.Sprintf("c%d", len(z.peers)))
		z.peers = append(z.peers, p)
		z.conns = append(z.conns, z.e.ConnUp(p, info))
	case 1: // a neighbor goes
		if c := pick(z.conns, arg); c != nil {
			z.e.ConnDown(c)
			i := slices.Index(z.conns, c)
			z.conns = slices.Delete(z.conns, i, i+1)
			z.links = slices.DeleteFunc(z.links, func(l *Advert) bool { return l.conn == c })
		}
	case 2: // a span arrives: one of 8 nodes, at one of 4 dists
		if c := pick(z.conns, arg>>3); c != nil {
			z.msgid++
			l, err := z.e.SpanReceived(c, z.msgid, rspan(fmt.Sprintf("n%d", arg&7), uint32(arg>>6), uint32(arg)))
			if err == nil {
				z.links = append(z.links, l)
			} else if Limit(err) == "" {
				z.t.Fatalf("SpanReceived: %v", err)
			}
		}
	case 3: // a span leaves
		if l := pick(z.links, arg); l != nil {
			z.e.SpanWithdrawn(l)
			i := slices.Index(z.links, l)
			z.links = slices.Delete(z.links, i, i+1)
		}
	case 4: // a peer refuses one of our relays
		if p := pick(z.peers, arg); p != nil {
			ids := make([]uint64, 0, len(p.open))
			for id := range p.open {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			if id, ok := pickOK(ids, arg>>3); ok {
				z.e.RelayClosed(p.open[id].relay)
			}
		}
	case 5: // a reload changes the relay budget (0 lifts it)
		cfg := z.cfg
		cfg.Budget.MaxRelays = int(arg % 12)
		if err := z.e.Reconfigure(cfg); err != nil {
			z.t.Fatal(err)
		}
	}
}

func pick[T any](xs []T, arg byte) T {
	x, _ := pickOK(xs, arg)
	return x
}

func pickOK[T any](xs []T, arg byte) (T, bool) {
	var zero T
	if len(xs) == 0 {
		return zero, false
	}
	return xs[int(arg)%len(xs)], true
}

func (z *fuzzEngine) check(when string) {
	z.t.Helper()
	e := z.e
	e.mu.Lock()
	var v violations
	checkTree(z.h, &v)
	checkCharges(z.h, &v)
	lim := e.budget.limits()
	if len(e.nodes) > lim.MaxNodes || int(e.budget.spans.Load()) > lim.MaxSpans {
		v.add("%d nodes %d spans held, budgets %d %d", len(e.nodes), e.budget.spans.Load(), lim.MaxNodes, lim.MaxSpans)
	}
	// A reload may lower the relay budget below what is open: nothing is
	// evicted, but nothing more opens until relays fall under it.
	relays := chargedRelays(e)
	if lim.MaxRelays > 0 && relays > lim.MaxRelays && relays > z.relays {
		v.add("%d relays open, budget %d, and %d before: grew while over budget", relays, lim.MaxRelays, z.relays)
	}
	z.relays = relays
	for _, c := range e.conns {
		for id, r := range c.sent {
			p := c.peer.(*fakePeer)
			if tx := p.open[id]; tx == nil || tx.relay != r || tx.closed {
				v.add("relay %d on %s is not open at the peer", id, p.id)
			}
		}
		if len(c.peer.(*fakePeer).open) != len(c.sent) {
			v.add("%s: peer holds %d relays, engine %d", c.peer.ID(), len(c.peer.(*fakePeer).open), len(c.sent))
		}
	}
	e.mu.Unlock()
	if len(v) > 0 {
		z.t.Fatalf("%s:\n  %s", when, strings.Join(v, "\n  "))
	}
}

func (z *fuzzEngine) finish() {
	for _, c := range z.conns {
		z.e.ConnDown(c)
	}
	z.e.SetSelf(nil)
	if st := z.e.Stats(); st != (Stats{}) {
		z.t.Fatalf("engine holds %+v after every connection went", st)
	}
	if n := z.e.budget.spans.Load(); n != 0 {
		z.t.Fatalf("engine still counts %d spans", n)
	}
	for _, p := range z.peers {
		if len(p.open) != 0 {
			z.t.Fatalf("%s still holds relays %v", p.id, p.got())
		}
	}
}
