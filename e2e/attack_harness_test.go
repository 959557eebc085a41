package e2e

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// The attack tests play the hostile peers of PROTOCOL-level abuse against
// one real dmsgd each, with the control pair (attack_control_test.go)
// connected throughout and the watcher (attack_watch_test.go) sampling.
// Every attack is bounded in count and time, and each checks the same
// things: the router's RSS stays within the attack's budget, the attacker
// is refused or its link closed, the control leaf's pings and span changes
// keep flowing, the shell socket keeps answering `tree`, the log stays
// quiet, and afterwards descriptors and RSS come back near where they
// started.
//
// Two scales: `make test` runs every attack small, against small limits
// so that the defences trigger at once; DMSGD_ATTACK_SCALE=full (`make
// attack`) runs them at the sizes of the issue that motivated them,
// against default limits, and prints a table of figures.
//
// "Back near the start" is read from RSS, which is what an operator sees
// and pays for: within scale.returnRSS of the baseline and descriptors
// within scale.returnFDs, polled up to scale.returnWait. Go hands freed
// memory back to the kernel lazily (after a collection, which an idle
// daemon runs at the latest every two minutes, then by its background
// scavenger), so the full scale waits long enough for that; at the small
// scale a defended router never holds enough for it to matter.

// scale is how hard and how long the attacks push, and how generous the
// checks are.
type scale struct {
	name string
	full bool

	keepaliveInterval, keepaliveTimeout time.Duration

	pingEvery  time.Duration // control leaf's ping period
	churnEvery time.Duration // pause between two span changes
	treeEvery  time.Duration // pause between two `tree` on the shell socket
	settle     time.Duration // watched before the baseline is taken
	window     time.Duration // the measured window lasts at least this long
	attackFor  time.Duration // an attack stops after this long at most
	liveness   time.Duration // a ping, span change or tree slower than this is lost
	drain      time.Duration // how long the last pings may take to be answered

	returnWait time.Duration
	returnRSS  int64 // RSS may stay this far above the baseline afterwards
	returnFDs  int   // and descriptors this many

	smallAllowance int64 // small scale: RSS budget above the baseline
}

var smallScale = &scale{
	name:              "small",
	keepaliveInterval: 200 * time.Millisecond, keepaliveTimeout: 2 * time.Second,
	pingEvery: 100 * time.Millisecond, churnEvery: 100 * time.Millisecond, treeEvery: 500 * time.Millisecond,
	settle: time.Second, window: 5 * time.Second, attackFor: 20 * time.Second,
	liveness: 10 * time.Second, drain: 10 * time.Second,
	returnWait: 30 * time.Second, returnRSS: 48 << 20, returnFDs: 4,
	smallAllowance: 64 << 20,
}

var fullScale = &scale{
	name: "full", full: true,
	keepaliveInterval: time.Second, keepaliveTimeout: 10 * time.Second,
	pingEvery: 100 * time.Millisecond, churnEvery: 250 * time.Millisecond, treeEvery: 3 * time.Second,
	settle: 3 * time.Second, window: 30 * time.Second, attackFor: 2 * time.Minute,
	liveness: 10 * time.Second, drain: 10 * time.Second,
	returnWait: 4 * time.Minute, returnRSS: 64 << 20, returnFDs: 8,
}

// currentScale is the full scale when DMSGD_ATTACK_SCALE=full.
func currentScale() *scale {
	if os.Getenv("DMSGD_ATTACK_SCALE") == "full" {
		return fullScale
	}
	return smallScale
}

// pick returns small or full by scale.
func (sc *scale) pick(small, full int) int {
	if sc.full {
		return full
	}
	return small
}

// limits returns the small scale's limits; the full scale runs at the
// defaults.
func (sc *scale) limits(small map[string]string) map[string]string {
	if sc.full {
		return nil
	}
	return small
}

// budget is the RSS the target may reach: full at the full scale (the
// goal the issue sets), the baseline plus the small allowance otherwise.
func (sc *scale) budget(full int64) func(base int64) int64 {
	return func(base int64) int64 {
		if sc.full {
			return full
		}
		return base + sc.smallAllowance
	}
}

const (
	mib = 1 << 20
	gib = 1 << 30
)

// attackSpec is one attack.
type attackSpec struct {
	name   string
	limits map[string]string
	budget func(base int64) int64
	// upstream gives the target a configured outbound link to e.up.
	upstream bool
	// prepare runs before the baseline is taken (building a big tree).
	prepare func(e *attackEnv)
	// run plays the attack and checks its own outcome; it returns when the
	// attack is over or e.stopping().
	run func(e *attackEnv)
}

// attackEnv is what an attack runs in.
type attackEnv struct {
	t   *testing.T
	sc  *scale
	tg  *target
	obs *observer
	ctl *controlLeaf
	w   *watcher
	up  *upstream // with attackSpec.upstream

	base     procSample
	start    time.Time
	deadline time.Time

	mu      sync.Mutex
	closers []io.Closer
	note    string
}

// stopping reports whether the attack must stop: its time is up or the
// target's RSS passed twice its budget (the test has failed by then; the
// cap keeps a router without defences from eating the machine).
func (e *attackEnv) stopping() bool {
	return e.w.overCap() || time.Now().After(e.deadline)
}

// closeAtEnd closes c when the attack is over.
func (e *attackEnv) closeAtEnd(c io.Closer) {
	e.mu.Lock()
	e.closers = append(e.closers, c)
	e.mu.Unlock()
}

// dialAttacker connects an attacking peer from the address from (slow:
// one that does not mean to read). Its writes may block up to the end of
// the attack, and it is closed when the attack is over.
func (e *attackEnv) dialAttacker(from string, slow bool) (*dmsgtest.Peer, error) {
	rcvbuf := 0
	if slow {
		rcvbuf = 4096
	}
	p, err := dialWirePeer(e.tg.port, from, rcvbuf)
	if err != nil {
		return nil, err
	}
	p.WriteUntil(e.deadline)
	e.closeAtEnd(p.Conn())
	return p, nil
}

// closeAll closes what the attack left open.
func (e *attackEnv) closeAll() {
	e.mu.Lock()
	cs := e.closers
	e.closers = nil
	e.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// notef records the attack's own outcome for the figures table.
func (e *attackEnv) notef(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.note != "" {
		e.note += "; "
	}
	e.note += fmt.Sprintf(format, args...)
}

// source returns the i-th loopback source address for attackers,
// 127.0.1.2 and up, so that floods can come from many addresses, none of
// them the control pair's 127.0.0.1.
func source(i int) string { return fmt.Sprintf("127.0.%d.%d", 1+i/250, 2+i%250) }

// runAttack runs one attack against a fresh target and checks it.
func runAttack(t *testing.T, spec attackSpec) {
	sc := currentScale()
	e := &attackEnv{t: t, sc: sc}
	var media []int
	if spec.upstream {
		e.up = startUpstream(t)
		defer e.up.close()
		media = append(media, e.up.port)
	}
	tg := startTarget(t, sc, spec.limits, media...)
	e.tg = tg
	e.obs = dialObserver(t, tg.port)
	defer e.obs.close()
	e.ctl = dialControl(t, tg.port, e.obs, sc)
	defer e.ctl.close()
	waitFor(t, 30*time.Second, "the control leaf's span at the observer", func() bool { return e.obs.sees("control") })
	if e.up != nil {
		waitFor(t, 30*time.Second, "the target's link to its configured target", func() bool {
			_, up := e.up.upSince(time.Time{})
			return up
		})
	}
	if spec.prepare != nil {
		spec.prepare(e)
	}
	e.w = watch(tg, sc)
	defer e.w.close()
	time.Sleep(sc.settle) // a measurement: the baseline is what the watcher saw settled
	e.base = e.w.last()
	budget := spec.budget(e.base.rss)
	e.w.capRSS.Store(2 * budget)

	e.start = time.Now()
	e.deadline = e.start.Add(sc.attackFor)
	defer e.closeAll()
	spec.run(e)
	attackEnd := time.Now()
	e.closeAll()
	for time.Since(e.start) < sc.window && !e.ctl.linkLost() {
		time.Sleep(100 * time.Millisecond) // the control pair keeps measuring
	}
	end := time.Now()
	e.ctl.halt()
	drainUntil := time.Now().Add(sc.drain)
	for e.ctl.unanswered() > 0 && time.Now().Before(drainUntil) && !e.ctl.linkLost() {
		time.Sleep(50 * time.Millisecond)
	}
	after, returned, took := e.awaitReturn()

	fig := e.figures(spec.name, budget, end, attackEnd, after, took)
	e.check(fig, budget, end, returned)
	fig.failed = t.Failed()
	recordFigures(fig)
	t.Logf("%s", fig.String())
}

// awaitReturn polls until RSS and descriptors are back near the baseline,
// and returns the last sample, whether they came back, and how long that
// took.
func (e *attackEnv) awaitReturn() (procSample, bool, time.Duration) {
	from := time.Now()
	deadline := from.Add(e.sc.returnWait)
	for {
		s, err := readProc(e.tg.pid())
		if err != nil {
			return e.w.last(), false, time.Since(from)
		}
		if s.rss <= e.base.rss+e.sc.returnRSS && s.fds <= e.base.fds+e.sc.returnFDs {
			return s, true, time.Since(from)
		}
		if time.Now().After(deadline) {
			return s, false, time.Since(from)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// check applies the checks every attack shares.
func (e *attackEnv) check(fig *figures, budget int64, end time.Time, returned bool) {
	t, sc := e.t, e.sc
	select {
	case <-e.tg.exited:
		t.Fatalf("the target died during the attack; log:\n%s", e.tg.tail())
	default:
	}
	if e.w.overCap() {
		t.Errorf("RSS passed twice its budget of %d MiB: attack stopped early", budget/mib)
	}
	if fig.peakRSS > budget {
		t.Errorf("peak RSS %d MiB over the budget of %d MiB (baseline %d MiB)", fig.peakRSS/mib, budget/mib, fig.baseRSS/mib)
	}
	if e.ctl.linkLost() {
		t.Errorf("the router closed the control leaf's link: %v", e.ctl.err)
	}
	c := fig.control
	lost := c.pingsSent - c.pingsAnswered + c.pingSlow
	if c.pingsSent == 0 || lost*10 > c.pingsSent {
		t.Errorf("control pings: %d sent, %d answered, %d of them later than %v: more than 10%% lost",
			c.pingsSent, c.pingsAnswered, c.pingSlow, sc.liveness)
	}
	if c.changes < 2 || c.changesLost > 0 {
		t.Errorf("control span changes: %d made, %d not seen by the observer within %v",
			c.changes, c.changesLost, sc.liveness)
	}
	if fig.tree.asked == 0 || fig.tree.failed > 0 {
		t.Errorf("shell socket: %d of %d `tree` not answered within %v (first: %v)",
			fig.tree.failed, fig.tree.asked, sc.liveness, fig.tree.firstErr)
	}
	minutes := int(end.Sub(e.start)/time.Minute) + 1
	if fig.noisy > 200*minutes {
		t.Errorf("%d warning and error lines in %v (at most 200 a minute); most frequent:%s",
			fig.noisy, end.Sub(e.start).Round(time.Second), e.w.topMessages(5))
	}
	if !returned {
		t.Errorf("after the attack RSS is %d MiB and descriptors %d, from %d MiB and %d before: not back within %d MiB and %d descriptors after %v",
			fig.afterRSS/mib, fig.afterFDs, fig.baseRSS/mib, fig.baseFDs, sc.returnRSS/mib, sc.returnFDs, sc.returnWait)
	}
}

// figures is one attack's row of the table.
type figures struct {
	attack, scale    string
	took             time.Duration // the attack itself
	baseRSS, peakRSS int64
	budget, afterRSS int64
	baseFDs, peakFDs int
	afterFDs         int
	returnTook       time.Duration
	control          controlStats
	noisy            int
	noisyPerMin      float64
	tree             treeStats
	unknownLimits    []string
	note             string
	failed           bool
}

func (e *attackEnv) figures(name string, budget int64, end, attackEnd time.Time, after procSample, took time.Duration) *figures {
	peakRSS, peakFDs := e.w.peak(e.start, end)
	noisy := e.w.noisyLines(e.start, end)
	e.mu.Lock()
	note := e.note
	e.mu.Unlock()
	return &figures{attack: name, scale: e.sc.name, took: attackEnd.Sub(e.start),
		baseRSS: e.base.rss, peakRSS: peakRSS, budget: budget, afterRSS: after.rss,
		baseFDs: e.base.fds, peakFDs: peakFDs, afterFDs: after.fds, returnTook: took,
		control:       e.ctl.stats(e.start, end, e.sc.liveness),
		noisy:         noisy,
		noisyPerMin:   float64(noisy) / end.Sub(e.start).Minutes(),
		tree:          e.w.treeStats(e.start, end),
		unknownLimits: e.tg.unknown, note: note}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

// String is the row as the test logs it.
func (f *figures) String() string {
	c := f.control
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s scale): attack %v\n", f.attack, f.scale, f.took.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "  RSS %d -> peak %d MiB (budget %d), after %d MiB in %v; fds %d -> %d -> %d\n",
		f.baseRSS/mib, f.peakRSS/mib, f.budget/mib, f.afterRSS/mib, f.returnTook.Round(100*time.Millisecond),
		f.baseFDs, f.peakFDs, f.afterFDs)
	fmt.Fprintf(&b, "  pings %d/%d answered, p50 %s ms p99 %s ms; span changes %d (%d lost), p50 %s ms p99 %s ms\n",
		c.pingsAnswered, c.pingsSent, ms(c.pingP50), ms(c.pingP99), c.changes, c.changesLost, ms(c.spanP50), ms(c.spanP99))
	fmt.Fprintf(&b, "  warn/error lines %d (%.0f/min); shell tree %d asked, %d failed, p50 %s ms worst %s ms\n",
		f.noisy, f.noisyPerMin, f.tree.asked, f.tree.failed, ms(f.tree.p50), ms(f.tree.worst))
	if len(f.unknownLimits) > 0 {
		fmt.Fprintf(&b, "  limits unknown to this dmsgd: %v\n", f.unknownLimits)
	}
	fmt.Fprintf(&b, "  attacker: %s", f.note)
	return b.String()
}

// The figures of every attack run by this test binary, printed as one
// table when it exits.
var attackFigures struct {
	mu   sync.Mutex
	rows []*figures
}

func recordFigures(f *figures) {
	attackFigures.mu.Lock()
	attackFigures.rows = append(attackFigures.rows, f)
	attackFigures.mu.Unlock()
}

// printAttackFigures writes the table of figures, if attacks ran.
func printAttackFigures(w io.Writer) {
	attackFigures.mu.Lock()
	defer attackFigures.mu.Unlock()
	if len(attackFigures.rows) == 0 {
		return
	}
	slices.SortStableFunc(attackFigures.rows, func(a, b *figures) int { return strings.Compare(a.attack, b.attack) })
	fmt.Fprintf(w, "\nattack figures (%s scale; RSS in MiB, times in ms)\n", attackFigures.rows[0].scale)
	fmt.Fprintf(w, "%-36s %6s %6s %6s %6s %11s %7s %7s %7s %7s %7s %8s %7s %7s %s\n",
		"attack", "base", "peak", "budget", "after", "fds", "ping50", "ping99", "answer", "span50", "span99",
		"warn/min", "tree50", "treemax", "result")
	for _, f := range attackFigures.rows {
		c := f.control
		answered := 0.0
		if c.pingsSent > 0 {
			answered = 100 * float64(c.pingsAnswered) / float64(c.pingsSent)
		}
		result := "pass"
		if f.failed {
			result = "FAIL"
		}
		treeMax := ms(f.tree.worst)
		if f.tree.failed > 0 {
			treeMax = fmt.Sprintf("%dfail", f.tree.failed)
		}
		fmt.Fprintf(w, "%-36s %6d %6d %6d %6d %11s %7s %7s %6.1f%% %7s %7s %8.0f %7s %7s %s\n",
			f.attack, f.baseRSS/mib, f.peakRSS/mib, f.budget/mib, f.afterRSS/mib,
			fmt.Sprintf("%d/%d/%d", f.baseFDs, f.peakFDs, f.afterFDs),
			ms(c.pingP50), ms(c.pingP99), answered, ms(c.spanP50), ms(c.spanP99),
			f.noisyPerMin, ms(f.tree.p50), treeMax, result)
	}
	for _, f := range attackFigures.rows {
		fmt.Fprintf(w, "  %s: %s\n", f.attack, f.note)
	}
}

// waitUntil polls cond until it holds, and reports false if it did not
// within timeout. Unlike waitFor it does not end the test: an attack must
// stop its peers before it returns.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
