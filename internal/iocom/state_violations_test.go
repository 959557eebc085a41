package iocom_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// ---- violations ----

// TestViolationsCloseOnlyThatLink: each violation of section 3 closes the
// link with a *ProtocolError, terminates what was open on it, and leaves
// another link of the same process working.
func TestViolationsCloseOnlyThatLink(t *testing.T) {
	guard(t)
	bystander := newEchoPair(t)
	violations := []scenario{
		{name: "CREATE for a msgid the peer already has open", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(dmsg.LnkSpan|C, theirs(5)),
		}},
		{name: "DELETE for a transaction that does not exist", steps: []step{
			peerSends(closeOurs, theirs(7)),
		}},
		{name: "REPLY|DELETE for a transaction we never opened", steps: []step{
			peerSends(closeReply, theirs(7)),
		}},
		{name: "an in-stream message for a transaction that does not exist", steps: []step{
			peerSends(dmsg.LnkSpan, theirs(7)),
		}},
		{name: "an in-stream reply for a transaction we never opened", steps: []step{
			peerSends(streamReply, theirs(7)),
		}},
		{name: "REPLY|CREATE twice", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(ackReply, ours("a")),
		}},
		{name: "a reply before REPLY|CREATE", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(streamReply, ours("a")),
		}},
		{name: "a message after the peer's DELETE of its transaction", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(5)),
			handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
			connSends(ackReply, theirs(5), 0),
			peerSends(closeOurs, theirs(5)),
			handlerGets("msg", closeOurs, theirs(5)),
			peerSends(dmsg.LnkSpan, theirs(5)),
		}},
		{name: "a reply after the peer's REPLY|DELETE of our transaction", steps: []step{
			weOpen("a", dmsg.LnkSpan|C),
			connSends(dmsg.LnkSpan|C, ours("a"), 0),
			peerSends(ackReply, ours("a")),
			handlerGets("msg", ackReply, ours("a")),
			peerSends(closeReply, ours("a")),
			handlerGets("msg", closeReply, ours("a")),
			peerSends(streamReply, ours("a")),
		}},
		{name: "a transaction with msgid 0", steps: []step{
			peerSends(dmsg.LnkSpan|C, theirs(0)),
		}},
		{name: "a DELETE with msgid 0", steps: []step{
			peerSends(closeOurs, theirs(0)),
		}},
	}
	for _, v := range violations {
		t.Run(v.name+" closes only that link", func(t *testing.T) {
			guard(t)
			h := newHarness(t, nil)
			// Something open on the victim that link loss must terminate.
			weOpen("conn", dmsg.LnkConn|C)(h)
			connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
			h.run(append(slices.Clone(v.steps), violation())...)
			bystander.check(t)
		})
	}
}

// echoPair is two Links over a net.Pipe whose handlers echo single-message
// transactions: a link that must keep working while others fail.
type echoPair struct {
	a, b *iocom.Link
}

type echoHandler struct{}

func (echoHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	r := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
	r.SetAux(m.Aux)
	tx.Send(r)
	return func(*iocom.Tx, *dmsg.Msg) {}
}
func (echoHandler) OneWay(*iocom.Link, *dmsg.Msg) {}

func newEchoPair(t *testing.T) *echoPair {
	x, y := net.Pipe()
	cfg := iocom.Config{Handler: echoHandler{}, KeepaliveInterval: -1, KeepaliveTimeout: -1}
	cfg.ID = "bystander-a"
	a := startConn(t, x, cfg)
	cfg.ID = "bystander-b"
	b := startConn(t, y, cfg)
	return &echoPair{a: a, b: b}
}

// check runs one transaction across the pair.
func (p *echoPair) check(t *testing.T) {
	t.Helper()
	if isDone(p.a) || isDone(p.b) {
		t.Fatalf("bystander link went down: %v / %v", p.a.Err(), p.b.Err())
	}
	got := make(chan *dmsg.Msg, 1)
	_, err := p.a.Open(msg(dmsg.DbgShell|C|D, 0, withAux("still here")), func(tx *iocom.Tx, m *dmsg.Msg) { got <- m })
	if err != nil {
		t.Fatalf("bystander Open: %v", err)
	}
	select {
	case m := <-got:
		if string(m.Aux) != "still here" {
			t.Fatalf("bystander answered %s", describe(m))
		}
	case <-p.a.Done():
		t.Fatalf("bystander link went down: %v", p.a.Err())
	}
}

// ---- framing ----

// TestFramingErrorsCloseTheLink: a stream the decoder rejects closes the
// link with that error, and what was open on it is terminated.
func TestFramingErrorsCloseTheLink(t *testing.T) {
	span := func() *dmsg.Msg { return msg(dmsg.LnkSpan|C, 5, withAux("payload")) }
	cases := []struct {
		name string
		bad  func(p *rawPeer) []byte // what the peer writes after one good message
		want error
	}{
		{"a header CRC mismatch", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x08] ^= 1
			return b
		}, dmsg.ErrHeaderCRC},
		{"an aux CRC mismatch", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[len(b)-60] ^= 1 // inside the aux data
			return b
		}, dmsg.ErrAuxCRC},
		{"a sequence number out of order", func(p *rawPeer) []byte {
			p.frame(span()) // never sent: the next frame skips its number
			return p.frame(span())
		}, dmsg.ErrSequence},
		{"a bad magic", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0], b[1] = 0x34, 0x12
			return b
		}, dmsg.ErrBadMagic},
		{"an extended header of 0 units", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x20] = 0
			return b
		}, dmsg.ErrHeaderSize},
		{"an extended header of 33 units", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x20] = 33
			return b
		}, dmsg.ErrHeaderSize},
		{"aux data over 1 MiB", func(p *rawPeer) []byte {
			b := p.frame(span())
			b[0x28], b[0x29], b[0x2a], b[0x2b] = 0x40, 0x00, 0x10, 0x00 // 1 MiB + 64
			return b
		}, dmsg.ErrAuxSize},
		{"out-of-band aux data", func(p *rawPeer) []byte {
			return p.frame(msg(dmsg.LnkSpan|C, 5, withAuxDescr(1)))
		}, dmsg.ErrAuxDescr},
		{"the stream ending inside a base header", func(p *rawPeer) []byte {
			return p.frame(span())[:40]
		}, io.ErrUnexpectedEOF},
		{"the stream ending inside an extended header", func(p *rawPeer) []byte {
			return p.frame(span())[:200]
		}, io.ErrUnexpectedEOF},
		{"the stream ending inside the aux data", func(p *rawPeer) []byte {
			b := p.frame(span())
			return b[:len(b)-10]
		}, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name+" closes the link", func(t *testing.T) {
			guard(t)
			h := newHarness(t, nil)
			weOpen("conn", dmsg.LnkConn|C)(h)
			connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
			peerSends(dmsg.DbgShell, theirs(0), withAux("fine"))(h)
			handlerGets("oneway", dmsg.DbgShell, theirs(0))(h)
			h.peer.WriteRaw(tc.bad(h.peer)) // may fail once the Link stops reading
			h.peer.Close()                  // ends truncated frames
			waitDone(t, h.conn)
			if err := h.conn.Err(); !errors.Is(err, tc.want) {
				t.Fatalf("Err() = %v, want %v", err, tc.want)
			}
			if isProtocolError(h.conn.Err()) {
				t.Fatalf("a framing error is not a protocol violation: %v", h.conn.Err())
			}
			h.finish()
			if n := h.rec.termsOf(h.ours["conn"]); n != 1 {
				t.Fatalf("the open LNK_CONN saw %d terminating messages, want 1", n)
			}
		})
	}
}

func TestEndOfStreamAtAMessageBoundaryIsClean(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	h.run(
		weOpen("conn", dmsg.LnkConn|C),
		connSends(dmsg.LnkConn|C, ours("conn"), 0),
		peerSends(ackReply, ours("conn")),
		handlerGets("msg", ackReply, ours("conn")),
		peerSends(dmsg.DbgShell, theirs(0), withAuxBytes(bytes.Repeat([]byte("x"), 1000))),
		handlerGets("oneway", dmsg.DbgShell, theirs(0)),
	) // run: the peer closes, Err() must be nil, the LNK_CONN gets LOSTLINK
	e := h.rec.last()
	if e.cmd != dmsg.LnkError|R|RT|A|D || e.err != dmsg.ErrLostLink {
		t.Fatalf("last handler call %v, want LNK_ERROR|REPLY|REVTRANS|ABORT|DELETE with LOSTLINK", e)
	}
}

func TestLocalCloseIsClean(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	weOpen("conn", dmsg.LnkConn|C)(h)
	connSends(dmsg.LnkConn|C, ours("conn"), 0)(h)
	h.conn.Close()
	waitDone(t, h.conn)
	if err := h.conn.Err(); err != nil {
		t.Fatalf("Err() after Close = %v, want nil", err)
	}
	if _, err := h.conn.Open(msg(dmsg.LnkSpan|C, 0), nil); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if err := h.tx(ours("conn")).Send(msg(dmsg.LnkError, 0)); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("Tx.Send after Close = %v, want ErrClosed", err)
	}
	if err := h.conn.SendOneWay(msg(dmsg.DbgShell, 0)); !errors.Is(err, iocom.ErrClosed) {
		t.Fatalf("SendOneWay after Close = %v, want ErrClosed", err)
	}
	h.finish()
}

// TestUnsendableMessagesAreRefusedNotFatal: a message the encoder cannot
// send is refused by the call that queues it; the link stays up.
func TestUnsendableMessagesAreRefusedNotFatal(t *testing.T) {
	guard(t)
	h := newHarness(t, nil)
	weOpen("a", dmsg.LnkSpan|C)(h)
	connSends(dmsg.LnkSpan|C, ours("a"), 0)(h)
	big := make([]byte, dmsg.MaxAuxSize+1)
	cases := []struct {
		name string
		send func() error
		want error
	}{
		{"Open with aux data over 1 MiB", func() error {
			_, err := h.conn.Open(msg(dmsg.DbgShell|C, 0, withAuxBytes(big)), nil)
			return err
		}, dmsg.ErrAuxSize},
		{"Open with a header size of 0", func() error {
			_, err := h.conn.Open(msg(0x00100100|C, 0), nil)
			return err
		}, dmsg.ErrHeaderSize},
		{"Tx.Send with aux data over 1 MiB", func() error {
			return h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxBytes(big)))
		}, dmsg.ErrAuxSize},
		{"Tx.Send with out-of-band aux data", func() error {
			return h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxDescr(1)))
		}, dmsg.ErrAuxDescr},
		{"SendOneWay with a header size of 33", func() error {
			return h.conn.SendOneWay(msg(dmsg.DbgShell&^dmsg.SizeMask|33, 0))
		}, dmsg.ErrHeaderSize},
	}
	for _, tc := range cases {
		if err := tc.send(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Exactly 1 MiB is fine, and the link is still up.
	if err := h.tx(ours("a")).Send(msg(dmsg.LnkError, 0, withAuxBytes(big[:dmsg.MaxAuxSize]))); err != nil {
		t.Fatalf("Tx.Send with 1 MiB of aux data: %v", err)
	}
	if m := h.peer.expect(dmsg.LnkError, h.msgid(ours("a"))); len(m.Aux) != dmsg.MaxAuxSize {
		t.Fatalf("got %d bytes of aux data, want %d", len(m.Aux), dmsg.MaxAuxSize)
	}
	h.run(openTx(1))
}

// TestAPanickingHandlerClosesOnlyItsLink: the panic is recovered and
// counted, the link goes down, and what was open is terminated once.
func TestAPanickingHandlerClosesOnlyItsLink(t *testing.T) {
	guard(t)
	bystander := newEchoPair(t)
	h := newHarness(t, map[uint32]policy{dmsg.LnkCirc: panics})
	before := iocom.Panics()
	wantPanics.Add(1)
	h.run(
		weOpen("conn", dmsg.LnkConn|C),
		connSends(dmsg.LnkConn|C, ours("conn"), 0),
		peerSends(dmsg.LnkCirc|C, theirs(5)),
		handlerGets("accept", dmsg.LnkCirc|C, theirs(5)),
		linkFails("the panic", func(err error) bool { return err != nil }),
	)
	if got := iocom.Panics(); got != before+1 {
		t.Fatalf("Panics() = %d, want %d", got, before+1)
	}
	bystander.check(t)
}

// TestForwardIsOfferedCircuitMessages: with Config.Forward set, messages of
// non-zero circuits go to it before the state machine, and what it relays
// leaves the other link with only the circuit and REVCIRC changed.
func TestForwardIsOfferedCircuitMessages(t *testing.T) {
	guard(t)
	out, outPeer := newRawLink(t, iocom.Config{ID: "out"})
	rec := newRecorder(defaultPolicies)
	var offered []string // only the reader goroutine appends
	conn, peer := newRawLink(t, iocom.Config{ID: "router", Handler: rec,
		Forward: func(c *iocom.Link, f *iocom.Frame) bool {
			offered = append(offered, fmt.Sprintf("%d:%s", f.Circuit, dmsg.CmdString(f.Cmd)))
			if f.Circuit != 7 {
				return false
			}
			if err := f.RelayTo(out, 70, true, nil); err != nil {
				t.Errorf("RelayTo: %v", err)
			}
			return true
		}})
	big := make([]byte, 40<<10) // too large to be relayed as bytes
	for i := range big {
		big[i] = byte(i)
	}
	h := &harness{t: t, conn: conn, peer: peer, rec: rec, ours: make(map[string]*iocom.Tx)}
	h.run(
		peerSends(dmsg.LnkSpan|C, theirs(5), onCircuit(7), withAux("hello")),
		peerSends(dmsg.DbgShell|dmsg.FlagRevCirc, theirs(0), onCircuit(7), withAuxBytes(big)),
		peerSends(dmsg.DbgShell, theirs(0), onCircuit(8)), // declined: no such scope, dropped
		peerSends(dmsg.LnkSpan|C, theirs(5)),              // circuit 0: never offered
		handlerGets("accept", dmsg.LnkSpan|C, theirs(5)),
		connSends(ackReply, theirs(5), 0),
	)
	want := "[7:LNK_SPAN|CREATE 7:DBG_SHELL|REVCIRC 8:DBG_SHELL]"
	if fmt.Sprint(offered) != want {
		t.Fatalf("Forward was offered %v, want %s", offered, want)
	}
	m := outPeer.expect(dmsg.LnkSpan|C|dmsg.FlagRevCirc, 5)
	if m.Circuit != 70 || string(m.Aux) != "hello" {
		t.Errorf("relayed as circuit %d with aux %q, want circuit 70 and %q", m.Circuit, m.Aux, "hello")
	}
	m = outPeer.expect(dmsg.DbgShell|dmsg.FlagRevCirc, 0)
	if m.Circuit != 70 || !bytes.Equal(m.Aux, big) {
		t.Errorf("large message relayed as circuit %d with %d aux bytes, want circuit 70 and the %d sent", m.Circuit, len(m.Aux), len(big))
	}
	if s := out.Stats(); s.TxMsgs != 2 {
		t.Errorf("out link counts %d messages sent, want 2", s.TxMsgs)
	}
}
