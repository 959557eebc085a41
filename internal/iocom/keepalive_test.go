package iocom_test

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Short keepalive settings for tests (docs/PROTOCOL.md 3.2 uses 1 s and 10 s).
// Tests that a link stays up use a longer timeout, staysUpTimeout, and
// watch it for one and a half timeouts: the timeout must be long against
// the stalls a loaded 2-core machine running -race imposes on the whole
// process (500 ms was not), while tests that a link dies need only a
// lower bound on how long that took.
const (
	pingEvery        = 20 * time.Millisecond
	deadAfter        = 200 * time.Millisecond
	staysUpTimeout   = 2 * time.Second
	staysUpPingEvery = 50 * time.Millisecond
	staysUpPings     = int(3 * staysUpTimeout / 2 / staysUpPingEvery) // pings span 1.5 timeouts
)

// expectPings reads n messages from p, all of which must be one-way
// LNK_PINGs, answering each with LNK_PING|REPLY if answer is set. Unless
// since is zero (the time just before the Link started, while it has sent
// nothing but pings), it also checks the pings were not sent more often
// than every: a ping leaves only after an interval without sending, so the
// n-th cannot arrive before n intervals have passed. (Gaps between single
// pings say nothing: two can queue up before the test reads them.)
func expectPings(t *testing.T, p *rawPeer, n int, answer bool, since time.Time, every time.Duration) {
	t.Helper()
	for i := range n {
		if m := p.next(); m.Cmd != dmsg.LnkPing || m.MsgID != 0 || m.Circuit != 0 {
			t.Fatalf("ping %d: got %s, want a one-way LNK_PING", i, describe(m))
		}
		if answer {
			p.mustSend(msg(dmsg.LnkPing|dmsg.FlagReply, 0))
		}
	}
	if elapsed := time.Since(since); !since.IsZero() && elapsed < time.Duration(n)*every {
		t.Fatalf("%d pings within %v, want at most one per %v", n, elapsed, every)
	}
}

func TestAnIdleLinkSendsPings(t *testing.T) {
	guard(t)
	start := time.Now()
	conn, peer := newRawLink(t, iocom.Config{ID: "idle", KeepaliveInterval: pingEvery, KeepaliveTimeout: -1})
	expectPings(t, peer, 5, false, start, pingEvery)
	if isDone(conn) {
		t.Fatalf("link went down: %v", conn.Err())
	}
}

func TestAPeerThatAnswersPingsStaysUp(t *testing.T) {
	guard(t)
	start := time.Now()
	conn, peer := newRawLink(t, iocom.Config{ID: "answered", KeepaliveInterval: staysUpPingEvery, KeepaliveTimeout: staysUpTimeout})
	expectPings(t, peer, staysUpPings, true, start, staysUpPingEvery)
	if isDone(conn) {
		t.Fatalf("link went down although the peer answered every ping: %v", conn.Err())
	}
}

func TestTwoIdleConnsKeepEachOtherUp(t *testing.T) {
	for _, tr := range transports {
		t.Run("over "+tr.name, func(t *testing.T) {
			guard(t)
			x, y := socketPair(t, tr)
			cfg := iocom.Config{KeepaliveInterval: staysUpPingEvery, KeepaliveTimeout: staysUpTimeout}
			cfg.ID = "A"
			a := startConn(t, x, cfg)
			cfg.ID = "B"
			b := startConn(t, y, cfg)
			// An observation window of 1.5 timeouts, in which neither side
			// may declare the other dead.
			start := time.Now()
			waitUntil(t, "1.5 keepalive timeouts to pass", func() bool {
				return isDone(a) || isDone(b) || time.Since(start) >= 3*staysUpTimeout/2
			})
			if isDone(a) || isDone(b) {
				t.Fatalf("an idle link that pings went down: %v / %v", a.Err(), b.Err())
			}
			// Something kept them up: a side pings when it has sent nothing
			// for an interval (a message per interval or two each way; a
			// quarter of that leaves room for a loaded machine).
			if least := uint64(staysUpPings / 4); a.Stats().RxMsgs < least || b.Stats().RxMsgs < least {
				t.Fatalf("received %d and %d messages in the window, want at least %d each", a.Stats().RxMsgs, b.Stats().RxMsgs, least)
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
		peer func(t *testing.T) (net.Conn, func()) // the Link's end, and the peer's
	}{
		{"a silent peer that reads", func(t *testing.T) (net.Conn, func()) {
			a, b := net.Pipe()
			p := newRawPeer(t, b) // decodes and keeps everything
			return a, func() { p.Close() }
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
	// The peer never sends, far longer than deadAfter.
	expectPings(t, peer, staysUpPings, false, start, pingEvery)
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
	if n := peer.unread(); n != 0 {
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
func (h *pausingHandler) OneWay(_ *iocom.Link, m *dmsg.Msg) {
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
		KeepaliveInterval: staysUpPingEvery, KeepaliveTimeout: staysUpTimeout})
	t.Cleanup(func() { release.Do(func() { close(h.release) }) }) // runs before the Link is closed
	peer := newRawPeer(t, y)
	peer.mustSend(msg(dmsg.DbgShell, 0))
	select {
	case <-h.paused:
	case <-time.After(testTimeout):
		t.Fatal("the handler was not called")
	}
	// Our writer keeps pinging; the peer answers into the unread socket
	// for one and a half timeouts.
	expectPings(t, peer, staysUpPings, true, start, staysUpPingEvery)
	release.Do(func() { close(h.release) })
	expectPings(t, peer, 5, true, time.Time{}, staysUpPingEvery)
	if isDone(conn) {
		t.Fatalf("link went down after its reader was paused: %v", conn.Err())
	}
}

// The dead-link check counts whole messages, not bytes: a peer that
// trickles a message a byte at a time, each byte well within the
// timeout, never completes one and is closed as dead. Otherwise a
// connection sending a byte now and then would hold its link forever.
func TestAPeerTricklingBytesIsClosedAsDead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix int // bytes of the message sent at once before the trickle
	}{
		{"a header trickled a byte at a time", 0},
		{"a message whose aux data trickles after its header", dmsg.BaseHeaderSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guard(t)
			x, y := socketPair(t, transports[0])
			rec := newRecorder(nil)
			conn := startConn(t, x, iocom.Config{ID: "trickled", Handler: rec,
				KeepaliveInterval: pingEvery, KeepaliveTimeout: deadAfter})
			peer := newRawPeer(t, y) // reads our pings
			b := peer.frame(msg(dmsg.DbgShell, 0, withAux(strings.Repeat("x", 4000))))
			if err := peer.WriteRaw(b[:tc.prefix]); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i := tc.prefix; i < len(b) && !isDone(conn); i++ {
				if err := peer.WriteRaw(b[i : i+1]); err != nil {
					break // the Link closed the link
				}
				time.Sleep(deadAfter / 10)
			}
			waitDone(t, conn)
			var dead *iocom.DeadLinkError
			if !errors.As(conn.Err(), &dead) {
				t.Fatalf("Err() = %v (%T) after %v, want *DeadLinkError", conn.Err(), conn.Err(), time.Since(start))
			}
			if dead.Silent < deadAfter {
				t.Fatalf("closed reporting %v without a whole message, want at least %v", dead.Silent, deadAfter)
			}
			if ev := rec.unseen(); len(ev) != 0 {
				t.Fatalf("the trickled message reached the handler: %v", ev)
			}
		})
	}
}
