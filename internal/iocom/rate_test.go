package iocom_test

import (
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/metrics"
)

// counter returns the value of a labelled counter of m, 0 if absent.
func counter(tb testing.TB, m *metrics.Metrics, name, label, value string) float64 {
	tb.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func readerPauses(tb testing.TB, m *metrics.Metrics) float64 {
	return counter(tb, m, "dmsgd_link_reader_pauses_total", "limit", "link_rate")
}

// sendBatches sends n copies of what mk builds, in batches.
func sendBatches(t *testing.T, p *rawPeer, n int, mk func() *dmsg.Msg) {
	t.Helper()
	for n > 0 {
		k := min(n, 100)
		batch := make([]*dmsg.Msg, k)
		for i := range batch {
			batch[i] = mk()
		}
		p.mustSend(batch...)
		n -= k
	}
}

// A peer that makes the reader work faster than limits.link_rate is
// slowed: its reader waits for the bucket, so what it sends beyond the
// burst takes at least the time the rate allows. Nothing is refused.
func TestAPeerWorkingTheReaderPastItsRateIsSlowed(t *testing.T) {
	guard(t)
	const (
		rate  = 2000
		burst = 200
		n     = 1200
	)
	m := metrics.New()
	rec := newRecorder(nil)
	x, y := socketPair(t, transports[0])
	conn := startConn(t, x, iocom.Config{ID: "metered", Handler: rec, WorkRate: rate, WorkBurst: burst,
		Metrics: m, KeepaliveInterval: -1, KeepaliveTimeout: -1})
	peer := newRawPeer(t, y)
	start := time.Now()
	sendBatches(t, peer, n, func() *dmsg.Msg { return msg(dmsg.DbgShell, 0) })
	waitUntil(t, "every message is handled", func() bool { return conn.Stats().RxMsgs == n && len(rec.unseen()) == 0 })
	// A lower bound only: a loaded machine may take longer, never less.
	if took, least := time.Since(start), time.Duration(n-burst-64)*time.Second/rate; took < least {
		t.Errorf("%d messages at %d/s with a burst of %d took %v, want at least %v", n, rate, burst, took, least)
	}
	if readerPauses(t, m) == 0 {
		t.Error("the reader never paused")
	}
}

// Replies are free: they answer what the router sent, so a flood relayed
// to a peer must not spend that peer's budget. Work a handler adds with
// Spend is charged like messages.
func TestRepliesAreFreeAndSpendIsCharged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		mk     func() *dmsg.Msg
		spend  int // per message, by the handler
		paused bool
	}{
		// 2000 units against a burst of 1000 if they were charged.
		{"replies to our pings cost nothing", 2000, func() *dmsg.Msg { return msg(dmsg.LnkPing|dmsg.FlagReply, 0) }, 0, false},
		// 2020 units against the same burst.
		{"a handler's Spend is charged", 20, func() *dmsg.Msg { return msg(dmsg.DbgShell, 0) }, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guard(t)
			n := tc.n
			m := metrics.New()
			h := &spender{recorder: newRecorder(nil), n: tc.spend}
			x, y := socketPair(t, transports[0])
			conn := startConn(t, x, iocom.Config{ID: "metered", Handler: h, WorkRate: 10000, WorkBurst: 1000,
				Metrics: m, KeepaliveInterval: -1, KeepaliveTimeout: -1})
			h.conn = conn
			peer := newRawPeer(t, y)
			sendBatches(t, peer, n, tc.mk)
			waitUntil(t, "every message is read", func() bool { return conn.Stats().RxMsgs == uint64(n) })
			if paused := readerPauses(t, m) > 0; paused != tc.paused {
				t.Errorf("reader paused: %v, want %v", paused, tc.paused)
			}
		})
	}
}

// spender charges every one-way message n units more.
type spender struct {
	*recorder
	conn *iocom.Link
	n    int
}

func (s *spender) OneWay(c *iocom.Link, m *dmsg.Msg) {
	s.recorder.OneWay(c, m)
	c.Spend(s.n)
}
