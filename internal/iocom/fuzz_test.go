package iocom_test

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// FuzzLink feeds a Link a peer's stream and checks that whatever arrives,
// the link neither panics nor hangs nor leaks, that every transaction its
// handler took on sees exactly one terminating message, and that what the
// Link sends back is a well-formed stream obeying section 3.
//
// With structured false the input is the raw byte stream. With structured
// true it is a list of 4-byte message descriptions (see structuredStream)
// encoded into a stream with valid framing, so that the state machine
// rather than the decoder sees the fuzzer's choices.
func FuzzLink(f *testing.F) {
	captures, _ := filepath.Glob("../../testdata/dmsg-c-peer/*.bin")
	if len(captures) == 0 {
		f.Fatal("no capture files in ../../testdata/dmsg-c-peer")
	}
	for _, path := range captures {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(false, data)
	}
	for _, seed := range fuzzSeedStreams(f) {
		f.Add(false, seed)
	}
	for _, seed := range fuzzSeedTuples {
		f.Add(true, seed)
	}
	f.Fuzz(func(t *testing.T, structured bool, data []byte) {
		input := data
		if structured {
			input = structuredStream(t, data)
		}
		runFuzzLink(t, input)
	})
}

// fuzzCmds are the commands a structured input chooses from.
var fuzzCmds = []uint32{
	dmsg.LnkPad, dmsg.LnkPing, dmsg.LnkConn, dmsg.LnkConnV2, dmsg.LnkSpan,
	dmsg.LnkCirc, dmsg.LnkVolConf, dmsg.LnkError, dmsg.DbgShell,
	dmsg.LnkAuth, 0x00500101, 0x00200203, // unknown BLK and HM2 commands
	dmsg.LnkCredit,
}

// structuredStream turns data into a valid stream: every 4 bytes are one
// message.
//
//	byte 0: flags: bit 0 CREATE, 1 DELETE, 2 REPLY, 3 ABORT, 4 REVTRANS,
//	        5 REVCIRC, 6 circuit 1 instead of 0
//	byte 1: low nibble msgid (0..15, so that it meets the msgids the Link
//	        allocates), high nibble the error field (which the fuzz
//	        handler reads as instructions)
//	byte 2: command, an index into fuzzCmds
//	byte 3: aux data length: 0 below 128, 255 means 64 KiB, else
//	        (b-127)*37 bytes
//
// 1 to 3 bytes left over damage the tail of the stream: the first one
// picks whether to cut the stream short or flip one of its bits.
func structuredStream(tb testing.TB, data []byte) []byte {
	var msgs []*dmsg.Msg
	for ; len(data) >= 4; data = data[4:] {
		fl, id, ci, al := data[0], data[1], data[2], data[3]
		cmd := fuzzCmds[int(ci)%len(fuzzCmds)]
		for bit, f := range []uint32{dmsg.FlagCreate, dmsg.FlagDelete, dmsg.FlagReply,
			dmsg.FlagAbort, dmsg.FlagRevTrans, dmsg.FlagRevCirc} {
			if fl&(1<<bit) != 0 {
				cmd |= f
			}
		}
		m := msg(cmd, uint64(id&0x0f), withError(uint32(id>>4)))
		if fl&0x40 != 0 {
			m.Circuit = 1
		}
		switch {
		case al == 255:
			m.SetAux(bytes.Repeat([]byte{0xa5}, 64<<10))
		case al >= 128:
			m.SetAux(bytes.Repeat([]byte{al}, int(al-127)*37))
		}
		msgs = append(msgs, m)
	}
	out := stream(tb, msgs...)
	if len(data) > 0 && len(out) > 0 {
		pos := int(data[len(data)-1]) * 61 % len(out)
		if data[0]&1 == 0 {
			out = out[:pos] // the stream ends inside or between messages
		} else {
			out[pos] ^= 1 << ((data[0] >> 1) % 8)
		}
	}
	return out
}

// stream encodes msgs as one direction of a link from its first message:
// valid framing and sequence, so that every message reaches the state
// machine of the Link that reads it. Unlike an Encoder's, its salts are
// fixed, so that a fuzz input always makes the same bytes.
func stream(tb testing.TB, msgs ...*dmsg.Msg) []byte {
	tb.Helper()
	var out []byte
	for i, m := range msgs {
		out = append(out, frame(tb, m, uint8(i))...)
	}
	return out
}

// frame returns the wire form of m as message number seq of a stream:
// right salt, both CRCs sealed, so it passes framing.
func frame(tb testing.TB, m *dmsg.Msg, seq uint8) []byte {
	tb.Helper()
	c := *m
	c.Salt = 0xc0ffee00&^0xff | uint32(seq)
	b, err := dmsg.AppendMsg(nil, &c)
	if err != nil {
		tb.Fatalf("encode %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	return b
}

// fuzzSeedTuples are structured inputs: 4 bytes per message, see
// structuredStream. Flag bits: 1 CREATE, 2 DELETE, 4 REPLY, 8 ABORT,
// 0x10 REVTRANS.
var fuzzSeedTuples = [][]byte{
	// The peer opens LNK_CONN 5, a span 6 inside it, in-stream, DELETEs.
	{0x01, 0x05, 2, 0, 0x01, 0x06, 4, 0, 0x00, 0x06, 4, 130, 0x02, 0x06, 7, 0, 0x02, 0x05, 7, 0},
	// Replies to the transactions the Link opened before reading (1, 2).
	{0x15, 0x01, 7, 0, 0x14, 0x01, 7, 140, 0x16, 0x01, 7, 0, 0x17, 0x02, 7, 0},
	// Refusal of an unknown command, then the opener's DELETE.
	{0x01, 0x07, 10, 0, 0x02, 0x07, 7, 0},
	// Racing aborts: DELETE then ABORT|DELETE, then a late ABORT|DELETE.
	{0x01, 0x05, 4, 0, 0x02, 0x05, 7, 0, 0x0a, 0x05, 7, 0, 0x0a, 0x09, 7, 0},
	// Violations: CREATE twice; REPLY|CREATE twice; msgid 0.
	{0x01, 0x05, 4, 0, 0x01, 0x05, 4, 0},
	{0x15, 0x01, 7, 0, 0x15, 0x01, 7, 0},
	{0x01, 0x00, 4, 0},
	// DBG_SHELL one-way opens a transaction back; ping; DBG_SHELL|REVTRANS
	// inside our span after its REPLY|CREATE.
	{0x00, 0x00, 8, 131, 0x00, 0x00, 1, 0, 0x15, 0x01, 7, 0, 0x10, 0x01, 8, 140},
	// Error-field instructions: in-stream messages asking the handler to
	// close, abort and open back.
	{0x01, 0x05, 5, 0, 0x00, 0x15, 7, 0, 0x00, 0x25, 7, 0, 0x00, 0x45, 7, 0, 0x02, 0x05, 7, 0},
	// Circuit 1 messages, then a damaged tail.
	{0x41, 0x05, 4, 0, 0x40, 0x00, 1, 0, 0x01, 0x05, 4, 200, 0x31, 0x17},
	// Past the transaction budget (6 in the fuzz Link): refusals with
	// PARAM, then the overdraft (8) spent and the link closed.
	{0x01, 1, 4, 0, 0x01, 2, 4, 0, 0x01, 3, 4, 0, 0x01, 4, 4, 0, 0x01, 5, 4, 0, 0x01, 6, 4, 0, 0x01, 7, 4, 0, 0x01, 8, 4, 0, 0x01, 9, 4, 0, 0x01, 10, 4, 0, 0x01, 11, 4, 0, 0x01, 12, 4, 0, 0x01, 13, 4, 0, 0x01, 14, 4, 0, 0x01, 15, 4, 0},
	// Unknown commands held open up to the budget, two refused ones
	// closed by the peer, and spans opened again.
	{0x01, 3, 10, 0, 0x01, 4, 10, 0, 0x01, 5, 10, 0, 0x01, 6, 10, 0, 0x01, 7, 10, 0, 0x01, 8, 10, 0, 0x01, 9, 10, 0, 0x01, 10, 10, 0, 0x02, 9, 7, 0, 0x02, 10, 7, 0, 0x01, 11, 4, 0, 0x01, 12, 4, 0},
}

// fuzzSeedStreams are raw inputs built with valid framing: each reaches the
// state machine and exercises one rule of section 3, or one framing error.
func fuzzSeedStreams(tb testing.TB) [][]byte {
	span := dmsg.LnkSpan
	e := dmsg.LnkError
	C, D, R, A, RT := dmsg.FlagCreate, dmsg.FlagDelete, dmsg.FlagReply, dmsg.FlagAbort, dmsg.FlagRevTrans
	seeds := [][]*dmsg.Msg{
		{msg(span|C, 5), msg(span|C, 5)},         // CREATE for an open msgid
		{msg(e|D, 9)},                            // DELETE for an unknown transaction
		{msg(e, 9)},                              // in-stream for an unknown transaction
		{msg(e|C|R|RT, 1), msg(e|C|R|RT, 1)},     // REPLY|CREATE twice
		{msg(span|C, 5), msg(e|D, 5), msg(e, 5)}, // message after the peer's DELETE
		{msg(span|C, 0)},                         // transaction with msgid 0
		{msg(0x00500101|C, 7), msg(e|D, 7)},      // refusal, then the opener's DELETE
		{msg(span|C, 5), msg(e|D, 5), msg(e|A|D, 5), msg(e|A|D, 5)}, // racing aborts
		{msg(span|C, 5), msg(e|A, 5), msg(e, 5), msg(e|D, 5)},       // standalone ABORT mid-stream
		{msg(dmsg.DbgShell|C|D, 5, withAux("hi")), msg(e|A|D, 5)},   // ABORT|DELETE for a finished tx
		{msg(e|C|R|RT, 2), msg(dmsg.DbgShell|RT, 2, withAux("help\x00")), msg(e|R|RT|D, 2)},
		{msg(dmsg.LnkPing, 0), msg(dmsg.LnkPing|R, 0), msg(dmsg.DbgShell, 0, withAux("tree\x00"))},
		{msg(e|C|R|RT|D, 1, withError(dmsg.ErrNoSupp)), msg(e|C|R|RT, 2), msg(e|R|RT|D, 2)},
	}
	var out [][]byte
	for _, msgs := range seeds {
		out = append(out, stream(tb, msgs...))
	}
	// Framing errors after a valid first message.
	good := stream(tb, msg(span|C, 5))
	bad := frame(tb, msg(e, 5), 1)
	bad[9] ^= 0xff // header CRC
	out = append(out, append(bytes.Clone(good), bad...))
	out = append(out, append(bytes.Clone(good), frame(tb, msg(e, 5), 7)...)) // sequence
	out = append(out, append(bytes.Clone(good), frame(tb, msg(e, 5, withAux("cut short")), 1)[:100]...))
	return out
}

// fuzzConn is a net.Conn whose far side is the fuzz input: Read returns the
// input and then EOF; Write never blocks, and keeps (a bounded amount of)
// what the Link sent so the test can check it.
type fuzzConn struct {
	mu       sync.Mutex
	in       []byte
	out      []byte
	overflow bool
	closed   bool
}

const fuzzOutLimit = 8 << 20

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.out)+len(p) > fuzzOutLimit {
		c.overflow = true
	} else {
		c.out = append(c.out, p...)
	}
	return len(p), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *fuzzConn) LocalAddr() net.Addr              { return fuzzAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return fuzzAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

type fuzzAddr struct{}

func (fuzzAddr) Network() string { return "fuzz" }
func (fuzzAddr) String() string  { return "fuzz" }

// fuzzHandler takes part in the transactions the fuzz input opens, the
// way a router would: it accepts some commands, refuses others, answers
// in-stream messages, opens transactions back, and obeys the error field
// of in-stream messages (bit 0: close our side, bit 1: abort, bit 2: open
// a transaction back). It counts terminating messages per transaction.
type fuzzHandler struct {
	mu      sync.Mutex
	terms   map[*iocom.Tx]int
	handled map[*iocom.Tx]bool
	scopes  map[*iocom.Tx]*iocom.Scope // circuits the peer opened, by LNK_CIRC
}

func (h *fuzzHandler) track(tx *iocom.Tx) {
	h.mu.Lock()
	h.handled[tx] = true
	h.mu.Unlock()
}

func (h *fuzzHandler) term(tx *iocom.Tx) {
	h.mu.Lock()
	h.terms[tx]++
	h.mu.Unlock()
}

func (h *fuzzHandler) open(c *iocom.Link, cmd uint32) {
	if tx, err := c.Open(dmsg.NewMsg(cmd|dmsg.FlagCreate), h.txMsg); err == nil {
		h.track(tx)
	}
}

func (h *fuzzHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	switch tx.Cmd() {
	case dmsg.LnkConn, dmsg.LnkConnV2:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
		h.open(tx.Link(), dmsg.LnkSpan)
	case dmsg.LnkSpan:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
	case dmsg.LnkCirc:
		// accepted, answered later (or never); the circuit's messages
		// reach the same handler, within its windows if they are on
		if s, err := tx.Link().OpenScope(tx.MsgID(), false, h); err == nil {
			h.mu.Lock()
			h.scopes[tx] = s
			h.mu.Unlock()
		}
	case dmsg.DbgShell:
		r := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
		r.SetAux(m.Aux)
		tx.Send(r)
	case dmsg.LnkVolConf:
		tx.CloseError(dmsg.ErrParam)
		return nil
	default:
		return nil
	}
	h.track(tx)
	if m.Cmd&dmsg.FlagDelete != 0 {
		h.term(tx)
	}
	return h.txMsg
}

func (h *fuzzHandler) txMsg(tx *iocom.Tx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete != 0 {
		h.term(tx)
		h.mu.Lock()
		s := h.scopes[tx]
		delete(h.scopes, tx)
		h.mu.Unlock()
		if s != nil {
			s.Close(dmsg.ErrLostLink) // children first
		}
		tx.Close()
		return
	}
	switch {
	case m.Error&1 != 0:
		tx.Close()
	case m.Error&2 != 0:
		tx.Abort(dmsg.ErrIO)
	case m.Error&4 != 0:
		h.open(tx.Link(), dmsg.LnkCirc)
	default:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
	}
}

func (h *fuzzHandler) OneWay(c *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) == dmsg.DbgShell && m.Cmd&dmsg.FlagReply == 0 {
		reply := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagReply)
		reply.SetAux([]byte("debug> \x00"))
		if m.Circuit == 0 {
			c.SendOneWay(reply)
			h.open(c, dmsg.DbgShell)
			return
		}
		h.mu.Lock()
		for _, s := range h.scopes {
			if s.Circuit() == m.Circuit {
				s.SendOneWay(reply) // within the circuit's credit, or kept
			}
		}
		h.mu.Unlock()
	}
}

// ScopeFailed aborts the circuit whose far end broke the rules inside it
// (past its window, among others).
func (h *fuzzHandler) ScopeFailed(s *iocom.Scope, _ error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for tx, x := range h.scopes {
		if x == s {
			tx.Abort(dmsg.ErrParam)
		}
	}
}

// runFuzzLink runs one Link over input and checks the outcome.
func runFuzzLink(t *testing.T, input []byte) {
	goroutines := runtime.NumGoroutine()
	h := &fuzzHandler{terms: make(map[*iocom.Tx]int), handled: make(map[*iocom.Tx]bool),
		scopes: make(map[*iocom.Tx]*iocom.Scope)}
	nc := &fuzzConn{in: input}
	// Small budgets, so that refusals over them, their overdraft and the
	// reader's pauses for queued replies are in play.
	c := iocom.NewLink(nc, iocom.Config{ID: "fuzz", Handler: h, KeepaliveInterval: -1, KeepaliveTimeout: -1,
		QueueBytes: 4 << 10, MaxTransactions: 6, Transactions: iocom.NewTxPool(10)})
	if len(input)%2 == 0 {
		// Per-circuit flow control, with windows small enough that the
		// input runs past them and output waits for credit.
		c.SetCircWindows(1<<10, 1<<10)
	}
	// Two transactions of ours are open before the peer's stream is read,
	// so that its replies can meet them (msgids 1 and 2).
	for _, cmd := range []uint32{dmsg.LnkSpan, dmsg.LnkConn} {
		tx, err := c.Open(dmsg.NewMsg(cmd|dmsg.FlagCreate), h.txMsg)
		if err != nil {
			t.Fatalf("Open before Start: %v", err)
		}
		h.track(tx)
	}
	c.Start()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-c.Done():
	case <-timer.C:
		c.Close()
		t.Fatalf("the link did not go down within 10s of its input ending (hang)")
	}
	if got, want := iocom.Panics(), wantPanics.Load(); got != want {
		t.Fatalf("iocom.Panics() = %d, want %d", got, want)
	}
	if n := c.Stats().OpenTx; n != 0 {
		t.Errorf("Stats().OpenTx = %d after Done, want 0", n)
	}
	for tx := range h.handled {
		if n := h.terms[tx]; n != 1 {
			t.Errorf("transaction %s msgid %d (local %v) saw %d terminating messages, want 1",
				dmsg.CmdString(tx.Cmd()), tx.MsgID(), tx.Local(), n)
		}
	}
	if !nc.overflow {
		checkOutput(t, nc.out)
	}
	checkNoLinkGoroutines(t, goroutines)
}

// checkOutput checks that what a Link sent is a valid stream that keeps
// the rules of section 3 for the transactions it opened, and that replies
// carry REPLY|REVTRANS.
func checkOutput(t *testing.T, out []byte) {
	t.Helper()
	type dir struct{ created, deleted, aborted bool }
	ours := make(map[uint64]*dir)
	dec := dmsg.NewDecoder(bytes.NewReader(out))
	for i := 0; ; i++ {
		m, err := dec.Decode()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("the Conn's output, message %d: %v", i, err)
		}
		f := m.Cmd & dmsg.FlagsMask
		if f&(dmsg.FlagCreate|dmsg.FlagDelete) == 0 && m.MsgID == 0 {
			continue // one-way
		}
		if m.MsgID == 0 {
			t.Fatalf("the Conn sent %s with msgid 0", describe(m))
		}
		reply, rev := f&dmsg.FlagReply != 0, f&dmsg.FlagRevTrans != 0
		if reply != rev {
			t.Fatalf("the Conn sent %s: REPLY and REVTRANS must go together", describe(m))
		}
		if reply {
			continue // a transaction the peer opened: msgids may be reused
		}
		d := ours[m.MsgID]
		if d == nil {
			d = &dir{}
			ours[m.MsgID] = d
		}
		abort := f&dmsg.FlagAbort != 0
		switch {
		case !d.created && f&dmsg.FlagCreate == 0:
			t.Fatalf("the Conn sent %s before CREATE", describe(m))
		case d.created && f&dmsg.FlagCreate != 0:
			t.Fatalf("the Conn sent %s: second CREATE", describe(m))
		case d.deleted && !abort:
			t.Fatalf("the Conn sent %s after its DELETE", describe(m))
		case d.aborted:
			t.Fatalf("the Conn sent %s after its ABORT|DELETE", describe(m))
		}
		d.created = true
		if f&dmsg.FlagDelete != 0 {
			d.deleted = true
			d.aborted = abort
		}
	}
}

// checkNoLinkGoroutines waits for the goroutine count to come back to
// before, and if it does not, fails on any goroutine still running link
// code (other goroutines, such as the fuzzing engine's, are not ours).
func checkNoLinkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			for _, g := range strings.Split(stacks, "\n\n") {
				if strings.Contains(g, "internal/iocom.(*Conn)") {
					t.Fatalf("a link goroutine outlived Done:\n%s", g)
				}
			}
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}
