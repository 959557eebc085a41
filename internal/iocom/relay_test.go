package iocom_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// These tests drive Frame.RelayTo the way a router does: a Forward hook on
// link "in" relays circuit messages to link "out", both over real sockets
// (the relaying reader writes to them itself) or net.Pipes (it cannot).

// relayRig is a Link "in" whose Forward hook relays circuits by a table,
// a Link "out", and raw peers on both.
type relayRig struct {
	in, out         *iocom.Link
	inPeer, outPeer *rawPeer
	routes          map[uint64]route
	hook            atomic.Pointer[func(*iocom.Link, *iocom.Frame) bool] // replaces routes
}

// setForward makes f the rig's Forward hook instead of its routes.
func (r *relayRig) setForward(f func(*iocom.Link, *iocom.Frame) bool) { r.hook.Store(&f) }

// route says where a circuit arriving on "in" leaves "out".
type route struct {
	circuit uint64
	revCirc bool
	acct    *byteCount
}

// byteCount is an Accounter adding up what it is told.
type byteCount struct{ n atomic.Int64 }

func (b *byteCount) Written(_, n int) { b.n.Add(int64(n)) }

// pairs makes the two ends of a fresh connection for a rig.
type pairs struct {
	name string
	make func(tb testing.TB) (net.Conn, net.Conn)
}

var relayPairs = []pairs{
	{"tcp", func(tb testing.TB) (net.Conn, net.Conn) { return socketPair(tb, transports[0]) }},
	{"pipe", func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }},
}

func newRelayRig(t *testing.T, p pairs, h iocom.Handler, routes map[uint64]route) *relayRig {
	t.Helper()
	r := &relayRig{routes: routes}
	noKeepalive := iocom.Config{KeepaliveInterval: -1, KeepaliveTimeout: -1}
	a, b := p.make(t)
	cfg := noKeepalive
	cfg.ID = "out"
	r.out = startConn(t, a, cfg)
	r.outPeer = newRawPeer(t, b)
	a, b = p.make(t)
	cfg = noKeepalive
	cfg.ID, cfg.Handler, cfg.Forward = "in", h, r.forward
	r.in = startConn(t, a, cfg)
	r.inPeer = newRawPeer(t, b)
	return r
}

func (r *relayRig) forward(c *iocom.Link, f *iocom.Frame) bool {
	if h := r.hook.Load(); h != nil {
		return (*h)(c, f)
	}
	rt, ok := r.routes[f.Circuit]
	if !ok {
		return false
	}
	f.RelayTo(r.out, rt.circuit, rt.revCirc, rt.acct)
	return true
}

// payload is the aux data of test message i: its size varies from nothing
// to past what is relayed as bytes, so runs of frames cross chunk
// boundaries and large messages interleave with small ones.
func payload(rnd *rand.Rand, i int) []byte {
	var n int
	switch p := rnd.IntN(10); {
	case p < 6:
		n = rnd.IntN(256)
	case p < 9:
		n = 256 + rnd.IntN(8<<10)
	default:
		n = 16<<10 + rnd.IntN(8<<10)
	}
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(i + k)
	}
	return b
}

func TestRelayKeepsEachCircuitInOrderAndAccountsEveryByte(t *testing.T) {
	for _, p := range relayPairs {
		t.Run(p.name, func(t *testing.T) {
			guard(t)
			routes := map[uint64]route{
				7: {circuit: 70, acct: &byteCount{}},
				8: {circuit: 80, revCirc: true, acct: &byteCount{}},
			}
			r := newRelayRig(t, p, nil, routes)
			rnd := rand.New(rand.NewPCG(1, 2))
			const total = 2000
			sent := map[uint64]int64{} // bytes per incoming circuit
			aux := make([][]byte, total+1)
			var batch []*dmsg.Msg
			for i := range total {
				circ := uint64(7 + rnd.IntN(2))
				cmd := dmsg.DbgShell
				if rnd.IntN(3) == 0 {
					cmd |= dmsg.FlagRevCirc // REVCIRC is rewritten, whatever it was
				}
				aux[i+1] = payload(rnd, i)
				m := msg(cmd, uint64(i+1), onCircuit(circ), withAuxBytes(aux[i+1]))
				sent[circ] += int64(m.EncodedSize())
				batch = append(batch, m)
				if len(batch) == 50 || i == total-1 {
					r.inPeer.mustSend(batch...)
					batch = batch[:0]
				}
			}
			last := map[uint64]uint64{}
			for range total {
				m := r.outPeer.next()
				rt, ok := routes[m.Circuit/10]
				if !ok || rt.circuit != m.Circuit {
					t.Fatalf("message %d arrived on circuit %d", m.MsgID, m.Circuit)
				}
				if rev := m.Cmd&dmsg.FlagRevCirc != 0; rev != rt.revCirc {
					t.Fatalf("message %d on circuit %d has REVCIRC %v", m.MsgID, m.Circuit, rev)
				}
				if m.MsgID <= last[m.Circuit] {
					t.Fatalf("circuit %d: message %d after %d", m.Circuit, m.MsgID, last[m.Circuit])
				}
				last[m.Circuit] = m.MsgID
				if want := aux[m.MsgID]; !bytes.Equal(m.Aux, want) {
					t.Fatalf("message %d: aux data of %d bytes differs from the %d sent", m.MsgID, len(m.Aux), len(want))
				}
			}
			for circ, rt := range routes {
				waitUntil(t, fmt.Sprintf("circuit %d's bytes are accounted", circ), func() bool {
					return rt.acct.n.Load() == sent[circ]
				})
			}
		})
	}
}

// markerHandler answers every one-way DBG_SHELL on circuit 0 of "in" by
// sending one inside circuit 99 of "out", carrying the same aux data: a
// message of the data class, like a circuit's LNK_CIRC DELETE.
type markerHandler struct {
	out *iocom.Scope
}

func (h *markerHandler) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }

func (h *markerHandler) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	reply := dmsg.NewMsg(dmsg.DbgShell)
	reply.SetAux(bytes.Clone(m.Aux))
	h.out.SendOneWay(reply)
}

// TestRelayedMessagesLeaveBeforeWhatFollowsThemOnTheirLink: what a
// message makes the router send in the data class must not overtake the
// circuit traffic that arrived before it (a circuit's data before its
// LNK_CIRC DELETE).
func TestRelayedMessagesLeaveBeforeWhatFollowsThemOnTheirLink(t *testing.T) {
	for _, p := range relayPairs {
		t.Run(p.name, func(t *testing.T) {
			guard(t)
			h := &markerHandler{}
			r := newRelayRig(t, p, h, map[uint64]route{7: {circuit: 70, acct: &byteCount{}}})
			var err error
			if h.out, err = r.out.OpenScope(99, true, nil); err != nil {
				t.Fatal(err)
			}
			const rounds, perRound = 30, 40
			for round := range rounds {
				var batch []*dmsg.Msg
				for i := range perRound {
					batch = append(batch, msg(dmsg.DbgShell, uint64(round*perRound+i+1), onCircuit(7), withAux("data")))
				}
				batch = append(batch, msg(dmsg.DbgShell, 0, withAux(fmt.Sprint("marker ", round))))
				r.inPeer.mustSend(batch...)
			}
			for round := range rounds {
				for i := range perRound {
					if m, want := r.outPeer.next(), uint64(round*perRound+i+1); m.Circuit != 70 || m.MsgID != want {
						t.Fatalf("round %d: got %s, want relayed message %d", round, describe(m), want)
					}
				}
				if m, want := r.outPeer.next(), fmt.Sprint("marker ", round); m.Circuit != 99 || string(m.Aux) != want {
					t.Fatalf("round %d: got %s, want the %q the router sent", round, describe(m), want)
				}
			}
		})
	}
}

// TestRelayToALinkThatIsDownDropsTheMessages: the messages are reported
// to their Accounter as gone, and the link they arrived on carries on.
func TestRelayToALinkThatIsDownDropsTheMessages(t *testing.T) {
	guard(t)
	acct := &byteCount{}
	r := newRelayRig(t, relayPairs[0], nil, map[uint64]route{7: {circuit: 70, acct: acct}})
	r.out.Close()
	waitDone(t, r.out)
	var batch []*dmsg.Msg
	want := int64(0)
	for i := range 100 {
		m := msg(dmsg.DbgShell, uint64(i+1), onCircuit(7), withAuxBytes(make([]byte, i*300)))
		want += int64(m.EncodedSize())
		batch = append(batch, m)
	}
	batch = append(batch, msg(dmsg.LnkPing, 0))
	r.inPeer.mustSend(batch...)
	r.inPeer.expect(dmsg.LnkPing|dmsg.FlagReply, 0)
	if got := acct.n.Load(); got != want {
		t.Fatalf("Accounter told of %d bytes, want the %d relayed", got, want)
	}
	if isDone(r.in) {
		t.Fatal("the link the messages arrived on went down")
	}
}

// TestSmallBurstsToAStuckLinkCostAboutTheirSize: a reader copies what it
// relays from one read into one piece of memory. Messages that arrive a
// read at a time toward a link whose peer does not read must still cost
// about their own size while queued, not a whole piece each; otherwise a
// circuit's queue bound would not bound the router's memory.
func TestSmallBurstsToAStuckLinkCostAboutTheirSize(t *testing.T) {
	guard(t)
	a, b := net.Pipe() // b never reads: everything relayed to out stays queued
	t.Cleanup(func() { b.Close() })
	out := startConn(t, a, iocom.Config{ID: "out", KeepaliveInterval: -1, KeepaliveTimeout: -1})
	acct := &byteCount{}
	x, y := net.Pipe() // one write of the peer is one read of the reader
	peer := dmsgtest.NewPeer(y)
	in := startConn(t, x, iocom.Config{ID: "in", KeepaliveInterval: -1, KeepaliveTimeout: -1,
		Forward: func(_ *iocom.Link, f *iocom.Frame) bool {
			f.RelayTo(out, 70, false, acct)
			return true
		}})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 2000
	for range n {
		if err := peer.Send(msg(dmsg.DbgShell, 0, onCircuit(7), withAux("small"))); err != nil {
			t.Fatal(err)
		}
	}
	// The reader counts a message once it has relayed it, and shows its
	// counts when it goes back to the socket.
	waitUntil(t, "every message relayed", func() bool { return in.Stats().RxMsgs == n })
	relayed := int64(n * 128)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d bytes relayed to a stuck link (%d still queued), heap grew by %d KiB", relayed, out.QueuedBytes(), growth>>10)
	if limit := 8*relayed + 1<<20; growth > limit {
		t.Errorf("%d bytes relayed to a stuck link hold %d KiB of heap, more than %d KiB", relayed, growth>>10, limit>>10)
	}
	peer.Close()
}

// toBigEndian turns frame, a message with a 64-byte header in wire form,
// into what an opposite-endian sender puts on the wire in its place:
// magic 48 32, every header integer byte-swapped, hdr_crc over the bytes
// as sent.
func toBigEndian(b []byte) []byte {
	b[0], b[1] = 0x48, 0x32
	for _, f := range []struct{ off, size int }{
		{0x02, 2}, {0x04, 4}, {0x08, 8}, {0x10, 8}, {0x18, 8}, {0x20, 4},
		{0x24, 4}, {0x28, 4}, {0x2C, 4}, {0x30, 8}, {0x38, 4},
	} {
		slices.Reverse(b[f.off : f.off+f.size])
	}
	clear(b[0x3C:0x40])
	binary.BigEndian.PutUint32(b[0x3C:], dmsg.CRC(b[:dmsg.BaseHeaderSize]))
	return b
}

// TestAnOppositeEndianMessageIsRelayedInOrderAsOurs: it cannot be passed
// on as bytes, so it is decoded, and still leaves between its neighbours.
func TestAnOppositeEndianMessageIsRelayedInOrderAsOurs(t *testing.T) {
	guard(t)
	r := newRelayRig(t, relayPairs[0], nil, map[uint64]route{7: {circuit: 70, acct: &byteCount{}}})
	var stream []byte // one write: the swapped message arrives between the others
	for _, aux := range []string{"before", "swapped", "after"} {
		b := r.inPeer.frame(msg(dmsg.DbgShell, 0, onCircuit(7), withAux(aux)))
		if aux == "swapped" {
			b = toBigEndian(b)
		}
		stream = append(stream, b...)
	}
	if err := r.inPeer.WriteRaw(stream); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"before", "swapped", "after"} {
		if m := r.outPeer.next(); m.Circuit != 70 || string(m.Aux) != want {
			t.Fatalf("got %s, want %q relayed on circuit 70", describe(m), want)
		}
	}
}
