package e2e

import (
	bin "encoding/binary"
	"fmt"
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
	go func() { got <- b.receiveUntilEnd(t, atB, first+1) }()
	time.Sleep(300 * time.Millisecond)
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

// stream sends messages from..to on circuit circ, in batches; false means
// the link failed.
func (l *leaf) stream(circ, from, to uint64) bool {
	for seq := from; seq <= to; {
		var batch []*dmsg.Msg
		for ; seq <= to && len(batch) < 64; seq++ {
			m := dmsg.NewMsg(dmsg.DbgShell)
			m.Circuit = circ
			m.SetAux(payloadFor(seq))
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

// receiveUntilEnd checks messages from on arrive in order until nothing
// more comes, and returns the number of the last one.
func (l *leaf) receiveUntilEnd(t *testing.T, circ, from uint64) uint64 {
	seq := from
	for {
		select {
		case m := <-l.data:
			if err := checkData(m, circ, seq); err != nil {
				t.Error(err)
				return seq
			}
			seq++
		case <-time.After(3 * time.Second):
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
