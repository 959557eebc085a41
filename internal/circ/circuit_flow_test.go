package circ_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// TestCircuitWithoutFlowControlIsHeldByItsLink: leaves that do not speak
// CIRC_WINDOW (a libdmsg peer, an older dmsgd) keep DMSG's old
// backpressure on their own links: a consumer stops reading while a
// producer pushes 64 KiB one-way messages at it; the routers' queues stay
// bounded, the producer is held back by TCP (its router pauses the
// producer's link), the stuck circuit is aborted with IO after
// circuit_stall, and a second circuit over the same routers flows
// afterwards.
func TestCircuitWithoutFlowControlIsHeldByItsLink(t *testing.T) {
	const queue, stall = 256 << 10, time.Second
	rs := line(t, 3, withCircuitLimits(queue, stall))
	src := dialLeaf(t, rs[0].addr(), "src", leafOptions{legacy: true})
	sink := dialLeaf(t, rs[2].addr(), "sink", leafOptions{gated: true, legacy: true})
	a := dialLeaf(t, rs[0].addr(), "a", leafOptions{legacy: true})
	b := dialLeaf(t, rs[2].addr(), "b", leafOptions{legacy: true})
	stuck := src.openTo("sink")
	stuckFar := sink.waitAccepted(0)
	other := a.openTo("b")
	otherFar := b.waitAccepted(0)
	waitRelayed(t, rs, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	one := func(int) int { return 64 }
	echo := func(int) byte { return kindEcho }
	if good, err := other.pump(ctx, 50, 8, one, echo); good != 50 || err != nil {
		t.Fatalf("second circuit before: %d good, %v", good, err)
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	})

	sink.gate.Hold()
	const msgSize = 64 << 10
	var sent atomic.Int64
	var longestWait atomic.Int64
	// held is what the producer had pushed when it was first made to wait
	// a good part of the stall limit: what the stuck path took in before
	// backpressure reached it. Counting up to the abort instead would add
	// whatever it pushes while the abort travels back, as the path drains
	// at full speed.
	var held atomic.Int64
	held.Store(-1)
	var producer sync.WaitGroup
	producer.Go(func() {
		for seq := uint64(1); ; seq++ {
			t0 := time.Now()
			before := sent.Load()
			if err := src.conn.WaitRoom(ctx); err != nil {
				return
			}
			w := int64(time.Since(t0))
			if w > longestWait.Load() {
				longestWait.Store(w)
			}
			if time.Duration(w) >= stall/4 && held.Load() < 0 {
				held.Store(before)
			}
			if stuck.isDone() || stuck.sendOneWay(seq, msgSize) != nil {
				return
			}
			sent.Add(msgSize)
		}
	})
	cmd, code := stuck.waitDone()
	producer.Wait()
	close(stopSampling)
	sampler.Wait()
	if code != dmsg.ErrIO || cmd&dmsg.FlagDelete == 0 {
		t.Errorf("stuck circuit ended at the producer with %s %s, want DELETE IO", dmsg.CmdString(cmd), dmsg.ErrorString(code))
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("producer pushed %d MiB before it was held, %d MiB before the abort reached it; longest WaitRoom %v; heap growth %d MiB",
		held.Load()>>20, sent.Load()>>20, time.Duration(longestWait.Load()).Round(time.Millisecond), growth>>20)
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB while a consumer was stuck: queues are not bounded", growth>>20)
	}
	// Before the producer is held, the path takes in what the kernel
	// buffers of its four sockets and the routers' bounded queues hold.
	limit := 4*socketBuffers(t) + 3*queue + 8<<20
	switch h := held.Load(); {
	case h < 0:
		t.Errorf("producer never waited for room (longest %v): TCP backpressure did not reach it", time.Duration(longestWait.Load()))
	case h > limit:
		t.Errorf("producer pushed %d MiB into a stuck circuit before it was held, more than the %d MiB buffers hold: backpressure does not reach it", h>>20, limit>>20)
	}
	// The routers dropped the stuck circuit; the other one flows.
	waitRelayed(t, rs, 1)
	if good, err := other.pump(ctx, 200, 16, func(i int) int { return 64 + i*100 }, echo); good != 200 || err != nil {
		t.Errorf("second circuit after the abort: %d good, %v", good, err)
	}
	checkNoProblems(t, other, otherFar)

	sink.gate.Release()
	if _, code := stuckFar.waitDone(); code != dmsg.ErrIO {
		t.Errorf("stuck circuit ended at the consumer with %s, want IO", dmsg.ErrorString(code))
	}
	checkNoProblems(t, stuck, stuckFar)
	other.close()
	otherFar.waitDone()
	other.waitDone()
	cleanAll(t, rs, src, sink, a, b)
}

// TestRemoteShell runs `@r4 tree` on r1's shell: the command crosses
// three routers over a circuit and r4's tree comes back; a router with
// shell.remote false refuses.
func TestRemoteShell(t *testing.T) {
	r1, r2, r3 := newRouter(t, "r1"), newRouter(t, "r2"), newRouter(t, "r3")
	r4 := newRouter(t, "r4")
	r5 := newRouter(t, "r5", withShellRemote(false))
	spanTo(t, r1, r2.addr())
	spanTo(t, r2, r3.addr())
	spanTo(t, r3, r4.addr())
	spanTo(t, r4, r5.addr())
	rs := []*testRouter{r1, r2, r3, r4, r5}
	waitConverged(t, rs)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sh, err := endpoint.DialShell(ctx, "unix", r1.Socket, "tester")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	out, err := sh.Shell(ctx, "@r4 tree")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(shell.TextLines(r4.Tree()), ""); out != want {
		t.Errorf("@r4 tree:\n%s\nwant r4's tree:\n%s", out, want)
	}
	eventually(t, "the remote call's circuit is freed", func() error { return noCircuits(rs...) })

	out, err = sh.Shell(ctx, "@r5 tree")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "refused") || strings.Contains(out, "Cluster") {
		t.Errorf("@r5 tree with shell.remote false: %q", out)
	}
	out, err = sh.Shell(ctx, "@nosuch tree")
	if err != nil || !strings.Contains(out, "no such node") {
		t.Errorf("@nosuch tree: %q, %v", out, err)
	}
	eventually(t, "every circuit is freed", func() error { return noCircuits(rs...) })
}

// TestCircuitToRouter opens a circuit from a leaf to a router's own node
// and runs a shell command inside it, as `@node` does.
func TestCircuitToRouter(t *testing.T) {
	rs := line(t, 3)
	l := dialLeaf(t, rs[0].addr(), "leaf", leafOptions{})
	c := l.openTo("r3")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got, err := c.ec.Shell(ctx, "tree")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "(r3)") || !strings.Contains(got, "(leaf)") {
		t.Errorf("tree over the circuit:\n%s", got)
	}
	c.close()
	c.waitDone()
	cleanAll(t, rs, l)
}

// socketBuffers returns the most a loopback TCP connection can buffer in
// the kernel (largest send plus receive buffer), or 16 MiB where that is
// not known.
func socketBuffers(t *testing.T) int64 {
	var total int64
	for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"} {
		b, err := os.ReadFile(f)
		fields := strings.Fields(string(b))
		if err != nil || len(fields) != 3 {
			return 16 << 20
		}
		n, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return 16 << 20
		}
		total += n
	}
	return total
}
