package iocom_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// testTimeout bounds every wait in these tests: nothing here should take
// more than a fraction of it, so reaching it means a hang.
const testTimeout = 20 * time.Second

// wantPanics counts the panics tests deliberately cause in handlers; every
// other recovered panic in link code is a bug.
var wantPanics atomic.Int64

// guard makes t fail if a goroutine it started outlives it or if link code
// recovered a panic the test did not ask for. Call it first thing, so that
// its cleanup runs after every cleanup the test registers later (closing
// Links, peers and listeners).
func guard(tb testing.TB) {
	tb.Helper()
	ignore := goleak.IgnoreCurrent()
	tb.Cleanup(func() {
		if got, want := iocom.Panics(), wantPanics.Load(); got != want {
			tb.Errorf("iocom.Panics() = %d, want %d: link code recovered from a panic", got, want)
		}
		goleak.VerifyNone(tb, ignore)
	})
}

// waitUntil polls cond until it holds, failing tb after testTimeout.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(testTimeout)
	for delay := 20 * time.Microsecond; !cond(); delay = min(2*delay, 5*time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", testTimeout, what)
		}
		time.Sleep(delay)
	}
}

// waitDone waits for c to be down, failing tb after testTimeout.
func waitDone(tb testing.TB, c *iocom.Link) {
	tb.Helper()
	t := time.NewTimer(testTimeout)
	defer t.Stop()
	select {
	case <-c.Done():
	case <-t.C:
		tb.Fatalf("link %s did not go down within %v", c.ID(), testTimeout)
	}
}

// isDone reports whether c is down, without waiting.
func isDone(c *iocom.Link) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// startConn wraps nc in a started Link that the test closes and waits for.
func startConn(tb testing.TB, nc net.Conn, cfg iocom.Config) *iocom.Link {
	tb.Helper()
	c := iocom.NewLink(nc, cfg)
	c.Start()
	tb.Cleanup(func() {
		c.Close()
		waitDone(tb, c)
	})
	return c
}

// ---- building messages and streams ----

// msgOpt adjusts a message built by msg.
type msgOpt func(*dmsg.Msg)

func withAux(s string) msgOpt      { return func(m *dmsg.Msg) { m.SetAux([]byte(s)) } }
func withError(code uint32) msgOpt { return func(m *dmsg.Msg) { m.Error = code } }
func onCircuit(id uint64) msgOpt   { return func(m *dmsg.Msg) { m.Circuit = id } }
func withAuxBytes(b []byte) msgOpt { return func(m *dmsg.Msg) { m.SetAux(b) } }
func withAuxDescr(d uint64) msgOpt { return func(m *dmsg.Msg) { m.AuxDescr = d } }

// msg builds a message with cmd (flags included) and msgid.
func msg(cmd uint32, msgid uint64, opts ...msgOpt) *dmsg.Msg {
	m := dmsg.NewMsg(cmd)
	m.MsgID = msgid
	for _, o := range opts {
		o(m)
	}
	return m
}

// describe renders a message for failure output.
func describe(m *dmsg.Msg) string {
	if m == nil {
		return "<none>"
	}
	s := fmt.Sprintf("%08x %s msgid %d", m.Cmd, dmsg.CmdString(m.Cmd), m.MsgID)
	if m.Circuit != 0 {
		s += fmt.Sprintf(" circuit %d", m.Circuit)
	}
	if m.Error != 0 {
		s += " error " + dmsg.ErrorString(m.Error)
	}
	if len(m.Aux) > 0 {
		s += fmt.Sprintf(" aux %q", truncate(string(m.Aux), 40))
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// ---- the raw peer: hand-built frames in, decoded frames out ----

// rawPeer is the far end of a Link's stream driven by the test itself: a
// dmsgtest.Peer that writes the messages the test builds (or, to break
// the framing on purpose, frames it damages), and a Recorder of everything
// the Link sends, which next and expect walk strictly in order.
type rawPeer struct {
	*dmsgtest.Peer
	tb   testing.TB
	rec  *dmsgtest.Recorder
	read int // messages next has returned: the Recorder's cursor
}

// newRawPeer starts recording what arrives on nc; the test's cleanup closes it.
func newRawPeer(tb testing.TB, nc net.Conn) *rawPeer {
	p := dmsgtest.NewPeer(nc)
	return &rawPeer{Peer: p, tb: tb, rec: p.Record(tb, dmsgtest.RecordOptions{})}
}

// mustSend sends msgs as the peer's next messages, failing the test if
// the stream does not take them.
func (p *rawPeer) mustSend(msgs ...*dmsg.Msg) {
	p.tb.Helper()
	if err := p.Send(msgs...); err != nil {
		p.tb.Fatalf("peer write: %v", err)
	}
}

// frame returns m's wire form as the peer's next message, for a test to
// damage and write with WriteRaw.
func (p *rawPeer) frame(m *dmsg.Msg) []byte {
	p.tb.Helper()
	b, err := p.Frame(m)
	if err != nil {
		p.tb.Fatalf("encode %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	return b
}

// next returns the next message the Link sent, failing the test if its
// stream ends or nothing comes.
func (p *rawPeer) next() *dmsg.Msg {
	p.tb.Helper()
	m := p.rec.Next("the Link's next message")
	p.read++
	return m
}

// expect returns the next message the Link sent and checks its cmd (with
// every flag) and msgid.
func (p *rawPeer) expect(cmd uint32, msgid uint64) *dmsg.Msg {
	p.tb.Helper()
	m := p.next()
	if m.Cmd != cmd || m.MsgID != msgid {
		p.tb.Fatalf("peer: got %s, want %08x %s msgid %d; transcript:\n%s",
			describe(m), cmd, dmsg.CmdString(cmd), msgid, p.rec.Transcript())
	}
	return m
}

// unread returns how many messages the Link sent that next has not
// returned yet.
func (p *rawPeer) unread() int { return p.rec.Len() - p.read }

// newRawLink starts a Link over one end of a net.Pipe and returns it with
// a raw peer on the other end. Keepalive is off unless cfg says otherwise.
func newRawLink(tb testing.TB, cfg iocom.Config) (*iocom.Link, *rawPeer) {
	tb.Helper()
	a, b := net.Pipe()
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = -1
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = -1
	}
	c := startConn(tb, a, cfg)
	p := newRawPeer(tb, b)
	tb.Cleanup(func() { // before the peer's cleanup ends the link
		if tb.Failed() && isDone(c) {
			tb.Logf("link %s went down with Err() = %v", c.ID(), c.Err())
		}
	})
	return c, p
}

// ---- the recording handler ----

// event is one call into the handlers of a Link.
type event struct {
	kind  string // "accept", "msg" (a TxHandler) or "oneway"
	local bool   // the transaction is one this side opened
	msgid uint64
	cmd   uint32
	err   uint32
	aux   string
}

func (e event) String() string {
	return fmt.Sprintf("%s %08x %s msgid %d error %s aux %q", e.kind, e.cmd, dmsg.CmdString(e.cmd), e.msgid, dmsg.ErrorString(e.err), truncate(e.aux, 40))
}

// policy is how the recorder answers a transaction the peer opens.
type policy int

const (
	refuse      policy = iota // Accept returns nil: the Link answers NOSUPP
	ack                       // answer REPLY|CREATE and keep the transaction open
	silent                    // accept without answering
	echo                      // answer once, REPLY|CREATE|DELETE, echoing the aux data
	refuseParam               // answer REPLY|CREATE|DELETE with PARAM itself, return nil
	panics                    // Accept panics
)

// recorder is a Handler that records every call and checks that each
// transaction's handler sees exactly one terminating message.
type recorder struct {
	policies map[uint32]policy // by base command; missing: refuse

	mu      sync.Mutex
	events  []event
	seen    int // events consumed by next
	notify  chan struct{}
	terms   map[*iocom.Tx]int  // DELETE-bearing messages seen, Accept's included
	handled map[*iocom.Tx]bool // transactions that have a handler
	remote  map[uint64]*iocom.Tx
}

func newRecorder(policies map[uint32]policy) *recorder {
	return &recorder{policies: policies, notify: make(chan struct{}, 1),
		terms: make(map[*iocom.Tx]int), handled: make(map[*iocom.Tx]bool), remote: make(map[uint64]*iocom.Tx)}
}

func (r *recorder) record(e event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func eventOf(kind string, local bool, m *dmsg.Msg) event {
	return event{kind: kind, local: local, msgid: m.MsgID, cmd: m.Cmd, err: m.Error, aux: string(m.Aux)}
}

func (r *recorder) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	r.mu.Lock()
	r.remote[tx.MsgID()] = tx // before the event: steps after it look tx up
	r.mu.Unlock()
	r.record(eventOf("accept", false, m))
	switch r.policies[tx.Cmd()] {
	case refuse:
		return nil
	case refuseParam:
		tx.CloseError(dmsg.ErrParam)
		return nil
	case panics:
		panic("test handler panics on purpose")
	case ack:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
	case echo:
		reply := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
		reply.SetAux(m.Aux)
		tx.Send(reply)
	}
	r.track(tx)
	if m.Cmd&dmsg.FlagDelete != 0 {
		r.mu.Lock()
		r.terms[tx]++
		r.mu.Unlock()
	}
	return r.txHandler
}

func (r *recorder) OneWay(c *iocom.Link, m *dmsg.Msg) {
	r.record(eventOf("oneway", false, m))
}

// txHandler is the TxHandler of every transaction the recorder handles.
func (r *recorder) txHandler(tx *iocom.Tx, m *dmsg.Msg) {
	r.record(eventOf("msg", tx.Local(), m))
	if m.Cmd&dmsg.FlagDelete != 0 {
		r.mu.Lock()
		r.terms[tx]++
		r.mu.Unlock()
	}
}

// track marks tx as one whose handler must see one terminating message.
func (r *recorder) track(tx *iocom.Tx) {
	r.mu.Lock()
	r.handled[tx] = true
	r.mu.Unlock()
}

// next returns the next event not consumed yet, waiting up to testTimeout.
func (r *recorder) next(tb testing.TB) event {
	tb.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		if r.seen < len(r.events) {
			e := r.events[r.seen]
			r.seen++
			r.mu.Unlock()
			return e
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline.C:
			tb.Fatalf("handler: no call within %v", testTimeout)
		}
	}
}

// unseen returns and consumes the events next has not returned yet.
func (r *recorder) unseen() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events[r.seen:]
	r.seen = len(r.events)
	return ev
}

// remoteTx returns the latest transaction the peer opened with msgid.
func (r *recorder) remoteTx(msgid uint64) *iocom.Tx {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remote[msgid]
}

// termsOf returns how many terminating messages tx's handler saw.
func (r *recorder) termsOf(tx *iocom.Tx) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.terms[tx]
}

// last returns the latest handler call.
func (r *recorder) last() event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return event{}
	}
	return r.events[len(r.events)-1]
}

// checkTerminations verifies, once the link is down, that every handled
// transaction saw exactly one terminating message.
func (r *recorder) checkTerminations(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for tx := range r.handled {
		if n := r.terms[tx]; n != 1 {
			tb.Errorf("transaction %s msgid %d (local %v) saw %d terminating messages, want 1",
				dmsg.CmdString(tx.Cmd()), tx.MsgID(), tx.Local(), n)
		}
	}
}

// ---- flags by name ----

// flags parses "CREATE|DELETE|..." into cmd flag bits; "" is no flag.
func flags(s string) uint32 {
	var f uint32
	if s == "" {
		return 0
	}
	for _, name := range strings.Split(s, "|") {
		switch name {
		case "CREATE":
			f |= dmsg.FlagCreate
		case "DELETE":
			f |= dmsg.FlagDelete
		case "REPLY":
			f |= dmsg.FlagReply
		case "ABORT":
			f |= dmsg.FlagAbort
		case "REVTRANS":
			f |= dmsg.FlagRevTrans
		case "REVCIRC":
			f |= dmsg.FlagRevCirc
		default:
			panic("unknown flag " + name)
		}
	}
	return f
}

// flagNames renders flag bits the way flags parses them; "no flags" for 0.
func flagNames(f uint32) string {
	var names []string
	for _, n := range []string{"CREATE", "DELETE", "REPLY", "ABORT", "REVTRANS", "REVCIRC"} {
		if f&flags(n) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "no flags"
	}
	return strings.Join(names, "|")
}

// isProtocolError reports whether err is a *iocom.ProtocolError.
func isProtocolError(err error) bool {
	var pe *iocom.ProtocolError
	return errors.As(err, &pe)
}
