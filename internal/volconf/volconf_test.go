package volconf

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 30 * time.Second}
	base := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i, want := range base {
		want *= time.Second
		got := b.Next()
		lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2)
		if got < lo || got > hi {
			t.Fatalf("attempt %d: %v not within ±20%% of %v", i, got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got > 1200*time.Millisecond {
		t.Fatalf("after Reset: %v", got)
	}
}

func TestZeroBackoffUsesTheDefaults(t *testing.T) {
	var b Backoff
	if got := b.Next(); got < 800*time.Millisecond || got > 1200*time.Millisecond {
		t.Fatalf("first delay %v", got)
	}
}

// fakeDialer records dials and keeps "links" up until told to drop them.
type fakeDialer struct {
	mu    sync.Mutex
	dials map[string]int
	up    map[string]chan struct{}
	fail  bool
}

func newFakeDialer() *fakeDialer {
	return &fakeDialer{dials: make(map[string]int), up: make(map[string]chan struct{})}
}

func (f *fakeDialer) connect(ctx context.Context, t config.Target) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials[t.String()]++
	if f.fail {
		return nil, errors.New("refused")
	}
	done := make(chan struct{})
	f.up[t.String()] = done
	go func() {
		<-ctx.Done()
		f.drop(t.String())
	}()
	return done, nil
}

func (f *fakeDialer) drop(target string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.up[target]; ch != nil {
		close(ch)
		delete(f.up, target)
	}
}

func (f *fakeDialer) count(target string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials[target]
}

func (f *fakeDialer) isUp(target string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up[target] != nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // generous: the machine may be loaded
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func target(t *testing.T, path string) config.Target {
	t.Helper()
	tg, err := config.ParseSpanPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestATargetIsDialledAndRedialledAfterItDrops(t *testing.T) {
	f := newFakeDialer()
	m := New(Options{Connect: f.connect, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	defer m.Close()
	a := target(t, "span:127.0.0.1:9001")
	m.Set("config", []config.Target{a})
	waitFor(t, "first dial", func() bool { return f.isUp(a.String()) })
	f.drop(a.String())
	waitFor(t, "redial", func() bool { return f.count(a.String()) >= 2 && f.isUp(a.String()) })
}

func TestATargetWantedByTwoSourcesStaysUntilBothDropIt(t *testing.T) {
	f := newFakeDialer()
	m := New(Options{Connect: f.connect})
	defer m.Close()
	a := target(t, "span:127.0.0.1:9001")
	m.Set("config", []config.Target{a})
	m.Set("volconf:x", []config.Target{a})
	waitFor(t, "dial", func() bool { return f.isUp(a.String()) })
	m.Set("config", nil)
	if len(m.Targets()) != 1 {
		t.Fatal("the target went away while another source wants it")
	}
	m.Set("volconf:x", nil)
	waitFor(t, "link closed", func() bool { return !f.isUp(a.String()) })
	if f.count(a.String()) != 1 {
		t.Fatalf("dialled %d times, want one link for both sources", f.count(a.String()))
	}
}

func TestAChangedTargetReplacesTheOldLink(t *testing.T) {
	f := newFakeDialer()
	m := New(Options{Connect: f.connect})
	defer m.Close()
	a, b := target(t, "span:127.0.0.1:9001"), target(t, "span:127.0.0.1:9002")
	m.Set("config", []config.Target{a})
	waitFor(t, "a up", func() bool { return f.isUp(a.String()) })
	m.Set("config", []config.Target{b})
	waitFor(t, "b up, a down", func() bool { return f.isUp(b.String()) && !f.isUp(a.String()) })
}

func TestKickRedialsAWaitingTargetNow(t *testing.T) {
	f := newFakeDialer()
	f.fail = true
	m := New(Options{Connect: f.connect, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	defer m.Close()
	a := target(t, "span:127.0.0.1:9001")
	m.Set("config", []config.Target{a})
	waitFor(t, "first attempt", func() bool { return f.count(a.String()) == 1 })
	if !m.Kick(a) {
		t.Fatal("Kick does not know the target")
	}
	waitFor(t, "kicked attempt", func() bool { return f.count(a.String()) == 2 })
	if m.Kick(target(t, "span:127.0.0.1:1")) {
		t.Fatal("Kick claims an unknown target")
	}
}

func TestCloseStopsEveryLink(t *testing.T) {
	f := newFakeDialer()
	m := New(Options{Connect: f.connect})
	a := target(t, "span:127.0.0.1:9001")
	m.Set("config", []config.Target{a})
	waitFor(t, "up", func() bool { return f.isUp(a.String()) })
	m.Close()
	if f.isUp(a.String()) {
		t.Fatal("link survived Close")
	}
	m.Set("config", []config.Target{a}) // after Close: ignored
	if len(m.Targets()) != 0 {
		t.Fatal("targets after Close")
	}
}

func TestStatusFollowsDialsFailuresAndTheBackoff(t *testing.T) {
	f := newFakeDialer()
	f.fail = true
	m := New(Options{Connect: f.connect, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	defer m.Close()
	a := target(t, "span:127.0.0.1:9001")
	a.Name = "lab"
	m.Set("config", []config.Target{a})
	var st Status
	waitFor(t, "a failed attempt waiting out its backoff", func() bool {
		sts := m.Status()
		if len(sts) != 1 {
			return false
		}
		st = sts[0]
		return !st.NextDial.IsZero()
	})
	if st.Target != a || st.Dials != 1 || st.Failures != 1 || st.Connected || st.LastError != "refused" {
		t.Fatalf("after one refused dial: %+v", st)
	}
	if wait := time.Until(st.NextDial); wait < 30*time.Minute {
		t.Fatalf("next dial in %v, want about the hour of backoff", wait)
	}

	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	m.Kick(a)
	waitFor(t, "the kicked dial connected", func() bool {
		st = m.Status()[0]
		return st.Connected
	})
	if st.Dials != 2 || st.Failures != 1 || !st.NextDial.IsZero() {
		t.Fatalf("after a successful dial: %+v", st)
	}
	f.drop(a.String())
	waitFor(t, "the dropped link waiting to redial", func() bool {
		st = m.Status()[0]
		return !st.Connected && !st.NextDial.IsZero()
	})
	m.Set("config", nil)
	if sts := m.Status(); len(sts) != 0 {
		t.Fatalf("status of a removed target: %+v", sts)
	}
}

// A peer's source can change at will: the lines about its targets (added,
// removed, failed dials) are written once per kind and window, with a
// count, while those of the configuration's targets are written each.
func TestThePeerSourcesLinesAreRateLimited(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	events := ratelog.New(log, time.Hour)
	f := newFakeDialer()
	f.fail = true
	m := New(Options{Connect: f.connect, Logger: log, Events: events, MinBackoff: time.Hour, MaxBackoff: time.Hour,
		PeerSource: func(s string) bool { return strings.HasPrefix(s, "volconf:") }})
	const n = 50
	var peer []config.Target
	for i := range n {
		peer = append(peer, target(t, fmt.Sprintf("span:127.0.0.1:%d", 10000+i)))
	}
	m.Set("volconf:x", peer)
	m.Set("config", []config.Target{target(t, "span:127.0.0.1:9001")})
	waitFor(t, "every target dialled once", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.dials) == n+1
	})
	waitFor(t, "every failure noted", func() bool {
		for _, st := range m.Status() {
			if st.NextDial.IsZero() {
				return false
			}
		}
		return true
	})
	m.Set("volconf:x", nil)
	m.Close()
	events.Close() // writes the summaries
	count := func(msg string) (lines, repeated int) {
		for _, e := range logs.FilterMessageSnippet(msg).All() {
			lines++
			if r, ok := e.ContextMap()["repeated"].(int64); ok {
				repeated += int(r)
			}
		}
		return lines, repeated
	}
	for _, msg := range []string{"outbound target added", "outbound link failed", "outbound target removed"} {
		lines, repeated := count(msg)
		// The config's target writes its own line; the peer's 50 write
		// one line and one summary counting the other 49.
		if lines > 3 || lines+repeated < n {
			t.Errorf("%q: %d lines counting %d more, want at most 3 lines accounting for the %d peer targets",
				msg, lines, repeated, n)
		}
	}
}

// Setting one source's targets costs what that source holds, not what
// every source together does.
func BenchmarkSetOneSourceAmongMany(b *testing.B) {
	for _, others := range []int{0, 100, 10000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			connect := func(ctx context.Context, _ config.Target) (<-chan struct{}, error) { return ctx.Done(), nil }
			m := New(Options{Connect: connect})
			defer m.Close()
			for i := range others {
				m.Set(fmt.Sprintf("volconf:%d", i), []config.Target{{Host: "10.0.0.1", Port: 1 + i}})
			}
			a := []config.Target{{Host: "10.0.1.1", Port: 1}, {Host: "10.0.1.1", Port: 2}}
			b.ResetTimer()
			for i := range b.N {
				m.Set("volconf:me", a[i%2:i%2+1])
			}
		})
	}
}
