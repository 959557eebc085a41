package span

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestSelfAdvertisement(t *testing.T) {
	self := rspan("me", 7, 99) // Dist and Rnss are ignored: ours are 0 and cfg.Rnss
	self.Media[3] = 1

	t.Run("is sent at dist 0 with the router's rnss", func(t *testing.T) {
		f := newFixture(t, Config{Rnss: 1234, Self: &self})
		dst, _ := f.conn("dst", allOf)
		want := self
		want.Dist, want.Rnss = 0, 1234
		if got := dst.only(t).span; got != want {
			t.Fatalf("sent %+v, want %+v", got, want)
		}
	})
	t.Run("is refused when a peer sends it back, whatever its dist", func(t *testing.T) {
		f := newFixture(t, Config{MaxRelays: 1, Rnss: 1234, Self: &self})
		_, src := f.conn("src", allOf)
		dst, _ := f.conn("dst", allOf)
		looped := rspan("me", 0, 0) // a better (dist, rnss) than ours
		looped.FsLabel = "renamed"  // the node id is what names our node
		if l, err := f.e.SpanReceived(src, 1, looped); !errors.Is(err, ErrOwnNode) || l != nil {
			t.Fatalf("SpanReceived(our own node) = %v, %v; want ErrOwnNode", l, err)
		}
		if tx := dst.only(t); tx.span.Rnss != 1234 {
			t.Fatalf("dst got the received copy (rnss %d), want our own", tx.span.Rnss)
		}
		if ls := f.e.Snapshot().Clusters[0].Nodes[0].Links; len(ls) != 1 || ls[0].Via != ViaLocal || ls[0].Dist != 0 {
			t.Fatalf("our node's links in the snapshot are %+v, want only ours via local", ls)
		}
		f.wantStats(Stats{Clusters: 1, Nodes: 1, Links: 1, Relays: 2, Conns: 2})
	})
	t.Run("is not offered to a peer whose LNK_CONN names that node", func(t *testing.T) {
		f := newFixture(t, Config{MaxRelays: 2})
		_, src := f.conn("src", allOf)
		named := allOf
		named.PfsFsid = rspan("them", 0, 0).PfsFsid
		them, _ := f.conn("them", named)
		other, _ := f.conn("other", allOf)
		f.recv(src, rspan("them", 3, 0)) // them, as learnt over another path
		if len(them.open) != 0 {
			t.Fatalf("the node itself was offered its own advertisement: %v", them.got())
		}
		if tx := other.only(t); tx.span.FsLabel != "them" {
			t.Fatalf("other got %+v, want the advertisement of them", tx.span)
		}
	})
	t.Run("passes the filters like any span", func(t *testing.T) {
		f := newFixture(t, Config{Self: &self})
		dst, _ := f.conn("dst", dmsg.Conn{PeerMask: 1 << dmsg.PeerHammer2})
		if len(dst.open) != 0 {
			t.Fatalf("a connection not asking for routers got %v", dst.got())
		}
	})
	t.Run("is withdrawn everywhere by SetSelf(nil)", func(t *testing.T) {
		f := newFixture(t, Config{Self: &self})
		a, _ := f.conn("a", allOf)
		b, _ := f.conn("b", allOf)
		f.e.SetSelf(nil)
		if len(a.open)+len(b.open) != 0 {
			t.Fatalf("still sent: %v %v", a.got(), b.got())
		}
		f.wantStats(Stats{Conns: 2})
	})
	t.Run("replaced by SetSelf is withdrawn and sent anew", func(t *testing.T) {
		f := newFixture(t, Config{Self: &self})
		a, _ := f.conn("a", allOf)
		f.e.SetSelf(ptr(rspan("renamed", 0, 0)))
		if got := a.got(); !slices.Equal(got, []string{"renamed@0"}) {
			t.Fatalf("a has %v, want only the new advertisement", got)
		}
	})
}

func TestReconfigure(t *testing.T) {
	self := rspan("me", 0, 0)
	setup := func(t *testing.T) (*fixture, *fakePeer) {
		f := newFixture(t, Config{MaxRelays: 2, Rnss: 77, Self: &self})
		_, src := f.conn("src", allOf)
		dst, _ := f.conn("dst", allOf)
		for d := range uint32(4) {
			f.recv(src, rspan("n", d, 0))
		}
		return f, dst
	}
	cases := []struct {
		name    string
		cfg     Config
		want    []string
		wantErr error
	}{
		{"a lower K closes relays", Config{MaxRelays: 1, Self: &self}, []string{"me@0", "n@1"}, nil},
		{"a higher K opens relays", Config{MaxRelays: 3, Rnss: 77, Self: &self}, []string{"me@0", "n@1", "n@2", "n@3"}, nil},
		{"an unchanged config changes nothing", Config{MaxRelays: 2, Self: &self}, []string{"me@0", "n@1", "n@2"}, nil},
		{"no Self withdraws ours", Config{MaxRelays: 2}, []string{"n@1", "n@2"}, nil},
		{"another rnss is refused and nothing changes", Config{MaxRelays: 1, Rnss: 78}, []string{"me@0", "n@1", "n@2"}, ErrRnssChange},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, dst := setup(t)
			opened := dst.opened
			if err := f.e.Reconfigure(tc.cfg); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Reconfigure: %v, want %v", err, tc.wantErr)
			}
			if got := dst.got(); !slices.Equal(got, tc.want) {
				t.Fatalf("dst has %v, want %v", got, tc.want)
			}
			if len(tc.want) <= 3 && dst.opened != opened {
				t.Fatalf("relays were re-sent needlessly (%d opens)", dst.opened-opened)
			}
		})
	}
}

func TestConnectionsAreLoggedAtInfoAndSpansAtDebug(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFixture(t, Config{Logger: zap.New(core)})
	_, src := f.conn("L7", allOf)
	l := f.recv(src, rspan("n", 0, 0))
	f.e.SpanWithdrawn(l)
	f.e.ConnDown(src)
	want := []struct {
		msg   string
		level zapcore.Level
	}{
		{"span: conn up", zapcore.InfoLevel},
		{"span: received", zapcore.DebugLevel},
		{"span: withdrawn", zapcore.DebugLevel},
		{"span: conn down", zapcore.InfoLevel},
	}
	got := logs.All()
	if len(got) != len(want) {
		t.Fatalf("logged %d entries, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Message != w.msg || got[i].Level != w.level || got[i].ContextMap()["link"] != "L7" {
			t.Fatalf("entry %d = %s %q %v, want %s %q with link L7", i, got[i].Level, got[i].Message, got[i].ContextMap(), w.level, w.msg)
		}
	}
}

// TestTheEngineIsSafeForConcurrentUse drives one engine from several
// goroutines (run it with -race): every exported method takes the mutex.
func TestTheEngineIsSafeForConcurrentUse(t *testing.T) {
	f := newFixture(t, Config{Self: ptr(rspan("me", 0, 0))})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newPeer(fmt.Sprintf("g%d", g))
			c := f.e.ConnUp(p, allOf)
			for i := range 200 {
				l, err := f.e.SpanReceived(c, uint64(i+1), rspan(fmt.Sprintf("n%d", i%10), uint32(g), 0))
				if err != nil {
					t.Error(err)
					return
				}
				f.e.Snapshot()
				f.e.RelayOrigin(p, 0x101)
				f.e.SpanWithdrawn(l)
			}
			f.e.ConnDown(c)
		}()
	}
	wg.Wait()
	f.e.SetSelf(nil)
	f.wantStats(Stats{})
}

func TestNewPicksANonZeroRnssWhenNoneIsGiven(t *testing.T) {
	for range 100 {
		if New(Config{}).Rnss() == 0 {
			t.Fatal("rnss 0")
		}
	}
	if got := New(Config{Rnss: 5}).Rnss(); got != 5 {
		t.Fatalf("Rnss() = %d, want the configured 5", got)
	}
}

func TestAChangedSelfIsSentBeforeTheOldOneIsWithdrawn(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("K=%d", k), func(t *testing.T) {
			old := rspan("me", 0, 0)
			f := newFixture(t, Config{MaxRelays: k, Self: &old})
			p, _ := f.conn("p", allOf)
			first := p.only(t)
			changed := old
			changed.Media[0] = 1
			var order []string
			p.onOpen = func() { order = append(order, "open") }
			first.onClose = func() { order = append(order, "close") }
			f.e.SetSelf(&changed)
			if !slices.Equal(order, []string{"open", "close"}) {
				t.Fatalf("peer saw %v, want the new advertisement before the old one's DELETE", order)
			}
			if got := p.only(t).span; got.Media[0] != 1 {
				t.Fatalf("peer holds %+v, want the changed advertisement", got)
			}
		})
	}
}
