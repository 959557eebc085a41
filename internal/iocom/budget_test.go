package iocom_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// flood writes the peer's side of a link as fast as the socket takes it,
// the messages next builds, until the link breaks or the test ends. It
// never reads.
func flood(tb testing.TB, nc net.Conn, next func(i int) *dmsg.Msg) {
	p := dmsgtest.NewPeer(nc)
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			if p.Write(next(i)) != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		close(quit)
		p.Close()
		<-done
	})
}

func ping(int) *dmsg.Msg { return msg(dmsg.LnkPing, 0) }

// A peer that sends requests and never reads the answers is a slow
// consumer: its reader stops once the answers queued exceed the budget,
// so the queue does not grow past it, and the link closes once the queue
// has not drained for the grace period.
func TestAPeerFloodingPingsWithoutReadingIsClosedAsASlowConsumer(t *testing.T) {
	guard(t)
	const budget = 64 << 10
	const grace = 300 * time.Millisecond
	x, y := socketPair(t, transports[0])
	conn := startConn(t, x, iocom.Config{ID: "flooded", QueueBytes: budget, SlowConsumerGrace: grace,
		KeepaliveInterval: -1, KeepaliveTimeout: -1})
	flood(t, y, ping)
	var peak int
	waitUntil(t, "the link is closed", func() bool {
		peak = max(peak, conn.QueuedBytes())
		return isDone(conn)
	})
	var slow *iocom.SlowConsumerError
	if !errors.As(conn.Err(), &slow) {
		t.Fatalf("Err() = %v, want *SlowConsumerError", conn.Err())
	}
	t.Logf("%v; peak queue %d bytes after %d pings read", conn.Err(), peak, conn.Stats().RxMsgs)
	// One answer may be queued past the budget before the reader stops.
	if limit := budget + 64; peak > limit {
		t.Errorf("the queue reached %d bytes with a budget of %d: the reader did not stop", peak, budget)
	}
}

// While the answers queued for the peer exceed the budget, the reader
// does not read on: the peer's requests wait in the socket.
func TestTheReaderStopsWhileRepliesExceedTheBudget(t *testing.T) {
	guard(t)
	const budget = 16 << 10
	x, y := net.Pipe() // no socket buffers: the peer takes nothing at all
	conn := startConn(t, x, iocom.Config{ID: "paused", QueueBytes: budget, SlowConsumerGrace: -1,
		KeepaliveInterval: -1, KeepaliveTimeout: -1})
	flood(t, y, ping)
	// The writer may take a first batch of answers off the budget while
	// it blocks on the pipe, letting the reader read once more: wait
	// until the answers are over budget and the reader has settled.
	var read uint64
	var since time.Time
	waitUntil(t, "the answers fill the budget and the reader stops", func() bool {
		if conn.QueuedBytes() <= budget {
			return false
		}
		if now := conn.Stats().RxMsgs; now != read || since.IsZero() {
			read, since = now, time.Now()
			return false
		}
		return time.Since(since) >= 50*time.Millisecond
	})
	// An observation window, not a synchronisation: nothing may be read
	// in it.
	time.Sleep(100 * time.Millisecond)
	if now := conn.Stats().RxMsgs; now != read {
		t.Fatalf("the reader read %d more pings while their answers were over budget", now-read)
	}
	if isDone(conn) {
		t.Fatalf("the link closed with the slow-consumer check disabled: %v", conn.Err())
	}
}

// pad is a one-way LNK_PAD of n aux bytes: traffic the link queues that
// is not an answer to the peer (as span relays are).
func pad(n int) *dmsg.Msg { return msg(dmsg.LnkPad, 0, withAuxBytes(auxPool[:n])) }

// A legitimate burst far over the budget (a new link receiving the whole
// span table) does not close a peer that reads it at a slow but steady
// pace: what counts is that its backlog shrinks. A peer that stops
// reading in the middle of the same burst is closed.
func TestABurstOverTheBudgetClosesOnlyAPeerThatStopsReading(t *testing.T) {
	const (
		budget = 32 << 10
		grace  = 700 * time.Millisecond // a loaded machine may stall the test's reader that long
		burst  = 2 << 20                // 64 times the budget
		piece  = 4 << 10
	)
	for _, tc := range []struct {
		name   string
		stopAt int // bytes the peer reads before it stops; 0: it reads all
	}{
		{"a peer reading steadily keeps its link", 0},
		{"a peer that stops reading is closed", 128 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guard(t)
			a, b := net.Pipe() // no buffering: the Link writes only what the peer reads
			t.Cleanup(func() { b.Close() })
			conn := startConn(t, a, iocom.Config{ID: "burst", QueueBytes: budget, SlowConsumerGrace: grace,
				KeepaliveInterval: -1, KeepaliveTimeout: -1})
			for range burst / piece {
				if err := conn.SendOneWay(pad(piece - dmsg.BaseHeaderSize)); err != nil {
					t.Fatal(err)
				}
			}
			// Slow and steady: 16 KiB every 20 ms, 800 KiB/s, so the whole
			// burst takes more than three grace periods.
			buf := make([]byte, 16<<10)
			got := 0
			for got < burst && (tc.stopAt == 0 || got < tc.stopAt) {
				b.SetReadDeadline(time.Now().Add(testTimeout))
				n, err := io.ReadFull(b, buf)
				got += n
				if err != nil {
					t.Fatalf("after %d bytes: %v (link: %v)", got, err, conn.Err())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tc.stopAt == 0 {
				if isDone(conn) {
					t.Fatalf("the link closed although the peer read steadily: %v", conn.Err())
				}
				return
			}
			waitDone(t, conn)
			var slow *iocom.SlowConsumerError
			if !errors.As(conn.Err(), &slow) {
				t.Fatalf("Err() = %v, want *SlowConsumerError", conn.Err())
			}
		})
	}
}

// Two routers that both dump a span table many times their budget on a
// new link, each answering every span of the other, must not deadlock:
// the reader stops for answers over budget, not for the relays the
// peer has yet to read, so both keep reading and both dumps get through.
func TestTwoLinksDumpingOverBudgetToEachOtherDoNotDeadlock(t *testing.T) {
	guard(t)
	const (
		budget = 64 << 10
		spans  = 900 // 900 * 512 bytes each way, 7 times the budget; answers stay under it
	)
	x, y := net.Pipe() // no buffering at all: any cycle of stopped readers is a deadlock
	cfg := iocom.Config{QueueBytes: budget, SlowConsumerGrace: 2 * time.Second,
		KeepaliveInterval: -1, KeepaliveTimeout: -1}
	recs := [2]*recorder{newRecorder(map[uint32]policy{dmsg.LnkSpan: ack}), newRecorder(map[uint32]policy{dmsg.LnkSpan: ack})}
	var conns [2]*iocom.Link
	acked := [2]chan struct{}{make(chan struct{}, spans), make(chan struct{}, spans)}
	for i, nc := range []net.Conn{x, y} {
		c := cfg
		c.ID, c.Handler = string(rune('A'+i)), recs[i]
		conns[i] = iocom.NewLink(nc, c)
		for range spans {
			_, err := conns[i].Open(msg(dmsg.LnkSpan|dmsg.FlagCreate, 0), func(tx *iocom.Tx, m *dmsg.Msg) {
				if m.Cmd&dmsg.FlagCreate != 0 {
					acked[i] <- struct{}{}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range conns {
		c.Start()
		t.Cleanup(func() { c.Close(); waitDone(t, c) })
	}
	for i := range conns {
		for n := range spans {
			select {
			case <-acked[i]:
			case <-conns[i].Done():
				t.Fatalf("link %d went down after %d answers: %v", i, n, conns[i].Err())
			case <-time.After(testTimeout):
				t.Fatalf("link %d: only %d of %d spans answered", i, n, spans)
			}
		}
	}
}

// A sender of large answers (shell output) waits between pieces while the
// answers queued exceed the budget, and is released when the link closes.
func TestWaitReplyRoomHoldsALargeAnswerAtTheBudget(t *testing.T) {
	guard(t)
	const budget = 16 << 10
	a, b := net.Pipe()
	conn := startConn(t, a, iocom.Config{ID: "answers", QueueBytes: budget, SlowConsumerGrace: -1,
		KeepaliveInterval: -1, KeepaliveTimeout: -1})
	sent := make(chan int, 1)
	go func() {
		n := 0
		for conn.WaitReplyRoom() == nil {
			m := msg(dmsg.DbgShell|dmsg.FlagReply, 0, withAuxBytes(auxPool[:1000]))
			if conn.SendOneWay(m) != nil {
				break
			}
			n++
		}
		sent <- n
	}()
	waitUntil(t, "the answers reach the budget", func() bool { return conn.QueuedBytes() > budget })
	time.Sleep(50 * time.Millisecond) // observation window: the sender must be held
	if q := conn.QueuedBytes(); q > budget+2048 {
		t.Errorf("%d bytes queued with a budget of %d: the sender was not held", q, budget)
	}
	b.Close() // the link goes down; WaitReplyRoom must let go
	select {
	case n := <-sent:
		t.Logf("the sender queued %d answers before the link closed", n)
	case <-time.After(testTimeout):
		t.Fatal("WaitReplyRoom did not return when the link closed")
	}
}

// A peer that reads, but slower than the router keeps queuing for it, is
// a slow consumer too: its queue would grow without end.
func TestAPeerFallingFurtherBehindIsClosed(t *testing.T) {
	guard(t)
	const (
		budget = 32 << 10
		grace  = 200 * time.Millisecond
	)
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	conn := startConn(t, a, iocom.Config{ID: "behind", QueueBytes: budget, SlowConsumerGrace: grace,
		KeepaliveInterval: -1, KeepaliveTimeout: -1})
	// The peer takes 8 KiB every 20 ms (400 KiB/s) ...
	go func() {
		buf := make([]byte, 8<<10)
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// ... while 16 KiB are queued for it every 20 ms.
	waitUntil(t, "the link is closed", func() bool {
		conn.SendOneWay(pad(16<<10 - dmsg.BaseHeaderSize))
		time.Sleep(20 * time.Millisecond)
		return isDone(conn)
	})
	var slow *iocom.SlowConsumerError
	if !errors.As(conn.Err(), &slow) {
		t.Fatalf("Err() = %v, want *SlowConsumerError", conn.Err())
	}
}
