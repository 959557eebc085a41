package e2e

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// (h) A flood of things the router must refuse, of three kinds: spans past
// max_spans_per_link, circuits to spans that do not exist, connections
// past max_links. Every refusal because of a limit is counted in
// dmsgd_limit_refusals_total, but the log says each kind once per link and
// window with a count: it stays under 200 lines a minute (the common
// checks assert that), however many there are.
func TestAttackRefusalFloodKeepsTheLogQuiet(t *testing.T) {
	sc := currentScale()
	perLink, maxLinks := sc.pick(64, 65536), sc.pick(16, 1024)
	spans, circuits, conns := sc.pick(5000, 50_000), sc.pick(5000, 50_000), sc.pick(300, 5000)
	runAttack(t, attackSpec{
		name: "(h) refusal flood",
		limits: sc.limits(map[string]string{
			"max_spans_per_link": fmt.Sprint(perLink), "max_links": fmt.Sprint(maxLinks),
		}),
		budget: sc.budget(1 * gib),
		run: func(e *attackEnv) {
			sp := floodSpans(e, source(3), "refused", 9, perLink+spans)
			ci := floodBogusCircuits(e, source(4), circuits)
			filled := fillLinks(e, maxLinks+8)
			cf := floodConnections(e, conns)
			refusedConns := cf[connRefused]
			e.notef("spans: %d sent, %d refused; circuits: %d sent, %d refused; connections: %d links filled, then %d of %d refused (%d let in, %d left waiting, %d not made)",
				sp.sent, sp.refused, ci.sent, ci.refused, filled, refusedConns, conns, cf[connLetIn], cf[connWaiting], cf[connFailed])
			// The control leaf and the observer hold two of the links.
			if filled > maxLinks-2 {
				e.t.Errorf("%d leaves let in beside the control pair; max_links is %d", filled, maxLinks)
			}
			if cf[connLetIn] > 0 {
				e.t.Errorf("%d connections let in with every link slot taken", cf[connLetIn])
			}
			limits, exposed, err := e.tg.limitRefusals()
			if err != nil {
				e.t.Errorf("scrape /metrics: %v", err)
				return
			}
			sum := 0.0
			for _, v := range limits {
				sum += v
			}
			e.notef("dmsgd_limit_refusals_total %v", limits)
			want := float64(sp.refused + refusedConns)
			switch {
			case !exposed:
				e.t.Errorf("/metrics has no dmsgd_limit_refusals_total; %.0f refusals because of limits went uncounted", want)
			case sum < want:
				e.t.Errorf("dmsgd_limit_refusals_total counts %.0f refusals, the attackers saw %.0f: %v", sum, want, limits)
			}
		},
	})
}

// floodBogusCircuits opens n circuits on spans the router never sent,
// each to be refused with CANTCIRC.
func floodBogusCircuits(e *attackEnv, from string, n int) floodResult {
	p, err := e.dialAttacker(from, false)
	if err != nil {
		e.t.Fatal(err)
	}
	var refused atomic.Int64
	var pl politeness
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(m *dmsg.Msg) {
			pl.handle(p, m)
			if m.Cmd&dmsg.FlagReply != 0 && m.Cmd&dmsg.FlagDelete != 0 && m.MsgID >= 1000 && m.Circuit == 0 {
				refused.Add(1)
			}
		})
	}()
	err = p.Write(leafConn(1, "bogus-circuits", dmsg.PeerHammer2, 0))
	sent := 0
	for ; sent < n && err == nil && !e.stopping(); sent++ {
		m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: 1<<62 + uint64(sent)})
		m.MsgID = uint64(1000 + sent)
		err = writeFlushing(p, sent%512 == 511, m)
	}
	if err == nil {
		err = p.Flush()
	}
	r := floodResult{sent: sent}
	var readErr error
	for readErr == nil && err == nil && int(refused.Load()) < sent && !e.stopping() {
		select {
		case readErr = <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if dmsgtest.ClosedByFarEnd(readErr) || dmsgtest.ClosedByFarEnd(err) {
		r.closed = 1
	}
	r.refused = int(refused.Load())
	return r
}

// fillLinks connects well-behaved leaves, each from its own address, until
// the router refuses one (or upTo are in), and keeps them until the attack
// ends. A leaf is in once the router acknowledged its LNK_CONN: from then
// on it no longer holds a pending slot that another source may take.
func fillLinks(e *attackEnv, upTo int) int {
	for n := range upTo {
		p, err := dialWire(e.tg.port, source(100+n))
		if err != nil {
			return n
		}
		in, done := make(chan struct{}), make(chan struct{})
		var pl politeness
		var once sync.Once
		go func() {
			defer close(done)
			p.Run(func(m *dmsg.Msg) {
				pl.handle(p, m)
				if acksConn(m) {
					once.Do(func() { close(in) })
				}
			})
		}()
		e.closeAtEnd(p.Conn())
		if p.Send(leafConn(1, fmt.Sprintf("fill%d", n), dmsg.PeerHammer2, 0)) != nil {
			return n
		}
		select {
		case <-in:
		case <-done:
			return n
		case <-time.After(e.sc.liveness):
			return n
		}
	}
	return upTo
}

// connOutcome is what became of one connection attempt.
type connOutcome int

const (
	connRefused connOutcome = iota // closed before the router said anything
	connLetIn                      // the router spoke: it took the link
	connWaiting                    // neither, for a while: it is held waiting
	connFailed                     // the connection could not be made
)

// floodConnections makes n connection attempts from a few addresses and
// counts their outcomes.
func floodConnections(e *attackEnv, n int) [4]int {
	var counts [4]atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for int(next.Add(1)) <= n && !e.stopping() {
				counts[tryConn(e.tg.port, source(120+w))].Add(1)
			}
		})
	}
	wg.Wait()
	var out [4]int
	for i := range counts {
		out[i] = int(counts[i].Load())
	}
	return out
}

// tryConn connects and waits up to two seconds to see what the router
// does with the connection.
func tryConn(port int, from string) connOutcome {
	p, err := dialWire(port, from)
	if err != nil {
		return connFailed
	}
	defer p.Close()
	p.Conn().SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err = p.Conn().Read(b[:])
	switch {
	case err == nil:
		return connLetIn
	case errors.Is(err, os.ErrDeadlineExceeded):
		return connWaiting
	}
	return connRefused
}
