package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// Attacks on the state the router keeps for the cluster: spans, nodes,
// relays and circuits.

// (c) Many links each advertise many distinct nodes. Every one is a node
// the router keeps and relays on every other link: without a bound over
// all links, a handful of peers make it hold millions of relays.
func TestAttackManyLinksAdvertisingManySpans(t *testing.T) {
	sc := currentScale()
	links, perLink := sc.pick(8, 16), sc.pick(5000, 62_500)
	runAttack(t, attackSpec{
		name: "(c) many links, many spans",
		limits: sc.limits(map[string]string{
			"max_spans": "2000", "max_nodes": "2000", "max_relays": "8000",
		}),
		budget: sc.budget(1 * gib),
		run: func(e *attackEnv) {
			var wg sync.WaitGroup
			res := make([]floodResult, links)
			for i := range links {
				wg.Go(func() {
					res[i] = floodSpans(e, source(10+i), fmt.Sprintf("flood%d", i), uint32(i), perLink)
				})
			}
			wg.Wait()
			var total floodResult
			for _, r := range res {
				total.add(r)
			}
			held := -1.0
			if m, err := e.tg.scrape(); err == nil {
				held = m["dmsgd_span_links"]
			}
			e.notef("%d links sent %d spans: %d accepted, %d refused, %d links closed by the router; the router holds %.0f spans",
				links, total.sent, total.accepted, total.refused, total.closed, held)
			if total.refused == 0 && total.closed == 0 {
				e.t.Errorf("all %d spans of %d links accepted: nothing bounds spans over all links", total.sent, links)
			}
			e.holdWindow()
		},
	})
}

// floodResult counts what one flooding link saw.
type floodResult struct {
	sent, accepted, refused, closed int
}

func (r *floodResult) add(o floodResult) {
	r.sent += o.sent
	r.accepted += o.accepted
	r.refused += o.refused
	r.closed += o.closed
}

// floodAnswered flushes what a flood wrote (unless writing failed: err)
// and waits until the router has answered all sent requests, the link is
// closed (its reader ends on done) or the attack stops, and returns what
// the router did with them.
func (e *attackEnv) floodAnswered(p *dmsgtest.Peer, err error, sent int, accepted, refused *atomic.Int64, done <-chan error) floodResult {
	if err == nil {
		err = p.Flush()
	}
	r := floodResult{sent: sent}
	var readErr error
	for readErr == nil && err == nil && int(accepted.Load()+refused.Load()) < sent && !e.stopping() {
		select {
		case readErr = <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if dmsgtest.ClosedByFarEnd(readErr) || dmsgtest.ClosedByFarEnd(err) {
		r.closed = 1
	}
	r.accepted, r.refused = int(accepted.Load()), int(refused.Load())
	return r
}

// floodSpans advertises n distinct nodes from one link, reading (and
// answering, so that keepalive holds) what the router sends, until every
// span is answered or the link is closed. The link stays open until the
// attack ends.
func floodSpans(e *attackEnv, from, prefix string, linkNo uint32, n int) floodResult {
	p, err := e.dialAttacker(from, false)
	if err != nil {
		e.t.Error(err)
		return floodResult{}
	}
	var accepted, refused atomic.Int64
	var pl politeness
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(m *dmsg.Msg) {
			pl.handle(p, m)
			if m.Cmd&dmsg.FlagReply == 0 || m.MsgID < 10 || m.Circuit != 0 {
				return
			}
			switch {
			case m.Cmd&dmsg.FlagDelete != 0:
				refused.Add(1)
			case m.Cmd&dmsg.FlagCreate != 0:
				accepted.Add(1)
			}
		})
	}()
	err = p.Write(leafConn(1, prefix, dmsg.PeerHammer2, ^uint64(0)))
	sent := 0
	for ; sent < n && err == nil && !e.stopping(); sent++ {
		err = writeFlushing(p, sent%512 == 511, advertSpan(uint64(10+sent), fmt.Sprintf("%s-%d", prefix, sent), seqID(4, linkNo, uint32(sent)), 0))
	}
	return e.floodAnswered(p, err, sent, &accepted, &refused, done)
}

// holdWindow keeps what the attack built in place until the measured
// window is over.
func (e *attackEnv) holdWindow() {
	for time.Since(e.start) < e.sc.window && !e.stopping() {
		time.Sleep(100 * time.Millisecond)
	}
}

// (f) A peer opens circuits to the router's own node, far beyond
// max_circuits: circuits that end at the router count like any other.
func TestAttackCircuitsToTheRouterItself(t *testing.T) {
	sc := currentScale()
	maxCircuits, total := sc.pick(64, 65536), sc.pick(1000, 200_000)
	runAttack(t, attackSpec{
		name: "(f) circuits to the router itself",
		limits: sc.limits(map[string]string{
			"max_circuits": fmt.Sprint(maxCircuits), "max_circuits_per_link": fmt.Sprint(maxCircuits),
		}),
		budget: sc.budget(1 * gib),
		run: func(e *attackEnv) {
			r := floodCircuits(e, source(2), total)
			e.notef("%d LNK_CIRCs to the router's own span: %d accepted, %d refused, link closed: %v",
				r.sent, r.accepted, r.refused, r.closed > 0)
			if r.accepted > maxCircuits {
				e.t.Errorf("%d circuits to the router itself accepted; max_circuits is %d", r.accepted, maxCircuits)
			}
			if r.accepted+r.refused < r.sent && r.closed == 0 {
				e.t.Errorf("%d of %d LNK_CIRCs neither accepted nor refused", r.sent-r.accepted-r.refused, r.sent)
			}
			e.holdWindow()
		},
	})
}

// floodCircuits opens n circuits on the router's own advertisement and
// waits until each is answered or the link is closed.
func floodCircuits(e *attackEnv, from string, n int) floodResult {
	p, err := e.dialAttacker(from, false)
	if err != nil {
		e.t.Fatal(err)
	}
	self := make(chan uint64, 1)
	var accepted, refused atomic.Int64
	var pl politeness
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(m *dmsg.Msg) {
			create, _ := pl.handle(p, m)
			if create && dmsg.Base(m.Cmd) == dmsg.LnkSpan {
				if s, err := m.Span(); err == nil && s.FsLabel == "target" && s.Dist == 0 {
					select {
					case self <- m.MsgID:
					default:
					}
				}
			}
			if m.Cmd&dmsg.FlagReply == 0 || m.MsgID < 1000 || m.Circuit != 0 {
				return
			}
			switch {
			case m.Cmd&dmsg.FlagDelete != 0 && m.Cmd&dmsg.FlagCreate != 0:
				refused.Add(1)
			case m.Cmd&dmsg.FlagCreate != 0:
				accepted.Add(1)
			}
		})
	}()
	if err = p.Send(leafConn(1, "circuit-opener", dmsg.PeerHammer2, ^uint64(0))); err != nil {
		e.t.Fatal(err)
	}
	var target uint64
	select {
	case target = <-self:
	case <-time.After(e.sc.liveness):
		e.t.Fatal("the router's own span did not arrive")
	}
	sent := 0
	for ; sent < n && err == nil && !e.stopping(); sent++ {
		m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target})
		m.MsgID = uint64(1000 + sent)
		err = writeFlushing(p, sent%512 == 511, m)
	}
	return e.floodAnswered(p, err, sent, &accepted, &refused, done)
}
