package span

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

var benchSizes = []int{10, 100, 1000}

// converged keeps the last converged random network of each size so the
// add/withdraw benchmark need not converge 1000 routers a second time.
var converged = map[int]*network{}

// BenchmarkConvergence measures how long N routers that all come up at once
// take to settle, and how many messages they send doing it.
func BenchmarkConvergence(b *testing.B) {
	topologies := []struct {
		name  string
		build func(b *testing.B, n int) *network
	}{
		{"line", func(b *testing.B, n int) *network { return lineNet(b, n, 1, Config{}) }},
		{"random3", func(b *testing.B, n int) *network { return randomNet(b, n, 3, 1, Config{}) }},
	}
	for _, topo := range topologies {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/N=%d", topo.name, size), func(b *testing.B) {
				msgs := 0
				for range b.N {
					b.StopTimer()
					n := topo.build(b, size)
					n.maxSteps = 1 << 40
					b.StartTimer()
					n.run()
					msgs += n.sent
					if topo.name == "random3" {
						converged[size] = n
					}
				}
				b.ReportMetric(float64(msgs)/float64(b.N), "msgs/op")
			})
		}
	}
}

// BenchmarkSpanAddWithdraw measures one span added and withdrawn at one
// router that already holds N nodes of a converged random network. The
// router's relays go to a sink (counted, not delivered), so this is the
// engine's own cost per event: it must not grow with N.
func BenchmarkSpanAddWithdraw(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", size), func(b *testing.B) {
			n, r := isolatedRouter(b, size)
			c := r.ends[0].conn
			s := leafSpan("bench-leaf")
			s.Dist = 1
			n.sink = true
			defer func() { n.sink = false }()
			before := n.sent
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				l, err := r.eng.SpanReceived(c, 1<<40+uint64(i), s)
				if err != nil {
					b.Fatal(err)
				}
				r.eng.SpanWithdrawn(l)
			}
			b.ReportMetric(float64(n.sent-before)/float64(b.N), "msgs/op")
			b.ReportMetric(float64(r.eng.Stats().Nodes), "nodes")
		})
	}
}

// isolated keeps the routers isolatedRouter made: the benchmark body runs
// once per b.N and per -count, and converging 1000 routers takes minutes.
var isolated = map[int]*network{}

// isolatedRouter converges a random network of size routers (or takes the
// one BenchmarkConvergence left) and keeps only one router of degree 3.
func isolatedRouter(b *testing.B, size int) (*network, *host) {
	n := isolated[size]
	if n == nil {
		n = converged[size]
		delete(converged, size)
		if n == nil {
			n = randomNet(b, size, 3, 1, Config{})
			n.maxSteps = 1 << 40
			n.run()
		}
		isolate(n, degree3Router(n))
		isolated[size] = n
	}
	return n, degree3Router(n)
}

// sinkPeer accepts relays without keeping them.
type sinkPeer struct {
	id   string
	next uint64
}

type sinkTx uint64

func (t sinkTx) MsgID() uint64 { return uint64(t) }
func (sinkTx) Close()          {}

func (p *sinkPeer) ID() string { return p.id }

func (p *sinkPeer) OpenSpan(*dmsg.Span, *Relay) (SpanTx, error) {
	p.next++
	return sinkTx(p.next), nil
}

// BenchmarkMemoryPerSpan reports the bytes allocated per received span
// (B/op) and the bytes still held per span once the garbage is collected
// (retained-B/span), alone and with relays to other neighbors, and on a
// router whose source link came up after 30 others that take nothing
// (shell clients, say): a node's state must not cost it a slot per link.
func BenchmarkMemoryPerSpan(b *testing.B) {
	cases := []struct{ relayTo, idle int }{{0, 0}, {2, 0}, {2, 30}}
	for _, tc := range cases {
		name := fmt.Sprintf("relayed-to=%d", tc.relayTo)
		if tc.idle > 0 {
			name += fmt.Sprintf("/after-%d-idle-links", tc.idle)
		}
		relayTo := tc.relayTo
		b.Run(name, func(b *testing.B) {
			e := New(Config{Rnss: 1})
			for i := range tc.idle {
				e.ConnUp(&sinkPeer{id: fmt.Sprint("idle", i)}, dmsg.Conn{PeerMask: 0})
			}
			src := e.ConnUp(&sinkPeer{id: "src"}, dmsg.Conn{})
			for i := range relayTo {
				e.ConnUp(&sinkPeer{id: fmt.Sprint("dst", i)}, allOf)
			}
			spans := make([]dmsg.Span, b.N)
			for i := range spans {
				spans[i] = rspan(fmt.Sprint("node-", i), 1, 0)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := e.SpanReceived(src, uint64(i+1), spans[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			spans = nil
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "retained-B/span")
			runtime.KeepAlive(e)
		})
	}
}

// degree3Router picks a router with three links, so that the messages per
// event compare across sizes.
func degree3Router(n *network) *host {
	for _, h := range n.hosts {
		if len(h.ends) == 3 {
			return h
		}
	}
	return n.router(0)
}

// isolate drops every engine but r's, as a real process holds only its own:
// otherwise the other routers' state fills the caches and the heap, and the
// benchmark would measure the simulation rather than one router.
func isolate(n *network, r *host) {
	for _, h := range n.hosts {
		if h == r {
			continue
		}
		h.eng = nil
		for _, x := range h.ends {
			x.conn = nil
			clear(x.sent)
			clear(x.recv)
		}
	}
	runtime.GC()
}
