package router

import (
	"testing"
	"time"
)

// pendingPool is an admitter with a pending pool of four and no other
// limit in the way, and a record of the links it evicted.
type pendingPool struct {
	t       *testing.T
	ad      admitter
	now     time.Time
	evicted map[*admission]int
}

func newPendingPool(t *testing.T) *pendingPool {
	return &pendingPool{t: t, now: time.Now(), evicted: map[*admission]int{}}
}

// admit admits a link from src one second after the last, as its owner
// would: closing the link it displaced, and saying how its own is closed.
func (p *pendingPool) admit(src string) (a, displaced *admission, refused string) {
	p.t.Helper()
	lim := testLimits()
	lim.MaxLinks, lim.MaxLinksPerSource, lim.MaxPendingLinks = 100, 100, 4
	p.now = p.now.Add(time.Second)
	a, displaced, why := p.ad.admit(lim, classNetwork, src, p.now)
	if why != nil {
		return nil, nil, why.limit
	}
	if displaced != nil {
		p.ad.evict(displaced)
	}
	p.ad.onEvict(a, func() { p.evicted[a]++ })
	p.check()
	return a, displaced, ""
}

// check verifies the pool's counts agree with its lists.
func (p *pendingPool) check() {
	p.t.Helper()
	p.ad.mu.Lock()
	defer p.ad.mu.Unlock()
	n := 0
	for k, q := range p.ad.pendingBy {
		if len(q) == 0 {
			p.t.Errorf("source %q kept with no pending link", k)
		}
		for _, a := range q {
			if !a.pending || a.wait.evicted || a.wait.key != k {
				p.t.Errorf("source %q lists a link that is not pending there", k)
			}
		}
		n += len(q)
	}
	if n != p.ad.pending {
		p.t.Errorf("%d pending links listed, %d counted", n, p.ad.pending)
	}
}

// A flood that fills the pool cannot keep a new source out: each
// connection from a source holding fewer pending links than the largest
// holder takes the slot of that holder's oldest, until it holds as many
// as any other; then it is refused too.
func TestANewSourceTakesThePendingSlotOfTheLargestHolder(t *testing.T) {
	p := newPendingPool(t)
	var flood []*admission
	for range 3 {
		a, _, why := p.admit("10.0.0.1")
		if why != "" {
			t.Fatalf("flood link refused by %s with room in the pool", why)
		}
		flood = append(flood, a)
	}
	other, _, _ := p.admit("10.0.0.2")
	if _, d, why := p.admit("10.0.0.1"); why != "max_pending_links" || d != nil {
		t.Fatalf("the largest holder, with the pool full: refused by %q, displaced %v; want max_pending_links", why, d)
	}
	if _, d, why := p.admit("10.0.0.3"); why != "" || d != flood[0] {
		t.Fatalf("a new source with the pool full: refused by %q, displaced the flood's oldest: %v", why, d == flood[0])
	}
	if flood[0].wait.limit != "max_pending_links" {
		t.Errorf("the displacement is counted under %q, want max_pending_links", flood[0].wait.limit)
	}
	if p.evicted[flood[0]] != 1 {
		t.Fatalf("the displaced link was closed %d times, want once", p.evicted[flood[0]])
	}
	if _, d, _ := p.admit("10.0.0.3"); d != flood[1] {
		t.Fatal("a source holding 1 against the flood's 2 did not take the flood's oldest")
	}
	// Now 10.0.0.1, .2 and .3 hold 1, 1 and 2.
	if _, _, why := p.admit("10.0.0.3"); why != "max_pending_links" {
		t.Fatalf("a source holding the most: refused by %q, want max_pending_links", why)
	}
	if _, d, _ := p.admit("10.0.0.4"); d == nil || d.wait.key != "10.0.0.3" {
		t.Fatal("a new source did not take a slot of the largest holder, 10.0.0.3")
	}
	// Among equal holders, the oldest link goes: the flood's last (admitted
	// before 10.0.0.2's), then 10.0.0.2's.
	if _, d, _ := p.admit("10.0.0.5"); d != flood[2] {
		t.Fatal("among sources holding one each, the oldest pending link was not the one displaced")
	}
	if _, d, _ := p.admit("10.0.0.6"); d != other {
		t.Fatal("among sources holding one each, the oldest pending link was not the one displaced")
	}
	if len(p.evicted) != 5 {
		t.Errorf("%d links closed, want the 5 displaced", len(p.evicted))
	}
}

// A displaced link leaves the pending pool at once, before its owner
// notices; its LNK_CONN arriving late or its release does not count it
// out a second time, and an owner that says how to close it after it was
// displaced has it closed at once.
func TestADisplacedLinkIsCountedOutOnce(t *testing.T) {
	p := newPendingPool(t)
	lim := testLimits()
	lim.MaxLinks, lim.MaxLinksPerSource, lim.MaxPendingLinks = 100, 100, 1
	first, _, _ := p.ad.admit(lim, classNetwork, "10.0.0.1", p.now)
	second, displaced, why := p.ad.admit(lim, classNetwork, "10.0.0.2", p.now)
	if why != nil || displaced != first {
		t.Fatalf("the second source was not let in by displacing the first: %v", why)
	}
	p.ad.evict(displaced) // nobody said how to close it yet
	closed := 0
	p.ad.onEvict(first, func() { closed++ })
	if closed != 1 {
		t.Fatalf("a displaced link whose owner says how to close it was closed %d times, want once at once", closed)
	}
	p.ad.connected(first)
	p.ad.release(first)
	p.check()
	if p.ad.pending != 1 || p.ad.links != 1 {
		t.Fatalf("after the displaced link is gone: %d pending, %d links; want 1 and 1", p.ad.pending, p.ad.links)
	}
	p.ad.connected(second)
	p.ad.release(second)
	p.check()
	if p.ad.pending != 0 || p.ad.links != 0 || len(p.ad.pendingBy) != 0 {
		t.Fatalf("with every link gone: %d pending, %d links, %d sources pending", p.ad.pending, p.ad.links, len(p.ad.pendingBy))
	}
}

// With every link slot taken, by established links and a flood of pending
// ones, a new source takes the flood's oldest link slot as it would its
// pending slot; the source holding the most pending links is refused
// max_links.
func TestANewSourceTakesTheLinkSlotOfAPendingFloodWhenLinksAreFull(t *testing.T) {
	p := newPendingPool(t)
	lim := testLimits()
	lim.MaxLinks, lim.MaxLinksPerSource, lim.MaxPendingLinks = 4, 100, 100
	admit := func(src string) (a, displaced *admission, refused string) {
		a, displaced, why := p.ad.admit(lim, classNetwork, src, p.now)
		p.now = p.now.Add(time.Second)
		if why != nil {
			return nil, nil, why.limit
		}
		return a, displaced, ""
	}
	est, _, _ := admit("10.0.0.9")
	p.ad.connected(est)
	f1, _, _ := admit("10.0.0.1")
	admit("10.0.0.1")
	admit("10.0.0.2")
	if _, _, why := admit("10.0.0.1"); why != "max_links" {
		t.Fatalf("the flood with every slot taken: refused by %q, want max_links", why)
	}
	a, d, why := admit("10.0.0.3")
	if why != "" || d != f1 {
		t.Fatalf("a new source with every slot taken: refused by %q, displaced the flood's oldest: %v", why, d == f1)
	}
	p.check()
	if d.wait.limit != "max_links" {
		t.Errorf("the displacement is counted under %q, want max_links", d.wait.limit)
	}
	if p.ad.links != 4 {
		t.Fatalf("%d links counted, want 4: the displaced link's slot went to the new one", p.ad.links)
	}
	p.ad.release(f1)
	p.ad.connected(a)
	if p.ad.links != 4 || p.ad.sources["10.0.0.1"].links != 1 {
		t.Fatalf("after the displaced link is released: %d links, 10.0.0.1 holds %d; want 4 and 1",
			p.ad.links, p.ad.sources["10.0.0.1"].links)
	}
}
