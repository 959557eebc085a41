package e2e

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// The control pair is what a well-behaved user of the router sees while it
// is under attack. The control leaf pings the router on a fixed period and
// times each answer; it also withdraws and re-advertises one of its spans
// over and over, and the observer, a second leaf on its own link, times
// how long each change takes to reach it through the router.

// churnLabel is the span the control leaf keeps changing.
const churnLabel = "control-churn"

// observer is a leaf that wants every span and reports the changes of
// churnLabel as they arrive.
type observer struct {
	p      *dmsgtest.Peer
	pl     politeness
	done   chan struct{}
	err    error // why the link ended, once done is closed
	events chan spanEvent

	mu    sync.Mutex
	churn map[uint64]uint64 // relay msgid -> seq of a churnLabel advertisement
	seen  map[string]bool   // labels of spans the router relayed to us
}

// spanEvent is one change of churnLabel seen by the observer.
type spanEvent struct {
	seq    uint64
	create bool
	at     time.Time
}

func dialObserver(t *testing.T, port int) *observer {
	t.Helper()
	p, err := dialWire(port, "")
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{p: p, done: make(chan struct{}), events: make(chan spanEvent, 64),
		churn: map[uint64]uint64{}, seen: map[string]bool{}}
	go func() {
		defer close(o.done)
		o.err = p.Run(o.handle)
	}()
	if err := p.Send(leafConn(1, "observer", dmsg.PeerHammer2, ^uint64(0))); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *observer) handle(m *dmsg.Msg) {
	create, del := o.pl.handle(o.p, m)
	if dmsg.Base(m.Cmd) == dmsg.LnkSpan && create {
		s, err := m.Span()
		if err != nil {
			return
		}
		o.mu.Lock()
		o.seen[s.FsLabel] = true
		if s.FsLabel == churnLabel {
			o.churn[m.MsgID] = spanSeq(s)
			o.note(spanEvent{seq: spanSeq(s), create: true, at: time.Now()})
		}
		o.mu.Unlock()
		return
	}
	if del {
		o.mu.Lock()
		if seq, ok := o.churn[m.MsgID]; ok {
			delete(o.churn, m.MsgID)
			o.note(spanEvent{seq: seq, at: time.Now()})
		}
		o.mu.Unlock()
	}
}

// note passes an event on; the control leaf waits for one at a time, so
// a full channel only holds stale ones.
func (o *observer) note(ev spanEvent) {
	select {
	case o.events <- ev:
	default:
	}
}

func (o *observer) sees(label string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[label]
}

// await waits up to timeout for the change (seq, create) and returns when
// it arrived.
func (o *observer) await(seq uint64, create bool, timeout time.Duration) (time.Time, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-o.events:
			if ev.seq == seq && ev.create == create {
				return ev.at, true
			}
		case <-o.done:
			return time.Time{}, false
		case <-deadline:
			return time.Time{}, false
		}
	}
}

func (o *observer) close() {
	o.p.Close()
	<-o.done
}

// controlLeaf pings and churns; see above.
type controlLeaf struct {
	p    *dmsgtest.Peer
	pl   politeness
	obs  *observer
	done chan struct{} // the reader ended
	err  error
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	pings   []pingRec
	pending []int // indexes in pings of the unanswered, oldest first
	churns  []churnRec
}

// pingRec is one ping: when it left and how long its answer took (-1:
// none yet). A router answers pings in order, so the n-th answer belongs
// to the n-th ping.
type pingRec struct {
	sent time.Time
	took time.Duration
}

// churnRec is one span change: when it was sent and how long until the
// observer saw it (-1: it did not within the liveness bound).
type churnRec struct {
	sent time.Time
	took time.Duration
}

func dialControl(t *testing.T, port int, obs *observer, sc *scale) *controlLeaf {
	t.Helper()
	p, err := dialWire(port, "")
	if err != nil {
		t.Fatal(err)
	}
	c := &controlLeaf{p: p, obs: obs, done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = p.Run(c.handle)
	}()
	if err := p.Send(leafConn(1, "control", dmsg.PeerHammer2, ^uint64(0)),
		advertSpan(2, "control", seqID(1, 0, 0), 0)); err != nil {
		t.Fatal(err)
	}
	c.wg.Add(2)
	go c.pingLoop(sc.pingEvery)
	go c.churnLoop(sc)
	return c
}

func (c *controlLeaf) handle(m *dmsg.Msg) {
	c.pl.handle(c.p, m)
	if m.MsgID == 0 && dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0 {
		now := time.Now()
		c.mu.Lock()
		if len(c.pending) > 0 {
			i := c.pending[0]
			c.pending = c.pending[1:]
			c.pings[i].took = now.Sub(c.pings[i].sent)
		}
		c.mu.Unlock()
	}
}

func (c *controlLeaf) pingLoop(every time.Duration) {
	defer c.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.done:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		c.pending = append(c.pending, len(c.pings))
		c.pings = append(c.pings, pingRec{sent: time.Now(), took: -1})
		c.mu.Unlock()
		if c.p.Send(dmsgtest.Ping()) != nil {
			return
		}
	}
}

// churnLoop advertises churnLabel, waits until the observer has it,
// withdraws it, waits until the observer lost it, and so on, one change
// at a time so that each is timed alone.
func (c *controlLeaf) churnLoop(sc *scale) {
	defer c.wg.Done()
	msgid := uint64(100)
	for seq := uint64(1); ; seq++ {
		msgid++
		if !c.change(seq, true, advertSpan(msgid, churnLabel, seqID(2, 0, 0), seq), sc) {
			return
		}
		if !c.change(seq, false, dmsgtest.CloseTx(msgid), sc) {
			return
		}
	}
}

// change sends m, times its arrival at the observer, and waits the churn
// period; false means stop.
func (c *controlLeaf) change(seq uint64, create bool, m *dmsg.Msg, sc *scale) bool {
	sent := time.Now()
	if c.p.Send(m) != nil {
		return false
	}
	at, ok := c.obs.await(seq, create, sc.liveness)
	rec := churnRec{sent: sent, took: -1}
	if ok {
		rec.took = at.Sub(sent)
	}
	c.mu.Lock()
	c.churns = append(c.churns, rec)
	c.mu.Unlock()
	select {
	case <-c.stop:
		return false
	case <-c.done:
		return false
	case <-time.After(sc.churnEvery):
		return true
	}
}

// halt stops pinging and churning; the link stays up until close.
func (c *controlLeaf) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
}

func (c *controlLeaf) close() {
	c.halt()
	c.p.Close()
	<-c.done
}

// linkLost reports whether the router closed the control leaf's link.
func (c *controlLeaf) linkLost() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// unanswered counts pings still waiting for their answer.
func (c *controlLeaf) unanswered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// controlStats sums up what the control pair saw of one window.
type controlStats struct {
	pingsSent, pingsAnswered int
	pingSlow                 int // answered, but later than the liveness bound
	pingP50, pingP99         time.Duration
	changes, changesLost     int
	spanP50, spanP99         time.Duration
}

// stats covers pings and changes sent in [from, to).
func (c *controlLeaf) stats(from, to time.Time, liveness time.Duration) controlStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st controlStats
	var lat, delay []time.Duration
	for _, p := range c.pings {
		if p.sent.Before(from) || !p.sent.Before(to) {
			continue
		}
		st.pingsSent++
		if p.took >= 0 {
			st.pingsAnswered++
			lat = append(lat, p.took)
			if p.took > liveness {
				st.pingSlow++
			}
		}
	}
	for _, ch := range c.churns {
		if ch.sent.Before(from) || !ch.sent.Before(to) {
			continue
		}
		st.changes++
		if ch.took < 0 {
			st.changesLost++
			continue
		}
		delay = append(delay, ch.took)
	}
	st.pingP50, st.pingP99 = percentile(lat, 50), percentile(lat, 99)
	st.spanP50, st.spanP99 = percentile(delay, 50), percentile(delay, 99)
	return st
}

// percentile returns the p-th percentile of ds (nearest rank), 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
