package router_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// A peer that asks the shell for large output and never reads it is a
// slow consumer: the router stops taking its commands at the queue
// budget, and closes the link once it does not drain; a well-behaved
// leaf next to it keeps its link.
func TestAPeerNotReadingItsShellOutputIsClosedAsASlowConsumer(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) {
		l.QueueBytesPerLink = 64 << 10
		l.SlowConsumerGrace = 300 * time.Millisecond
	}), withKeepaliveTimeout(time.Minute))
	good := dialLeaf(t, r.tcpURL(), leafConfig{Label: "good"})
	good.waitAcked()
	stop := writeFlood(dialPeer(t, r), func(i int) *dmsg.Msg {
		if i == 0 {
			return connMsg(libdmsgConn(), false, 0x1000)
		}
		return dmsgtest.ShellLine("tree json")
	})
	defer stop()
	eventually(t, "the flooding link is closed", func() error {
		if n := limitHits(t, r, "queue_bytes_per_link"); n != 1 {
			return fmt.Errorf("queue_bytes_per_link counted %v", n)
		}
		return nil
	})
	waitSample(t, r.Metrics().Registry(), "dmsgd_link_downs_total", map[string]string{"reason": "slow_consumer"},
		"the link's down counted as slow_consumer", equal(1))
	if _, err := r.LinkTo("good"); err != nil {
		t.Fatal(err)
	}
}

// Transactions the router does not hold under a budget of their own
// count against limits.max_transactions_per_link; accepted spans do not.
func TestAPeerHoldingTooManyTransactionsIsRefusedThenClosed(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxTransactionsPerLink = 8 }),
		withKeepaliveTimeout(time.Minute))
	origin := dialLeaf(t, r.tcpURL(), leafConfig{Label: "origin"})
	for i := range 20 {
		origin.advertise(hammer2Span(fmt.Sprintf("s%d", i), "h2", 0, 1))
	}
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	for i := range 20 {
		watcher.waitSpans(fmt.Sprintf("s%d", i), 1)
	}

	p := dialRaw(t, r.tcpURL(), true)
	p.send(connMsg(libdmsgConn(), false, 1)) // one transaction of its 8
	// Unknown commands, refused with NOSUPP but held until the peer's
	// DELETE, which never comes; one at a time, each answer awaited.
	var codes []uint32
	for id := uint64(2); id <= 40; id++ {
		if p.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.FlagCreate | 0x00500101, MsgID: id}}) != nil {
			break
		}
		m, ok := p.answerOrEOF(id)
		if !ok {
			break
		}
		codes = append(codes, m.Error)
	}
	if err := p.WaitEnd(); !closedByRouter(err) {
		t.Errorf("the flooding link ended with %v, want EOF", err)
	}
	want := slices.Repeat([]uint32{dmsg.ErrNoSupp}, 7)
	want = append(want, slices.Repeat([]uint32{dmsg.ErrParam}, 8)...) // the overdraft, then closed
	if !slices.Equal(codes, want) {
		t.Errorf("answers %x, want %x and then the link closed", codes, want)
	}
	if n := limitHits(t, r, "max_transactions_per_link"); n < 1 {
		t.Errorf("max_transactions_per_link counted %v", n)
	}
	waitSample(t, r.Metrics().Registry(), "dmsgd_link_downs_total", map[string]string{"reason": "over_budget"},
		"the link's down counted as over_budget", equal(1))
	origin.advertise(hammer2Span("after", "h2", 0, 1))
	watcher.waitSpans("after", 1)
}

// answerOrEOF waits for the router's answer to the peer's transaction
// msgid, or for the link to end (ok false).
func (p *rawPeer) answerOrEOF(msgid uint64) (m *dmsg.Msg, ok bool) {
	p.tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		// In this order: once reading has ended, All holds everything.
		ch, ended := p.Changed(), p.Err() != nil
		for _, m := range p.All() {
			if m.MsgID == msgid && m.Cmd&dmsg.FlagReply != 0 {
				return m, true
			}
		}
		if ended {
			return nil, false
		}
		select {
		case <-ch:
		case <-deadline.C:
			p.tb.Fatalf("raw peer: no answer to msgid %d within %v", msgid, waitTimeout)
		}
	}
}

// dialPeer connects a bare peer to r, one that reads nothing unless told
// to; the test's cleanup closes it.
func dialPeer(tb testing.TB, r *testRouter) *dmsgtest.Peer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	p, err := dmsgtest.Dial(ctx, "tcp", r.addr())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// writeFlood writes what next builds on p as fast as the router takes
// it, until the returned stop is called or a write fails. It never reads.
func writeFlood(p *dmsgtest.Peer, next func(i int) *dmsg.Msg) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			p.WriteUntil(time.Now().Add(waitTimeout))
			if p.Write(next(i)) != nil {
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			p.Close()
			<-done
		})
	}
}

// drain reads and drops everything nc receives until it closes.
func drain(nc net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := nc.Read(buf); err != nil {
			return
		}
	}
}

// control is a well-behaved leaf measuring what a peer cares about while
// another misbehaves: the round trip of its pings and how long a span
// change takes to reach it.
type control struct {
	tb     testing.TB
	pinger *rawPeer
	origin *leaf
	seen   *leaf
	pings  []time.Duration
	spans  []time.Duration
}

func newControl(tb testing.TB, r *testRouter) *control {
	c := &control{tb: tb, pinger: dialRaw(tb, r.tcpURL(), true),
		origin: dialLeaf(tb, r.tcpURL(), leafConfig{Label: "origin"}),
		seen:   dialLeaf(tb, r.tcpURL(), leafConfig{Label: "watcher"})}
	c.pinger.send(connMsg(libdmsgConn(), false, 0x1000))
	c.origin.waitAcked()
	c.seen.waitAcked()
	return c
}

// measure pings and changes a span n times, one round each.
func (c *control) measure(n int) {
	for i := range n {
		start := time.Now()
		c.pinger.Barrier()
		c.pings = append(c.pings, time.Since(start))
		start = time.Now()
		label := fmt.Sprintf("tick%d", i)
		c.origin.advertise(hammer2Span(label, "h2", 0, 1))
		c.seen.waitSpans(label, 1)
		c.spans = append(c.spans, time.Since(start))
	}
}

func (c *control) report(what string) {
	c.tb.Logf("%s: control pings %s; span changes %s", what, quantiles(c.pings), quantiles(c.spans))
}

func quantiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v p99 %v max %v (n=%d)", q(0.5), q(0.99), s[len(s)-1].Round(time.Microsecond), len(s))
}

// Work from one peer cannot starve the others: next to each of these
// floods a well-behaved leaf keeps getting its pings answered and its
// span changes relayed. The figures are logged, not asserted: timings
// belong to benchmarks; the test asserts that every ping and every span
// change gets through (within the waits' generous deadline).
func TestAFloodingPeerDoesNotStarveAWellBehavedLeaf(t *testing.T) {
	floods := []struct {
		name  string
		start func(t *testing.T, r *testRouter) (stop func())
	}{
		{"pings as fast as it can", func(t *testing.T, r *testRouter) func() {
			p := dialPeer(t, r)
			go drain(p.Conn())
			return writeFlood(p, func(i int) *dmsg.Msg {
				if i == 0 {
					return connMsg(libdmsgConn(), false, 1)
				}
				return &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}}
			})
		}},
		{"opens and withdraws spans in a loop", func(t *testing.T, r *testRouter) func() {
			p := dialPeer(t, r)
			go drain(p.Conn())
			return writeFlood(p, func(i int) *dmsg.Msg {
				switch {
				case i == 0:
					return connMsg(libdmsgConn(), false, 1)
				case i%2 == 1:
					s := hammer2Span(fmt.Sprintf("churn%d", i%64), "h2", 0, 1)
					return withMsgID(dmsg.NewSpanMsg(dmsg.FlagCreate, &s), uint64(i+1))
				}
				return &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, MsgID: uint64(i)}}
			})
		}},
		{"reconnects in a loop: LNK_CONN, spans, garbage", func(t *testing.T, r *testRouter) func() {
			return churn(t, r, 8)
		}},
	}
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			r := newRouter(t, "r", withKeepaliveTimeout(time.Minute))
			c := newControl(t, r)
			stop := f.start(t, r)
			c.measure(30)
			stop()
			c.report(f.name)
		})
	}
}

func withMsgID(m *dmsg.Msg, id uint64) *dmsg.Msg { m.MsgID = id; return m }

// churn runs n goroutines that each connect, send a LNK_CONN and 19
// spans, then garbage, and close, in a loop until stop is called.
func churn(tb testing.TB, r *testRouter, n int) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-quit:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				p, err := dmsgtest.Dial(ctx, "tcp", r.addr())
				cancel()
				if err != nil {
					continue
				}
				go drain(p.Conn())
				p.WriteUntil(time.Now().Add(time.Second))
				p.Write(connMsg(libdmsgConn(), false, 1))
				for s := range 19 {
					sp := hammer2Span(fmt.Sprintf("c%d-%d", g, s), "h2", 0, 1)
					p.Write(withMsgID(dmsg.NewSpanMsg(dmsg.FlagCreate, &sp), uint64(s+2)))
				}
				garbage := make([]byte, 256)
				for i := range garbage {
					garbage[i] = byte(rand.Uint32())
				}
				p.WriteRaw(garbage)
				p.Close()
			}
		}()
	}
	var once sync.Once
	return func() { once.Do(func() { close(quit); wg.Wait() }) }
}
