package e2e

import (
	bin "encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
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

	var target uint64
	a.wait("leafB's span at leafA", 30*time.Second, func() bool {
		target = a.spans["leafB"]
		return target != 0
	})
	const circ = 100
	open := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target})
	open.MsgID = circ
	if err := a.send(open); err != nil {
		t.Fatal(err)
	}
	var atB uint64
	b.wait("the LNK_CIRC at leafB", 20*time.Second, func() bool {
		if len(b.circIn) > 0 {
			atB = b.circIn[0]
		}
		return atB != 0
	})
	accept := &dmsg.Msg{Header: dmsg.Header{MsgID: atB,
		Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans}}
	if err := b.send(accept); err != nil {
		t.Fatal(err)
	}
	a.wait("the circuit accepted at leafA", 20*time.Second, func() bool { return a.circUp[circ] })

	// First stream: everything arrives, in order.
	const first = 3000
	go a.stream(circ, 1, first)
	b.receive(t, atB, 1, first)

	// Second stream, endless until the circuit breaks; n3 dies under it.
	stop := make(chan struct{})
	sent := make(chan uint64, 1)
	go func() { sent <- a.streamUntil(circ, first+1, stop) }()
	got := make(chan uint64, 1)
	var progress atomic.Uint64
	go func() {
		got <- b.receiveUntilEnd(t, atB, first+1, &progress, func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			_, ok := b.circEnd[atB]
			return ok
		})
	}()
	waitFor(t, 20*time.Second, "the second stream flowing", func() bool { return progress.Load() > first+500 })
	ds[2].kill()

	a.wait("leafA's circuit ended", 20*time.Second, func() bool { _, ok := a.circEnd[circ]; return ok })
	b.wait("leafB's circuit ended", 20*time.Second, func() bool { _, ok := b.circEnd[atB]; return ok })
	close(stop)
	n := <-sent
	last := <-got
	a.mu.Lock()
	codeA := a.circEnd[circ]
	a.mu.Unlock()
	b.mu.Lock()
	codeB := b.circEnd[atB]
	b.mu.Unlock()
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

// stream sends messages from..to on circuit circ, a circuit the leaf
// opened, in batches, within the circuit's credit; false means the link
// failed.
func (l *leaf) stream(circ, from, to uint64) bool {
	for seq := from; seq <= to; {
		var batch []*dmsg.Msg
		for ; seq <= to && len(batch) < 64; seq++ {
			m := dmsg.NewMsg(dmsg.DbgShell)
			m.Circuit = circ
			m.SetAux(payloadFor(seq))
			// Wait for credit only with nothing unsent: what is taken
			// must go out for more to come.
			if len(batch) > 0 && !l.tryCredit(circKey{circ, true}, m.EncodedSize()) {
				break
			}
			if len(batch) == 0 && l.takeCredit(circKey{circ, true}, m.EncodedSize()) != nil {
				return false
			}
			batch = append(batch, m)
		}
		if l.send(batch...) != nil {
			return false
		}
	}
	return true
}

// streamUntil sends numbered messages until stop is closed or the link
// fails, and returns the number after the last one sent.
func (l *leaf) streamUntil(circ, from uint64, stop chan struct{}) uint64 {
	seq := from
	for {
		select {
		case <-stop:
			return seq
		default:
		}
		if !l.stream(circ, seq, seq+63) {
			return seq
		}
		seq += 64
	}
}

// receive checks that messages from..to arrive on circuit circ, in order.
func (l *leaf) receive(t *testing.T, circ, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		select {
		case m := <-l.data:
			if err := checkData(m, circ, seq); err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("message %d of %d..%d did not arrive", seq, from, to)
		}
	}
}

// receiveUntilEnd checks messages from on arrive in order until the
// circuit has ended (ended reports it) and returns the number of the last
// one; progress follows it. The leaf queues a circuit's data before it
// notes the circuit's end, so once ended is true whatever is queued is
// all that arrived.
func (l *leaf) receiveUntilEnd(t *testing.T, circ, from uint64, progress *atomic.Uint64, ended func() bool) uint64 {
	seq := from
	deadline := time.After(time.Minute)
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	take := func(m *dmsg.Msg) bool {
		if err := checkData(m, circ, seq); err != nil {
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
			if !ended() {
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
			t.Errorf("circuit %d still open a minute into the stream", circ)
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
	var toB, toA uint64
	a.wait("leafB's span at leafA", 30*time.Second, func() bool { toB = a.spans["leafB"]; return toB != 0 })
	b.wait("leafA's span at leafB", 30*time.Second, func() bool { toA = b.spans["leafA"]; return toA != 0 })

	// leafA opens circuits 100..102 to leafB, leafB opens 200 to leafA.
	for id := uint64(100); id <= 102; id++ {
		m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: toB})
		m.MsgID = id
		a.send(m)
	}
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: toA})
	m.MsgID = 200
	b.send(m)
	accept := func(l *leaf, n int) []uint64 {
		var ids []uint64
		l.wait(fmt.Sprintf("%d LNK_CIRCs", n), 20*time.Second, func() bool {
			ids = append([]uint64(nil), l.circIn...)
			return len(ids) == n
		})
		for _, id := range ids {
			l.send(&dmsg.Msg{Header: dmsg.Header{MsgID: id,
				Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans}})
		}
		return ids
	}
	atB := accept(b, 3)
	atA := accept(a, 1)
	a.wait("leafA's circuits accepted", 20*time.Second, func() bool { return a.circUp[100] && a.circUp[101] && a.circUp[102] })
	b.wait("leafB's circuit accepted", 20*time.Second, func() bool { return b.circUp[200] })

	// Data on every circuit, both ways, arrives where it belongs.
	for _, id := range []uint64{100, 101, 102} {
		a.stream(id, id*1000, id*1000+99)
	}
	b.stream(200, 1, 100)
	got := map[uint64]int{}
	for range 300 {
		select {
		case m := <-b.data:
			got[m.Circuit]++
		case <-time.After(20 * time.Second):
			t.Fatalf("leafB got %v of 100 messages per circuit", got)
		}
	}
	for _, id := range atB {
		if got[id] != 100 {
			t.Fatalf("leafB got %v, want 100 messages on each of %v", got, atB)
		}
	}
	for range 100 {
		select {
		case m := <-a.data:
			if m.Circuit != atA[0] || m.Cmd&dmsg.FlagRevCirc != 0 {
				t.Fatalf("leafA got %s on circuit %d, want circuit %d without REVCIRC", dmsg.CmdString(m.Cmd), m.Circuit, atA[0])
			}
		case <-time.After(20 * time.Second):
			t.Fatal("leafA did not get leafB's messages")
		}
	}

	ds[0].kill()
	b.wait("every circuit ended at leafB", 20*time.Second, func() bool {
		_, mine := b.circEnd[200]
		n := 0
		for _, id := range atB {
			if _, ok := b.circEnd[id]; ok {
				n++
			}
		}
		return mine && n == len(atB)
	})
	b.mu.Lock()
	for id, code := range b.circEnd {
		if code != dmsg.ErrLostLink {
			t.Errorf("leafB's circuit %d ended with %s, want LOSTLINK", id, dmsg.ErrorString(code))
		}
	}
	b.mu.Unlock()
	for _, d := range ds[1:] {
		waitFor(t, 10*time.Second, d.name+" has no circuits", func() bool {
			tj, err := d.tree()
			return err == nil && len(tj.Circuits) == 0
		})
	}
}
