package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// watchers connects n leaves that take every span: each span a peer
// advertises is relayed to all of them.
func watchers(t *testing.T, r *testRouter, n int) {
	for i := range n {
		dialLeaf(t, r.tcpURL(), leafConfig{Label: fmt.Sprint("watcher", i)}).waitAcked()
	}
}

// farSpan is a router node one hop beyond the peer advertising it.
func farSpan(label string) dmsg.Span {
	s := routerSpan(label)
	s.Dist = 1
	return s
}

// withdrawRaw closes the peer's LNK_SPAN msgid.
func withdrawRaw(p *rawPeer, msgid uint64) {
	p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkSpan | dmsg.FlagDelete, MsgID: msgid}})
}

// A span the router relays to every other link costs it a relay per
// link, opened and closed again: a peer advertising and withdrawing spans
// in a loop is charged that fan-out under limits.link_rate, so its reader
// is slowed, where the few messages it sends alone would not be.
func TestAPeerChurningSpansIsChargedForTheirFanOut(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) {
		l.LinkRate = 500 // bursts of 1000 units
	}), withKeepaliveTimeout(time.Minute))
	watchers(t, r, 8)
	p := dialRaw(t, r.tcpURL(), true)
	p.send(connMsg(routerLNKConn("churner"), false, 0x1000))
	p.spanOf("r")
	// 60 spans, each advertised and withdrawn: 121 messages, about 2000
	// units of fan-out to the 8 watchers.
	for i := range uint64(60) {
		if ans := advertiseRaw(p, 0x2000+i, farSpan(fmt.Sprint("churn", i)), nil); refusedParam(ans) {
			t.Fatalf("span %d refused", i)
		}
		withdrawRaw(p, 0x2000+i)
	}
	for range 64 { // the reader settles its bill every 64 messages
		p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPad}})
	}
	eventually(t, "the churning peer's reader pauses for limits.link_rate", func() error {
		if n := readerPauses(t, r, "link_rate"); n == 0 {
			return fmt.Errorf("no pause")
		}
		return nil
	})
}

// A peer reconnecting in a loop makes the router relay its spans to every
// link and withdraw them again with each connection, and each link it
// opens is cheap on its own. The work is charged to its source address
// too: once the source has spent its limits.link_rate burst, its next
// link's LNK_CONN waits for the bucket, while another source is served at
// once.
func TestAPeerReconnectingInALoopIsHeldBeforeItsLNKCONN(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) {
		l.LinkRate = 100 // bursts of 200 units, debts of at most 2 s
		l.AcceptRatePerSource = 1000
	}), withKeepaliveTimeout(time.Minute))
	watchers(t, r, 4)
	const cycles = 20
	for c := range cycles {
		p := dialRawFrom(t, r, "127.0.0.3", true)
		p.send(connMsg(routerLNKConn(fmt.Sprint("churner", c)), false, 0x1000))
		p.spanOf("r")
		// 10 spans: 11 messages, fewer than the link's reader settles
		// its own bill at, about 100 units of fan-out and withdrawal.
		for i := range uint64(10) {
			advertiseRaw(p, 0x2000+i, farSpan(fmt.Sprintf("churn%d.%d", c, i)), nil)
		}
		p.Close()
		if readerPauses(t, r, "link_rate") > 0 {
			break
		}
	}
	eventually(t, "a link of the churning source waits before its LNK_CONN is served", func() error {
		if n := readerPauses(t, r, "link_rate"); n == 0 {
			return fmt.Errorf("no pause")
		}
		return nil
	})
	// Another source is not held for it.
	before := readerPauses(t, r, "link_rate")
	other := dialRawFrom(t, r, "127.0.0.4", true)
	other.send(connMsg(routerLNKConn("other"), false, 0x1000))
	other.spanOf("r")
	if n := readerPauses(t, r, "link_rate"); n != before {
		t.Errorf("another source's link was held too (%v pauses, want %v)", n, before)
	}
}
