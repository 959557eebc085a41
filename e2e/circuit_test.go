package e2e

import (
	"context"
	bin "encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
)

// A leaf on n1 opens a circuit to a leaf on n4 through n2 and n3 and
// streams numbered messages over it. Everything arrives in order; when n3
// is killed mid-stream both leaves see the circuit end with LOSTLINK,
// what arrived before is a gapless prefix of what was sent, and no
// router keeps a circuit.
func TestCircuitAcrossThreeRoutersStreamsInOrderAndAbortsWhenOneDies(t *testing.T) {
	ds := startLine(t, 4)
	a := dialLeaf(t, ds[0].port, "leafA")
	b := dialLeaf(t, ds[3].port, "leafB")
	circ := a.open(a.waitSpan("leafB"))
	atB := b.accepted(1)[0]
	a.up(circ)

	// First stream: everything arrives, in order.
	const first = 3000
	go stream(circ, 1, first)
	b.receive(t, atB, 1, first)

	// Second stream, endless until the circuit breaks; n3 dies under it.
	stop := make(chan struct{})
	sent := make(chan uint64, 1)
	go func() { sent <- streamUntil(circ, first+1, stop) }()
	got := make(chan uint64, 1)
	var progress atomic.Uint64
	go func() { got <- b.receiveUntilEnd(t, atB, first+1, &progress) }()
	waitFor(t, 20*time.Second, "the second stream flowing", func() bool { return progress.Load() > first+500 })
	ds[2].kill()

	codeA := endCode(t, circ, "leafA's circuit ended", 20*time.Second)
	codeB := endCode(t, atB, "leafB's circuit ended", 20*time.Second)
	close(stop)
	n := <-sent
	last := <-got
	if codeA != dmsg.ErrLostLink || codeB != dmsg.ErrLostLink {
		t.Errorf("circuit ended with %s at leafA and %s at leafB, want LOSTLINK at both",
			dmsg.ErrorString(codeA), dmsg.ErrorString(codeB))
	}
	if last >= n {
		t.Errorf("leafB received up to message %d, leafA sent only up to %d", last, n-1)
	}
	t.Logf("second stream: %d messages sent, the first %d arrived before n3 died", n-first-1, last-first)
	for _, d := range []*daemon{ds[0], ds[1], ds[3]} {
		waitFor(t, 10*time.Second, d.name+" has no circuits", func() bool {
			tj, err := d.tree()
			return err == nil && len(tj.Circuits) == 0
		})
	}
}

// payloadFor is message seq's aux data: its number, then filler of a size
// that varies with it, up to a few KiB.
func payloadFor(seq uint64) []byte {
	b := make([]byte, 8+int(seq*37%4000))
	bin.LittleEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq) + byte(i)
	}
	return b
}

// stream sends messages from..to on circuit c as fast as its credit
// and its link let it; false means the circuit or the link ended.
func stream(c *endpoint.Circuit, from, to uint64) bool {
	for seq := from; seq <= to; seq++ {
		// WaitRoom ends with the circuit or the link.
		if c.WaitRoom(context.Background()) != nil {
			return false
		}
		m := dmsg.NewMsg(dmsg.DbgShell)
		m.SetAux(payloadFor(seq))
		if c.SendOneWay(m) != nil {
			return false
		}
	}
	return true
}

// streamUntil sends numbered messages on c until stop is closed or the
// circuit ends, and returns the number after the last one sent.
func streamUntil(c *endpoint.Circuit, from uint64, stop chan struct{}) uint64 {
	seq := from
	for {
		select {
		case <-stop:
			return seq
		default:
		}
		if !stream(c, seq, seq+63) {
			return seq
		}
		seq += 64
	}
}

// receive checks that messages from..to arrive on circuit c, in order.
func (l *leaf) receive(t *testing.T, c *endpoint.Circuit, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		select {
		case m := <-l.data:
			if err := checkData(m, c.ID(), seq); err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("message %d of %d..%d did not arrive", seq, from, to)
		}
	}
}

// receiveUntilEnd checks messages from on arrive in order on c until it
// has ended and returns the number of the last one; progress follows it.
// The leaf's reader queues a circuit's data before it handles the
// circuit's end, so once c has ended whatever is queued is all that
// arrived.
func (l *leaf) receiveUntilEnd(t *testing.T, c *endpoint.Circuit, from uint64, progress *atomic.Uint64) uint64 {
	seq := from
	deadline := time.After(time.Minute)
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	take := func(m *dmsg.Msg) bool {
		if err := checkData(m, c.ID(), seq); err != nil {
			t.Error(err)
			return false
		}
		progress.Store(seq)
		seq++
		return true
	}
	for {
		select {
		case m := <-l.data:
			if !take(m) {
				return seq
			}
		case <-poll.C:
			if !ended(c) {
				continue
			}
			for {
				select {
				case m := <-l.data:
					if !take(m) {
						return seq
					}
				default:
					return seq - 1
				}
			}
		case <-deadline:
			t.Errorf("circuit %d still open a minute into the stream", c.ID())
			return seq - 1
		}
	}
}

func checkData(m *dmsg.Msg, circ, seq uint64) error {
	if m.Circuit != circ || m.Cmd&dmsg.FlagRevCirc != 0 {
		return fmt.Errorf("message %d arrived as %s on circuit %d, want circuit %d without REVCIRC",
			seq, dmsg.CmdString(m.Cmd), m.Circuit, circ)
	}
	if len(m.Aux) < 8 || bin.LittleEndian.Uint64(m.Aux) != seq {
		return fmt.Errorf("got a message of %d bytes where message %d was due", len(m.Aux), seq)
	}
	if want := payloadFor(seq); string(m.Aux) != string(want) {
		return fmt.Errorf("message %d: aux data differs from what was sent", seq)
	}
	return nil
}

// Several circuits in both directions share the links of a line of three
// routers; killing the router one leaf hangs off aborts every circuit at
// the other leaf with LOSTLINK, and the surviving routers drop them all.
func TestCircuitsBothWaysAbortWhenALeafsRouterDies(t *testing.T) {
	ds := startLine(t, 3)
	a := dialLeaf(t, ds[0].port, "leafA")
	b := dialLeaf(t, ds[2].port, "leafB")
	toB, toA := a.waitSpan("leafB"), b.waitSpan("leafA")

	// leafA opens three circuits to leafB, leafB one to leafA.
	var mine []*endpoint.Circuit
	for range 3 {
		mine = append(mine, a.open(toB))
	}
	theirs := b.open(toA)
	atB := b.accepted(3)
	atA := a.accepted(1)
	for _, c := range mine {
		a.up(c)
	}
	b.up(theirs)

	// Data on every circuit, both ways, arrives where it belongs.
	for i, c := range mine {
		first := uint64(100+i) * 1000
		stream(c, first, first+99)
	}
	stream(theirs, 1, 100)
	got := map[uint64]int{}
	for range 300 {
		select {
		case m := <-b.data:
			got[m.Circuit]++
		case <-time.After(20 * time.Second):
			t.Fatalf("leafB got %v of 100 messages per circuit", got)
		}
	}
	for _, c := range atB {
		if got[c.ID()] != 100 {
			t.Fatalf("leafB got %v, want 100 messages on each of its %d circuits", got, len(atB))
		}
	}
	for range 100 {
		select {
		case m := <-a.data:
			if m.Circuit != atA[0].ID() || m.Cmd&dmsg.FlagRevCirc != 0 {
				t.Fatalf("leafA got %s on circuit %d, want circuit %d without REVCIRC", dmsg.CmdString(m.Cmd), m.Circuit, atA[0].ID())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("leafA did not get leafB's messages")
		}
	}

	ds[0].kill()
	for _, c := range append(atB, theirs) {
		code := endCode(t, c, fmt.Sprintf("leafB's circuit %d ended", c.ID()), 20*time.Second)
		if code != dmsg.ErrLostLink {
			t.Errorf("leafB's circuit %d ended with %s, want LOSTLINK", c.ID(), dmsg.ErrorString(code))
		}
	}
	for _, d := range ds[1:] {
		waitFor(t, 10*time.Second, d.name+" has no circuits", func() bool {
			tj, err := d.tree()
			return err == nil && len(tj.Circuits) == 0
		})
	}
}
