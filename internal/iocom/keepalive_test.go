package iocom_test

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Short keepalive settings for tests (PROTOCOL.md 3.2 uses 1 s and 10 s).
// Tests that a link stays up use a longer timeout, staysUpTimeout, and
// watch it for twice that: a 200 ms timeout is shorter than the stalls a
// loaded 2-core machine running -race can impose on the whole process.
const (
	pingEvery      = 20 * time.Millisecond
	deadAfter      = 200 * time.Millisecond
	staysUpTimeout = 500 * time.Millisecond
	staysUpPings   = int(2 * staysUpTimeout / pingEvery) // pings span at least 2 timeouts
)

// expectPings reads n messages from p, all of which must be one-way
// LNK_PINGs, answering each with LNK_PING|REPLY if answer is set. Unless
// since is zero (the time just before the Conn started, while it has sent
// nothing but pings), it also checks the pings were not sent too often: a
// ping leaves only after an interval without sending, so the n-th cannot
// arrive before n intervals have passed. (Gaps between single pings say
// nothing: two can queue up before the test reads them.)
func expectPings(t *testing.T, p *rawPeer, n int, answer bool, since time.Time) {
	t.Helper()
	for i := range n {
		m, err := p.next()
		if err != nil {
			t.Fatalf("ping %d: stream ended: %v", i, err)
		}
		if m.Cmd != dmsg.LnkPing || m.MsgID != 0 || m.Circuit != 0 {
			t.Fatalf("ping %d: got %s, want a one-way LNK_PING", i, describe(m))
		}
		if answer {
			p.mustSend(msg(dmsg.LnkPing|dmsg.FlagReply, 0))
		}
	}
	if elapsed := time.Since(since); !since.IsZero() && elapsed < time.Duration(n)*pingEvery {
		t.Fatalf("%d pings within %v, want at most one per %v", n, elapsed, pingEvery)
	}
}

func TestAnIdleLinkSendsPings(t *testing.T) {
	guard(t)
	start := time.Now()
	conn, peer := newRawLink(t, iocom.Config{ID: "idle", KeepaliveInterval: pingEvery, KeepaliveTimeout: -1})
	expectPings(t, peer, 5, false, start)
	if isDone(conn) {
		t.Fatalf("link went down: %v", conn.Err())
	}
}

func TestAPeerThatAnswersPingsStaysUp(t *testing.T) {
	guard(t)
	start := time.Now()
	conn, peer := newRawLink(t, iocom.Config{ID: "answered", KeepaliveInterval: pingEvery, KeepaliveTimeout: staysUpTimeout})
	expectPings(t, peer, staysUpPings, true, start)
	if isDone(conn) {
		t.Fatalf("link went down although the peer answered every ping: %v", conn.Err())
	}
}

func TestTwoIdleConnsKeepEachOtherUp(t *testing.T) {
	for _, tr := range transports {
		t.Run("over "+tr.name, func(t *testing.T) {
			guard(t)
			x, y := socketPair(t, tr)
			cfg := iocom.Config{KeepaliveInterval: pingEvery, KeepaliveTimeout: staysUpTimeout}
			cfg.ID = "A"
			a := startConn(t, x, cfg)
			cfg.ID = "B"
			b := startConn(t, y, cfg)
			// A side pings only when it has sent nothing for an interval, and
			// answers every ping it gets: at most two messages per interval.
			n := uint64(2 * staysUpPings)
			waitUntil(t, "both sides received enough pings and answers", func() bool {
				return isDone(a) || isDone(b) || (a.Stats().RxMsgs >= n && b.Stats().RxMsgs >= n)
			})
			if isDone(a) || isDone(b) {
				t.Fatalf("an idle link that pings went down: %v / %v", a.Err(), b.Err())
			}
		})
	}
}

// TestASilentPeerIsClosedAsDead: nothing received for KeepaliveTimeout
// closes the link with a *DeadLinkError and terminates what was open,
// whether or not the peer reads what we send.
func TestASilentPeerIsClosedAsDead(t *testing.T) {
	cases := []struct {
		name string
		peer func(t *testing.T) (net.Conn, func()) // the Conn's end, and the peer's
	}{
		{"a silent peer that reads", func(t *testing.T) (net.Conn, func()) {
			a, b := net.Pipe()
			p := newRawPeer(t, b) // decodes and discards everything
			return a, p.close
		}},
		{"a silent peer that does not even read (our writer blocks)", func(t *testing.T) (net.Conn, func()) {
			a, b := net.Pipe() // unbuffered: the first ping blocks the writer
			return a, func() { b.Close() }
		}},
		{"a silent TCP peer that does not read", func(t *testing.T) (net.Conn, func()) {
			a, b := socketPair(t, transports[0])
			return a, func() { b.Close() }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is closed with DeadLinkError", func(t *testing.T) {
			guard(t)
			nc, closePeer := tc.peer(t)
			defer closePeer()
			start := time.Now()
			rec := newRecorder(nil)
			conn := startConn(t, nc, iocom.Config{ID: "silent", Handler: rec,
				KeepaliveInterval: pingEvery, KeepaliveTimeout: deadAfter})
			tx, err := conn.Open(msg(dmsg.LnkConn|dmsg.FlagCreate, 0, withAuxBytes(auxPool[:256<<10])), rec.txHandler)
			if err != nil {
				t.Fatal(err)
			}
			rec.track(tx)
			waitDone(t, conn)
			elapsed := time.Since(start)
			var dead *iocom.DeadLinkError
			if !errors.As(conn.Err(), &dead) {
				t.Fatalf("Err() = %v (%T), want *DeadLinkError", conn.Err(), conn.Err())
			}
			if elapsed < deadAfter || dead.Silent < deadAfter {
				t.Fatalf("closed after %v reporting %v of silence, want at least %v", elapsed, dead.Silent, deadAfter)
			}
			t.Logf("closed after %v: %v", elapsed.Round(time.Millisecond), conn.Err())
			rec.checkTerminations(t)
			if e := rec.last(); e.err != dmsg.ErrLostLink {
				t.Fatalf("the open LNK_CONN ended with %v, want LOSTLINK", e)
			}
		})
	}
}

func TestANegativeTimeoutDisablesTheDeadLinkCheck(t *testing.T) {
	guard(t)
	start := time.Now()
	conn, peer := newRawLink(t, iocom.Config{ID: "patient", KeepaliveInterval: pingEvery, KeepaliveTimeout: -1})
	// The peer never sends; the pings span twice staysUpTimeout.
	expectPings(t, peer, staysUpPings, false, start)
	if isDone(conn) {
		t.Fatalf("link went down with the dead-link check disabled: %v", conn.Err())
	}
}

func TestNegativeIntervalAndTimeoutDisableKeepalive(t *testing.T) {
	guard(t)
	conn, peer := newRawLink(t, iocom.Config{ID: "quiet", KeepaliveInterval: -1, KeepaliveTimeout: -1})
	// An observation window, not a synchronisation: nothing may happen in it.
	window := time.NewTimer(3 * deadAfter)
	defer window.Stop()
	select {
	case <-conn.Done():
		t.Fatalf("link went down: %v", conn.Err())
	case <-window.C:
	}
	if n := peer.received(); n != 0 {
		t.Fatalf("the Conn sent %d messages with keepalive disabled, want none", n)
	}
}

// pausingHandler blocks the reader in OneWay until release is closed, as a
// router does while a circuit's queue is full.
type pausingHandler struct {
	paused  chan struct{}
	release chan struct{}
}

func (h *pausingHandler) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }
func (h *pausingHandler) OneWay(_ *iocom.Conn, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) == dmsg.DbgShell {
		close(h.paused)
		<-h.release
	}
}

// TestAReaderPausedLongerThanTheTimeoutIsNotDeclaredDead: while a handler
// holds the reader, what the peer sends waits in the socket; that is not
// silence, and the link must survive the pause.
func TestAReaderPausedLongerThanTheTimeoutIsNotDeclaredDead(t *testing.T) {
	guard(t)
	x, y := socketPair(t, transports[0])
	h := &pausingHandler{paused: make(chan struct{}), release: make(chan struct{})}
	var release sync.Once
	start := time.Now()
	conn := startConn(t, x, iocom.Config{ID: "paused", Handler: h,
		KeepaliveInterval: pingEvery, KeepaliveTimeout: staysUpTimeout})
	t.Cleanup(func() { release.Do(func() { close(h.release) }) }) // runs before the Conn is closed
	peer := newRawPeer(t, y)
	peer.mustSend(msg(dmsg.DbgShell, 0))
	select {
	case <-h.paused:
	case <-time.After(testTimeout):
		t.Fatal("the handler was not called")
	}
	// Our writer keeps pinging; the peer answers into the unread socket
	// for twice the timeout.
	expectPings(t, peer, staysUpPings, true, start)
	release.Do(func() { close(h.release) })
	expectPings(t, peer, 5, true, time.Time{})
	if isDone(conn) {
		t.Fatalf("link went down after its reader was paused: %v", conn.Err())
	}
}
