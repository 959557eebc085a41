package router_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// floodPeer is the cheapest DMSG peer there is: a dmsgtest peer whose
// reader drops what it gets (or that does not read at all, to play a
// peer that does not). It pays nothing per message, so what a benchmark
// measures is the router.
type floodPeer struct {
	*dmsgtest.Peer
}

func dialFloodPeer(tb testing.TB, addr, label string, mask uint64, read bool) *floodPeer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dp, err := dmsgtest.Dial(ctx, "tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dp.Close() })
	p := &floodPeer{dp}
	c := dmsg.Conn{PeerMask: mask, PfsMask: mask, PeerType: dmsg.PeerClient, ProtoVersion: 1,
		FsLabel: label, PfsFsid: config.NodeIDFor("bench-" + label)}
	if err := p.Send(connMsg(c, false, 1)); err != nil {
		tb.Fatal(err)
	}
	if read {
		go p.Run(func(*dmsg.Msg) {})
	}
	return p
}

// spans advertises count spans with msgids from first, for the nodes
// labelled prefix0..prefix(count-1), at dist.
func (p *floodPeer) spans(tb testing.TB, prefix string, count int, first uint64, dist uint32) {
	for i := range count {
		s := hammer2Span(fmt.Sprintf("%s%d", prefix, i), "bench", 0, 1)
		s.Dist = dist
		p.write(tb, withMsgID(dmsg.NewSpanMsg(dmsg.FlagCreate, &s), first+uint64(i)))
	}
	p.flush(tb)
}

// circuits opens count LNK_CIRCs to the span msgid target.
func (p *floodPeer) circuits(tb testing.TB, count int, first, target uint64) {
	for i := range count {
		p.write(tb, withMsgID(dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target}), first+uint64(i)))
	}
	p.flush(tb)
}

func (p *floodPeer) write(tb testing.TB, m *dmsg.Msg) {
	if err := p.Write(m); err != nil {
		tb.Fatal(err)
	}
}

func (p *floodPeer) flush(tb testing.TB) {
	if err := p.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// liveHeap is the heap in use after two collections.
func liveHeap() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse)
}

// BenchmarkBudgetCosts measures what one node, one span, one relay and one
// circuit cost a running router in heap, over real sockets: the figures
// behind the default sizes of the limits: budgets (configs/dmsgd.yaml).
//
//   - B/node+span: a span for a new node (the received transaction, the
//     link, the node and its cluster entry);
//   - B/span: one more span for a node already held;
//   - B/relay: an open relay the peer has read (our transaction, the
//     relay, its selection slot);
//   - B/queued-relay: the same while its 448-byte LNK_SPAN still waits in
//     the link's outbound queue (the peer does not read);
//   - B/circuit: a circuit ending at the router (a shell endpoint);
//   - B/relayed-circuit: a circuit relayed to a target that has not
//     answered (both LNK_CIRC transactions, the circuit, its two ends).
func BenchmarkBudgetCosts(b *testing.B) {
	const n, watchers = 20000, 4
	wide := func(c *config.Config) {
		c.Limits.MaxSpansPerLink, c.Limits.MaxSpans, c.Limits.MaxNodes, c.Limits.MaxRelays = 1<<22, 1<<22, 1<<22, 1<<24
		c.Limits.MaxCircuits, c.Limits.MaxCircuitsPerLink = 1<<22, 1<<22
		// Circuits in setup reserve their queues against circuit_memory;
		// the benchmark measures what they really take.
		c.Limits.CircuitMemory = 1 << 50
		c.Limits.QueueBytesPerLink = 1 << 30
	}
	for range b.N {
		var nodeSpan, span, relay, queued, circuit, relayed float64
		func() {
			r := newRouter(b, "r", withoutKeepalive(), wide)
			wait := func(what string, cond func() bool) {
				eventually(b, what, func() error {
					if !cond() {
						return fmt.Errorf("engine %+v", r.Engine().Stats())
					}
					return nil
				})
			}
			h0 := liveHeap()
			a := dialFloodPeer(b, r.addr(), "a", 0, true)
			a.spans(b, "n", n, 2, 0)
			wait("the nodes held", func() bool { return r.Engine().Stats().Links == n+1 })
			h1 := liveHeap()
			nodeSpan = (h1 - h0) / n
			c := dialFloodPeer(b, r.addr(), "c", 0, true)
			c.spans(b, "n", n, 2, 1)
			wait("the second spans held", func() bool { return r.Engine().Stats().Links == 2*n+1 })
			h2 := liveHeap()
			span = (h2 - h1) / n
			for i := range watchers {
				dialFloodPeer(b, r.addr(), fmt.Sprintf("w%d", i), ^uint64(0), true)
			}
			// Each node goes to each watcher twice (K=2: a's and c's).
			want := 2*n*watchers + watchers // and our own advertisement to each
			wait("the relays read", func() bool { return r.Engine().Stats().Relays == want })
			h3 := liveHeap()
			relay = (h3 - h2) / float64(2*n*watchers)
			for i := range watchers {
				dialFloodPeer(b, r.addr(), fmt.Sprintf("q%d", i), ^uint64(0), false)
			}
			want += 2*n*watchers + watchers
			wait("the relays queued", func() bool { return r.Engine().Stats().Relays == want })
			h4 := liveHeap()
			queued = (h4 - h3) / float64(2*n*watchers)
		}()
		func() {
			r := newRouter(b, "r", withoutKeepalive(), wide)
			target := dialFloodPeer(b, r.addr(), "target", 0, true)
			target.spans(b, "target", 1, 2, 0)
			p := dialFloodPeer(b, r.addr(), "p", ^uint64(0), true)
			var self, far uint64
			eventually(b, "the router's own span and the target's sent to the peer", func() error {
				var ok1, ok2 bool
				self, ok1 = relayOf(r, "r")
				far, ok2 = relayOf(r, "target0")
				return errorUnless(ok1 && ok2, "not yet")
			})
			held := func(want int) {
				eventually(b, "the circuits held", func() error {
					if got := r.Circuits().Held(); got != want {
						return fmt.Errorf("%d held", got)
					}
					return nil
				})
			}
			h0 := liveHeap()
			p.circuits(b, n, 100, self)
			held(n)
			h1 := liveHeap()
			circuit = (h1 - h0) / n
			p.circuits(b, n, 100+n, far) // the target never answers: they stay in setup
			held(2 * n)
			relayed = (liveHeap() - h1) / n
		}()
		b.ReportMetric(nodeSpan, "B/node+span")
		b.ReportMetric(span, "B/span")
		b.ReportMetric(relay, "B/relay")
		b.ReportMetric(queued, "B/queued-relay")
		b.ReportMetric(circuit, "B/circuit")
		b.ReportMetric(relayed, "B/relayed-circuit")
	}
}

// relayOf returns the msgid of the one relay of the node labelled label.
func relayOf(r *testRouter, label string) (uint64, bool) {
	for _, c := range r.Engine().Snapshot().Clusters {
		for _, nd := range c.Nodes {
			if nd.FsLabel == label && len(nd.Links) == 1 && len(nd.Links[0].Relays) == 1 {
				return nd.Links[0].Relays[0].MsgID, true
			}
		}
	}
	return 0, false
}

func errorUnless(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}
