package router

import (
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/span"
)

// The span engine's work is charged to the peer that caused it
// (limits.link_rate). The engine bills each call's work to the connection
// it was made for (span.Conn.TakeWork: a span relayed to every other link
// and withdrawn again, the table relayed to a new link, a departed link's
// spans withdrawn); the link takes the bill after each call.
//
//   - The fan-out of the peer's own spans (and the re-selection after it
//     refuses one of our relays) is charged to its link's work budget, so
//     its reader waits when it churns spans faster than link_rate allows.
//   - Everything, the table sent to a new link and the teardown of a
//     departed one included, is charged to the link's source address too
//     (an IPv4 address or IPv6 /64, as limits.max_links_per_source counts
//     them), in a bucket of the same rate. A peer that reconnects in a
//     loop leaves its bill there: its next link waits, before its LNK_CONN
//     is served, until the source's bucket is no longer in debt. The debt
//     is capped at one burst, so a link never waits more than two seconds
//     for its source's past. Unix sockets and configured targets have no
//     source and are not held.
//
// The table sent to a new link is not charged to the link itself: a
// router joining a large cluster would otherwise wait seconds before its
// own advertisements were read.

// sourceWork is the work buckets of the sources whose links made the
// engine work. The zero value is ready to use.
type sourceWork struct {
	mu      sync.Mutex
	sources map[string]*workBucket
}

// workBucket is one source's token bucket: units it may still spend, as
// of last; negative when in debt.
type workBucket struct {
	tokens float64
	last   time.Time
}

// sweepSourcesAt is the number of sources tracked above which those whose
// bucket is full again are forgotten.
const sweepSourcesAt = 1024

// refill brings b up to now at rate units a second, within burst.
func (b *workBucket) refill(rate, burst float64, now time.Time) {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
}

// charge takes n units from src's bucket; rate is limits.link_rate, and
// nothing is kept for 0 (unmetered) or an exempt source.
func (w *sourceWork) charge(src string, n, rate int, now time.Time) {
	if src == "" || rate <= 0 || n <= 0 {
		return
	}
	burst := 2 * float64(rate)
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.sources[src]
	if b == nil {
		if w.sources == nil {
			w.sources = make(map[string]*workBucket)
		}
		if len(w.sources) >= sweepSourcesAt {
			w.sweepLocked(float64(rate), burst, now)
		}
		b = &workBucket{tokens: burst, last: now}
		w.sources[src] = b
	}
	b.refill(float64(rate), burst, now)
	b.tokens = max(-burst, b.tokens-float64(n))
}

// wait returns how long a new link from src must wait before its
// LNK_CONN is served: until the source's bucket is out of debt.
func (w *sourceWork) wait(src string, rate int, now time.Time) time.Duration {
	if src == "" || rate <= 0 {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.sources[src]
	if b == nil {
		return 0
	}
	b.refill(float64(rate), 2*float64(rate), now)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / float64(rate) * float64(time.Second))
}

// sweepLocked forgets the sources whose bucket has refilled.
func (w *sourceWork) sweepLocked(rate, burst float64, now time.Time) {
	for src, b := range w.sources {
		if b.refill(rate, burst, now); b.tokens >= burst {
			delete(w.sources, src)
		}
	}
}

// workSource is the link's source for the work buckets, "" when it has
// none.
func (l *link) workSource() string {
	if l.opts.adm == nil || l.opts.shellSocket {
		return ""
	}
	return l.opts.adm.source
}

// yieldWork is the engine work after which a link's reader yields the
// processor. A reader handling buffered messages never waits for its
// socket, so without it a peer whose spans each make the router relay to
// every other link would keep a processor for its whole input, while the
// reader of a quiet link with a ping to answer waits for one.
const yieldWork = 64

// chargeWork takes the engine's bill for sc and charges it to the source,
// and to the link itself when ownLink is set, and returns it.
func (l *link) chargeWork(sc *span.Neighbor, ownLink bool) int {
	if sc == nil {
		return 0
	}
	n := sc.TakeWork()
	if n <= 0 {
		return 0
	}
	if ownLink {
		l.conn.Spend(n)
	}
	if n >= yieldWork {
		runtime.Gosched()
	}
	l.r.work.charge(l.workSource(), n, linkRate(l.r.Config(), l.opts), time.Now())
	return n
}

// awaitSourceTurn holds a new link's LNK_CONN while its source is in debt
// for the work its earlier links caused. It reports false when the link
// closed meanwhile.
func (l *link) awaitSourceTurn() bool {
	d := l.r.work.wait(l.workSource(), linkRate(l.r.Config(), l.opts), time.Now())
	if d <= 0 {
		return true
	}
	l.r.metrics.ReaderPaused("link_rate")
	l.r.events.Info("link_rate.source", "LNK_CONN held: the links of its source spent their work budget (limits.link_rate)",
		append(l.fields(), zap.Duration("wait", d))...)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !l.conn.Closing()
	case <-l.conn.Closed():
		return false
	}
}
