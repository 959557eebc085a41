package router_test

import (
	"fmt"
	"testing"
	"time"
)

// waitFast polls cond at a fine grain: a benchmark measures how long it
// takes to hold.
func waitFast(b *testing.B, what string, cond func() bool) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// A router holding n signed advertisements relays every one of them to a
// SIGNED_SPANS link as it comes up, each with a hop signed for that link's
// key. What the other links see meanwhile is what matters: a span event
// (a plain leaf's advertisement reaching a watcher) measured while the
// new link's relays are being sent (stall), against the same event with
// no link coming up (idle), in the same run. Signed under the span
// engine's mutex, the stall grows with n; signed as they are written, it
// does not. fanout is how long the new link takes to receive all n, the
// first time its key is seen (cold) and when it comes up again (warm: the
// hops signed before are copied).
func BenchmarkSignedRelaysToALinkComingUp(b *testing.B) {
	for _, n := range []int{1024, 8192} {
		b.Run(fmt.Sprintf("spans=%d", n), func(b *testing.B) { benchSignedFanOut(b, n) })
	}
}

func benchSignedFanOut(b *testing.B, n int) {
	a, tlsAddr, _, kd := signedSource(b, n)
	watcher := dialLeaf(b, a.tcpURL(), leafConfig{Label: "watcher"})
	probe := dialLeaf(b, a.tcpURL(), leafConfig{Label: "probe"})
	probeOnce := func(i int) time.Duration {
		label := fmt.Sprintf("p%d", i)
		start := time.Now()
		ad := probe.advertise(hammer2Span(label, "probes", 0, 1))
		watcher.waitSpans(label, 1)
		d := time.Since(start)
		ad.Withdraw()
		return d
	}
	var idle, stall, cold, warm time.Duration
	b.ResetTimer()
	for i := range b.N {
		idle += probeOnce(2 * i)

		start := time.Now()
		dst := dialSigned(b, tlsAddr, "dst", kd)
		waitFast(b, "the first signed relay", func() bool { return signedRelaysSeen(dst, 0) > 0 })
		stall += probeOnce(2*i + 1)
		waitFast(b, "every signed relay", func() bool { return signedRelaysSeen(dst, 0) >= n })
		if i == 0 {
			cold = time.Since(start)
		} else {
			warm += time.Since(start)
		}
		dst.Close()
		waitFast(b, "dst's link gone", func() bool { _, err := a.LinkTo("dst"); return err != nil })
	}
	b.StopTimer()
	ms := func(d time.Duration, k int) float64 { return float64(d) / float64(k) / 1e6 }
	b.ReportMetric(ms(idle, b.N), "idle-ms")
	b.ReportMetric(ms(stall, b.N), "stall-ms")
	b.ReportMetric(float64(stall)/float64(max(idle, 1)), "x-idle")
	b.ReportMetric(ms(cold, 1), "fanout-cold-ms")
	if b.N > 1 {
		b.ReportMetric(ms(warm, b.N-1), "fanout-warm-ms")
	}
}
