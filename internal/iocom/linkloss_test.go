package iocom_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// ---- link loss mid-flight ----

// busy keeps transactions going on s until the link dies, each waiting
// for the answer to one message before sending the next: long
// multi-message ones in various states (open both ways, closed by us,
// closed by the peer) and a stream of single-message ones.
func busy(s *side, wg *sync.WaitGroup, n int) {
	c := s.conn
	ctx := context.Background()
	answered := func(ch <-chan *dmsg.Msg) bool {
		select {
		case <-ch:
			return true
		case <-c.Done():
			return false
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := make(chan *dmsg.Msg, 8)
			if i%4 == 3 {
				for c.WaitRoom(ctx) == nil {
					m := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagCreate | dmsg.FlagDelete)
					m.SetAux(auxPool[i : i+100])
					if _, err := s.open(m, ch); err != nil || !answered(ch) {
						return
					}
				}
				return
			}
			tx, err := s.open(dmsg.NewMsg(dmsg.LnkSpan|dmsg.FlagCreate), ch)
			if err != nil || !answered(ch) {
				return
			}
			for j := 0; c.WaitRoom(ctx) == nil; j++ {
				m := dmsg.NewMsg(dmsg.LnkSpan)
				switch {
				case j == 2 && i%4 == 1:
					tx.Close() // half-closed by us: the peer holds its DELETE
					return
				case j == 2 && i%4 == 2:
					m.Error = 1 // asks the peer to close its side; we go on
				default:
					m.SetAux(auxPool[j%1000 : j%1000+1+i])
				}
				if err := tx.Send(m); err != nil || !answered(ch) {
					return
				}
			}
		}()
	}
}

func TestLinkLossTerminatesEveryOpenTransactionOnce(t *testing.T) {
	kills := []struct {
		name string
		kill func(a *side, ncA net.Conn)
	}{
		{"closing one Conn", func(a *side, _ net.Conn) { a.conn.Close() }},
		{"closing the socket under one Conn", func(_ *side, ncA net.Conn) { ncA.Close() }},
	}
	for _, tr := range transports {
		for _, k := range kills {
			t.Run(fmt.Sprintf("%s over %s terminates every open transaction on both sides once, LNK_CONN last", k.name, tr.name), func(t *testing.T) {
				guard(t)
				a, b, ncA, _ := linkPair(t, tr, true)
				var wg sync.WaitGroup
				busy(a, &wg, 100)
				busy(b, &wg, 100)
				waitUntil(t, "both sides are busy", func() bool {
					return a.inStream.Load() > 300 && b.inStream.Load() > 300
				})
				k.kill(a, ncA)
				waitDone(t, a.conn)
				waitDone(t, b.conn)
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(testTimeout):
					t.Fatal("senders did not notice the link going down")
				}
				for _, s := range []*side{a, b} {
					if n := s.conn.Stats().OpenTx; n != 0 {
						t.Errorf("%s: Stats().OpenTx = %d after Done, want 0", s.name, n)
					}
					lost := s.checkEnds(t)
					t.Logf("%s: %d transactions tracked, %d terminated by link loss", s.name, len(s.tracked), lost)
				}
			})
		}
	}
}

// ---- flow control and orderly shutdown ----

// stalledLink is a Link over a net.Pipe whose far end reads nothing until
// drain is called, so that its outbound queue fills up.
type stalledLink struct {
	conn *iocom.Link
	far  net.Conn
}

func newStalledLink(t *testing.T, queueBytes int) *stalledLink {
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	conn := startConn(t, a, iocom.Config{ID: "stalled", QueueBytes: queueBytes, KeepaliveInterval: -1, KeepaliveTimeout: -1})
	return &stalledLink{conn: conn, far: b}
}

// writerSlack is what the writer can still take off the queue after fill
// stops: its 64 KiB buffer and one more message, encoded without blocking
// before it blocks on the pipe for good.
const writerSlack = 64<<10 + 9<<10

// fill queues one-way messages until the queue holds at least its limit
// even after the writer has taken what it can without blocking (the pipe
// is never read, so from then on the queue only grows).
func (s *stalledLink) fill(t *testing.T, limit int) (sent int) {
	t.Helper()
	for s.conn.QueuedBytes() < limit+writerSlack {
		m := dmsg.NewMsg(dmsg.DbgShell)
		m.SetAux(auxPool[:8<<10])
		if err := s.conn.SendOneWay(m); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	return sent
}

// drain starts reading the far end and returns how many messages arrived
// when the stream ends.
func (s *stalledLink) drain() <-chan int {
	n := make(chan int, 1)
	go func() {
		count := 0
		dmsgtest.NewPeer(s.far).Run(func(*dmsg.Msg) { count++ })
		n <- count
	}()
	return n
}

func TestWaitRoomHoldsBulkSendersWhileTheQueueIsFull(t *testing.T) {
	guard(t)
	const limit = 256 << 10
	s := newStalledLink(t, limit)
	s.fill(t, limit)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.conn.WaitRoom(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitRoom with a full queue and a cancelled context = %v, want context.Canceled", err)
	}
	// Control messages are never held back by the queue limit.
	tx, err := s.conn.Open(dmsg.NewMsg(dmsg.LnkConn|dmsg.FlagCreate), nil)
	if err != nil {
		t.Fatalf("Open with a full queue: %v", err)
	}
	if err := tx.Close(); err != nil {
		t.Fatalf("Tx.Close with a full queue: %v", err)
	}

	room := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		room <- s.conn.WaitRoom(ctx)
	}()
	s.drain()
	if err := <-room; err != nil {
		t.Fatalf("WaitRoom once the peer reads = %v, want nil", err)
	}
	if q := s.conn.QueuedBytes(); q >= limit {
		t.Fatalf("QueuedBytes() = %d after WaitRoom returned, want < %d", q, limit)
	}
	s.conn.Close()
	if err := s.conn.WaitRoom(context.Background()); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("WaitRoom after Close = %v, want ErrClosed", err)
	}
}

func TestWaitRoomReturnsWhenTheLinkCloses(t *testing.T) {
	guard(t)
	const limit = 64 << 10
	s := newStalledLink(t, limit)
	s.fill(t, limit)
	room := make(chan error, 1)
	go func() { room <- s.conn.WaitRoom(context.Background()) }()
	s.far.Close() // the writer fails, the link goes down
	select {
	case err := <-room:
		if !errors.Is(err, iocom.ErrClosed) {
			t.Fatalf("WaitRoom = %v, want ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("WaitRoom did not return when the link went down")
	}
}

func TestShutdownWritesEverythingQueuedThenCloses(t *testing.T) {
	guard(t)
	s := newStalledLink(t, 0)
	sent := s.fill(t, 1<<20)
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		result <- s.conn.Shutdown(ctx)
	}()
	got := s.drain()
	if err := <-result; err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	waitDone(t, s.conn)
	if n := <-got; n != sent {
		t.Fatalf("the peer received %d messages before the end of the stream, want all %d", n, sent)
	}
	if err := s.conn.Err(); err != nil {
		t.Fatalf("Err() after Shutdown = %v, want nil", err)
	}
}

func TestShutdownGivesUpWhenItsContextEnds(t *testing.T) {
	guard(t)
	s := newStalledLink(t, 0)
	s.fill(t, 256<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.conn.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a peer that never reads = %v, want DeadlineExceeded", err)
	}
	waitDone(t, s.conn)
}
