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

// Attacks on what the router queues and keeps per link: answers a peer
// never reads, transactions it never closes.

// (a) A peer pings as fast as it can and never reads the answers: the
// router must not queue them without bound. Past its queue budget, and a
// grace period later, the peer is a slow consumer and its link is closed.
func TestAttackPingsFromAPeerThatNeverReads(t *testing.T) {
	sc := currentScale()
	runAttack(t, attackSpec{
		name:   "(a) pings, never read",
		limits: sc.limits(map[string]string{"queue_bytes_per_link": "256KiB", "slow_consumer_grace": "1s"}),
		budget: sc.budget(256 * mib),
		run: func(e *attackEnv) {
			ping := dmsgtest.Ping()
			floodWithoutReading(e, "pings", []*dmsg.Msg{leafConn(1, "pinger", dmsg.PeerHammer2, 0)},
				func(uint64) *dmsg.Msg { return ping }, uint64(sc.pick(1_000_000, 10_000_000)), 1024)
		},
	})
}

// (b) A peer on a TCP link (shell.tcp loopback lets it use the shell)
// asks for `tree json` of a big tree over and over and never reads: every
// answer is megabytes the router must not keep queuing.
func TestAttackShellTreesForAPeerThatNeverReads(t *testing.T) {
	sc := currentScale()
	spans := sc.pick(2000, 50_000)
	runAttack(t, attackSpec{
		name:    "(b) shell tree json, never read",
		limits:  sc.limits(map[string]string{"queue_bytes_per_link": "256KiB", "slow_consumer_grace": "1s"}),
		budget:  func(base int64) int64 { return base + int64(sc.pick(64, 256))*mib },
		prepare: func(e *attackEnv) { bigTree(e, spans) },
		run: func(e *attackEnv) {
			tree := dmsgtest.ShellLine("tree json")
			floodWithoutReading(e, "`tree json`", []*dmsg.Msg{leafConn(1, "tree-asker", dmsg.PeerClient, 0)},
				func(uint64) *dmsg.Msg { return tree }, uint64(sc.pick(400, 300)), 1)
		},
	})
}

// bigTree has well-behaved leaves advertise n spans between them, a few
// thousand each (a router lets no single link hold more than a share of
// its budgets), and waits until the router has answered every one. What
// the router refused leaves the tree smaller; that is noted.
func bigTree(e *attackEnv, n int) {
	const perLeaf = 10_000
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for k := 0; k*perLeaf < n; k++ {
		count := min(perLeaf, n-k*perLeaf)
		p, err := dialWire(e.tg.port, source(200+k))
		if err != nil {
			e.t.Fatal(err)
		}
		var pl politeness
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.Run(func(m *dmsg.Msg) {
				pl.handle(p, m)
				if m.Cmd&dmsg.FlagReply != 0 && m.MsgID >= 10 && m.Circuit == 0 {
					if m.Cmd&dmsg.FlagDelete != 0 {
						refused.Add(1)
					} else {
						accepted.Add(1)
					}
				}
			})
		}()
		e.t.Cleanup(func() { p.Close(); <-done })
		wg.Go(func() {
			label := fmt.Sprintf("filler%d", k)
			err := p.Write(leafConn(1, label, dmsg.PeerHammer2, ^uint64(0)))
			for i := 0; i < count && err == nil; i++ {
				err = writeFlushing(p, i%512 == 511, advertSpan(uint64(10+i), fmt.Sprintf("%s-%d", label, i), seqID(3, uint32(k), uint32(i)), 0))
			}
			if err == nil {
				err = p.Flush()
			}
			if err != nil {
				e.t.Errorf("filler %d: %v", k, err)
			}
		})
	}
	wg.Wait()
	waitFor(e.t, 2*time.Minute, fmt.Sprintf("answers to the fillers' %d spans", n), func() bool {
		return int(accepted.Load()+refused.Load()) >= n
	})
	e.notef("tree of %d filler spans (%d refused)", accepted.Load(), refused.Load())
}

// floodWithoutReading plays a peer that never reads: from its own
// address it sends hello, then next(i) for i up to total in batches,
// then one more every 100 ms, until the router closes the link or the
// attack must stop. The check: the router closed the link.
func floodWithoutReading(e *attackEnv, what string, hello []*dmsg.Msg, next func(i uint64) *dmsg.Msg, total uint64, batch int) {
	p, err := e.dialAttacker(source(0), true)
	if err != nil {
		e.t.Fatal(err)
	}
	start := time.Now()
	err = p.Send(hello...)
	var i uint64
	for err == nil && !e.stopping() {
		n := batch
		if i >= total {
			n = 1
			time.Sleep(100 * time.Millisecond)
		}
		for range n {
			if err = p.Write(next(i)); err != nil {
				break
			}
			i++
		}
		if err == nil {
			err = p.Flush()
		}
	}
	if dmsgtest.ClosedByFarEnd(err) {
		e.notef("%d %s sent; the router closed the link after %v (%v)", i, what, time.Since(start).Round(time.Millisecond), err)
		return
	}
	e.notef("%d %s sent over %v; link still open", i, what, time.Since(start).Round(time.Millisecond))
	e.t.Errorf("the router kept the link of a peer that sent %d %s and never read for %v", i, what, time.Since(start).Round(time.Millisecond))
}

// unknownCmd is a command no DMSG speaker knows: HAMMER2 protocol,
// command 0x123, one header unit.
const unknownCmd = dmsg.ProtoHM2 | 0x12300 | 1

// (d) A peer opens transactions with a command nobody knows and never
// closes them. Each is refused (NOSUPP), but stays open until the peer
// closes it; their number must be bounded per link, and a peer that goes
// on past the bound is refused harder or closed. The peer reads the
// refusals, so that what it costs the router is the transactions alone,
// not queued answers (attack (a) covers those): 2 M of them, as each
// costs a router without the bound some 240 bytes.
func TestAttackTransactionsNeverClosed(t *testing.T) {
	sc := currentScale()
	runAttack(t, attackSpec{
		name:   "(d) transactions never closed",
		limits: sc.limits(map[string]string{"max_transactions_per_link": "1024"}),
		budget: sc.budget(256 * mib),
		run: func(e *attackEnv) {
			total := uint64(sc.pick(800_000, 2_000_000))
			p, err := e.dialAttacker(source(1), false)
			if err != nil {
				e.t.Fatal(err)
			}
			var refused atomic.Uint64
			done := make(chan error, 1)
			go func() {
				done <- p.Run(func(m *dmsg.Msg) {
					if m.Cmd&dmsg.FlagReply != 0 && m.Cmd&dmsg.FlagDelete != 0 && m.MsgID >= 1000 {
						refused.Add(1)
					}
				})
			}()
			start := time.Now()
			err = p.Write(leafConn(1, "opener", dmsg.PeerHammer2, 0))
			var sent uint64
			for ; sent < total && err == nil && !e.stopping(); sent++ {
				m := &dmsg.Msg{Header: dmsg.Header{MsgID: 1000 + sent, Cmd: dmsg.FlagCreate | unknownCmd}}
				err = writeFlushing(p, sent%1024 == 1023, m)
			}
			if err == nil {
				err = p.Flush()
			}
			var readErr error
			for readErr == nil && refused.Load() < sent && !e.stopping() {
				select {
				case readErr = <-done:
				case <-time.After(100 * time.Millisecond):
				}
			}
			switch {
			case dmsgtest.ClosedByFarEnd(readErr) || dmsgtest.ClosedByFarEnd(err):
				e.notef("%d opened, %d refused; the router closed the link after %v", sent, refused.Load(), time.Since(start).Round(time.Millisecond))
			case refused.Load() == sent:
				e.notef("%d opened, all refused, link kept", sent)
			default:
				e.notef("%d opened, %d refused, link open", sent, refused.Load())
				e.t.Errorf("%d transactions opened, %d refused, and the link is still open", sent, refused.Load())
			}
		},
	})
}
