package iocom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// These tests run two Links against each other over real sockets made by
// iocom.Listen and iocom.Dial.

// transport makes link addresses of one kind.
type transport struct {
	name string
	addr func(tb testing.TB) string
}

var transports = []transport{
	{"tcp", func(testing.TB) string { return "tcp://127.0.0.1:0" }},
	{"unix", func(tb testing.TB) string { return "unix://" + filepath.Join(tb.TempDir(), "link.sock") }},
}

// socketPair returns the two ends of one connection of tr, made with
// iocom.Listen and iocom.Dial. The test closes them.
func socketPair(tb testing.TB, tr transport) (dialed, accepted net.Conn) {
	tb.Helper()
	network, address, err := iocom.ParseAddr(tr.addr(tb))
	if err != nil {
		tb.Fatal(err)
	}
	l, err := iocom.Listen(network, address)
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	got := make(chan net.Conn, 1)
	fail := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			fail <- err
			return
		}
		got <- nc
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dialed, err = iocom.Dial(ctx, network, l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case accepted = <-got:
	case err := <-fail:
		dialed.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dialed.Close(); accepted.Close() })
	return dialed, accepted
}

// ---- one side of a test link ----

// side is a Link with a handler that answers the other side's
// transactions and counts every terminating message per transaction.
//
// It answers LNK_CONN with REPLY|CREATE; a DBG_SHELL single-message
// transaction by echoing its aux data in one REPLY|CREATE|DELETE; a
// LNK_SPAN by REPLY|CREATE, then every in-stream message by echoing its
// aux data in an in-stream reply (or by closing its side when the message
// carries error 1), and the opener's DELETE by REPLY|DELETE carrying the
// count and CRC of everything echoed (unless holdDelete is set).
type side struct {
	name       string
	conn       *iocom.Link
	holdDelete bool

	mu      sync.Mutex
	terms   map[*iocom.Tx]int
	tracked map[*iocom.Tx]bool
	ends    []termination // terminating messages in delivery order

	inStream atomic.Int64 // in-stream messages received in the other side's spans
	overflow atomic.Int64 // messages a full test channel could not take
}

type termination struct {
	cmd      uint32 // the transaction's command
	lostLink bool
}

func newSide(name string, holdDelete bool) *side {
	return &side{name: name, holdDelete: holdDelete,
		terms: make(map[*iocom.Tx]int), tracked: make(map[*iocom.Tx]bool)}
}

func (s *side) track(tx *iocom.Tx) {
	s.mu.Lock()
	s.tracked[tx] = true
	s.mu.Unlock()
}

// count records m if it terminates tx.
func (s *side) count(tx *iocom.Tx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return
	}
	s.mu.Lock()
	s.terms[tx]++
	s.ends = append(s.ends, termination{cmd: tx.Cmd(),
		lostLink: m.Cmd&dmsg.FlagAbort != 0 && m.Error == dmsg.ErrLostLink})
	s.mu.Unlock()
}

func (s *side) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	s.track(tx)
	s.count(tx, m)
	switch tx.Cmd() {
	case dmsg.LnkConn:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
		return s.count
	case dmsg.DbgShell:
		r := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
		r.SetAux(m.Aux)
		tx.Send(r)
		return s.count
	case dmsg.LnkSpan:
		tx.Send(dmsg.NewMsg(dmsg.LnkError))
		var sum echoSum
		return func(tx *iocom.Tx, m *dmsg.Msg) {
			s.count(tx, m)
			switch {
			case m.Cmd&dmsg.FlagDelete != 0:
				if !s.holdDelete && m.Cmd&dmsg.FlagAbort == 0 {
					r := dmsg.NewMsg(dmsg.LnkError | dmsg.FlagDelete)
					r.SetAux(sum.bytes())
					tx.Send(r)
				}
			case m.Error == 1:
				tx.Close()
			default:
				s.inStream.Add(1)
				sum.add(m.Aux)
				r := dmsg.NewMsg(dmsg.LnkError)
				r.SetAux(m.Aux)
				tx.Send(r)
			}
		}
	}
	s.mu.Lock()
	delete(s.tracked, tx) // refused: no handler
	s.mu.Unlock()
	return nil
}

func (s *side) OneWay(*iocom.Link, *dmsg.Msg) {}

// echoSum is the count and CRC of a sequence of aux data.
type echoSum struct {
	n   uint32
	crc uint32
}

func (e *echoSum) add(b []byte) {
	e.n++
	e.crc = crc32.Update(e.crc, crc32.IEEETable, b)
}

func (e *echoSum) bytes() []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, e.n), e.crc)
}

// open opens a transaction whose messages are counted and passed to ch.
// The handler never blocks the reader: a message ch has no room for is
// counted in overflow, which tests that size ch exactly check.
func (s *side) open(m *dmsg.Msg, ch chan<- *dmsg.Msg) (*iocom.Tx, error) {
	tx, err := s.conn.Open(m, func(tx *iocom.Tx, m *dmsg.Msg) {
		s.count(tx, m)
		if ch != nil {
			select {
			case ch <- m:
			default:
				s.overflow.Add(1)
			}
		}
	})
	if err == nil {
		s.track(tx)
	}
	return tx, err
}

// checkEnds verifies, once the link is down, that every transaction with a
// handler saw exactly one terminating message and that the LNK_CONNs were
// terminated after everything else link loss terminated.
func (s *side) checkEnds(t *testing.T) (lost int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for tx := range s.tracked {
		if n := s.terms[tx]; n != 1 {
			t.Errorf("%s: transaction %s msgid %d (local %v) saw %d terminating messages, want 1",
				s.name, dmsg.CmdString(tx.Cmd()), tx.MsgID(), tx.Local(), n)
		}
	}
	connSeen := false
	for _, e := range s.ends {
		if !e.lostLink {
			continue
		}
		lost++
		switch {
		case e.cmd == dmsg.LnkConn:
			connSeen = true
		case connSeen:
			t.Errorf("%s: %s terminated by link loss after a LNK_CONN", s.name, dmsg.CmdString(e.cmd))
		}
	}
	if !connSeen {
		t.Errorf("%s: no LNK_CONN was terminated by link loss", s.name)
	}
	return lost
}

// linkPair starts two sides over tr, each with an open, answered LNK_CONN.
func linkPair(t *testing.T, tr transport, holdDelete bool) (a, b *side, ncA, ncB net.Conn) {
	t.Helper()
	ncA, ncB = socketPair(t, tr)
	a, b = newSide("A", holdDelete), newSide("B", holdDelete)
	cfg := iocom.Config{KeepaliveInterval: -1, KeepaliveTimeout: -1}
	cfg.ID, cfg.Handler = "A", a
	a.conn = startConn(t, ncA, cfg)
	cfg.ID, cfg.Handler = "B", b
	b.conn = startConn(t, ncB, cfg)
	for _, s := range []*side{a, b} {
		acked := make(chan *dmsg.Msg, 1)
		if _, err := s.open(dmsg.NewConnMsg(dmsg.FlagCreate, &dmsg.Conn{PeerType: 1}, false), acked); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-acked:
			if m.Cmd != ackReply {
				t.Fatalf("%s: LNK_CONN answered %s", s.name, describe(m))
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s: LNK_CONN not answered", s.name)
		}
	}
	return a, b, ncA, ncB
}

// ---- many transactions both ways ----

// auxPool is random data transactions take their aux data from.
var auxPool = func() []byte {
	b := make([]byte, 2<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}()

// plan is what one transaction of the load test sends.
type plan struct {
	multi bool
	aux   [][]byte // single: one; multi: the in-stream messages
}

// planTx decides transaction i: mostly small aux data, every 200th up to
// 128 KiB, every 2500th 1 MiB; every third is multi-message.
func planTx(seed uint64, i int) plan {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	size := func(j int) int {
		switch {
		case j == 0 && i%2500 == 2499:
			return dmsg.MaxAuxSize
		case j == 0 && i%200 == 199:
			return 64<<10 + r.IntN(64<<10)
		case r.IntN(4) == 0:
			return 0
		}
		return r.IntN(4097)
	}
	chunk := func(j int) []byte {
		n := size(j)
		off := r.IntN(len(auxPool) - n + 1)
		return auxPool[off : off+n]
	}
	p := plan{multi: i%3 == 0}
	k := 1
	if p.multi {
		k = 1 + r.IntN(4)
	}
	for j := range k {
		p.aux = append(p.aux, chunk(j))
	}
	return p
}

// run performs the transaction on s and checks the answers.
func (p plan) run(ctx context.Context, s *side) error {
	c := s.conn
	wait := func(ch <-chan *dmsg.Msg) (*dmsg.Msg, error) {
		select {
		case m := <-ch:
			return m, nil
		case <-c.Done():
			return nil, fmt.Errorf("link down: %v", c.Err())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := c.WaitRoom(ctx); err != nil {
		return err
	}
	if !p.multi {
		ch := make(chan *dmsg.Msg, 1)
		m := dmsg.NewMsg(dmsg.DbgShell | dmsg.FlagCreate | dmsg.FlagDelete)
		m.SetAux(p.aux[0])
		if _, err := s.open(m, ch); err != nil {
			return err
		}
		r, err := wait(ch)
		if err != nil {
			return err
		}
		if r.Cmd != refusal || r.Error != 0 || !bytes.Equal(r.Aux, p.aux[0]) {
			return fmt.Errorf("single-message transaction answered %s, want %08x echoing %d bytes", describe(r), refusal, len(p.aux[0]))
		}
		return nil
	}
	ch := make(chan *dmsg.Msg, len(p.aux)+2)
	tx, err := s.open(dmsg.NewMsg(dmsg.LnkSpan|dmsg.FlagCreate), ch)
	if err != nil {
		return err
	}
	var sum echoSum
	for _, aux := range p.aux {
		if err := c.WaitRoom(ctx); err != nil {
			return err
		}
		m := dmsg.NewMsg(dmsg.LnkSpan)
		m.SetAux(aux)
		if err := tx.Send(m); err != nil {
			return err
		}
		sum.add(aux)
	}
	if err := tx.Close(); err != nil {
		return err
	}
	if r, err := wait(ch); err != nil || r.Cmd != ackReply {
		return fmt.Errorf("multi-message transaction: first answer %s (%v), want %08x", describe(r), err, ackReply)
	}
	for j, aux := range p.aux {
		r, err := wait(ch)
		if err != nil {
			return err
		}
		if r.Cmd != streamReply || !bytes.Equal(r.Aux, aux) {
			return fmt.Errorf("multi-message transaction: answer %d is %s, want %08x echoing %d bytes", j, describe(r), streamReply, len(aux))
		}
	}
	r, err := wait(ch)
	if err != nil {
		return err
	}
	if r.Cmd != closeReply || !bytes.Equal(r.Aux, sum.bytes()) {
		return fmt.Errorf("multi-message transaction: last answer %s, want %08x with the echo sum", describe(r), closeReply)
	}
	if !tx.Done() {
		return errors.New("multi-message transaction not done after both DELETEs")
	}
	return nil
}

func (p plan) payload() int {
	n := 0
	for _, a := range p.aux {
		n += len(a)
	}
	return 2 * n // sent and echoed
}

const (
	loadTxPerSide = 10000
	loadInFlight  = 64
	payloadBudget = 256 << 20
)

// runLoad runs n transactions from s, at most loadInFlight at a time.
func runLoad(ctx context.Context, s *side, seed uint64, n int) error {
	sem := make(chan struct{}, loadInFlight)
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := planTx(seed, i).run(ctx, s); err != nil {
				err = fmt.Errorf("%s transaction %d: %w", s.name, i, err)
				if first.CompareAndSwap(nil, &err) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

func TestManyTransactionsBothWaysAllComplete(t *testing.T) {
	total := 0
	for _, seed := range []uint64{1, 2} {
		for i := range loadTxPerSide {
			total += planTx(seed, i).payload()
		}
	}
	if total > payloadBudget {
		t.Fatalf("the load plans %d MiB of payload, over the %d MiB budget", total>>20, payloadBudget>>20)
	}
	for _, tr := range transports {
		t.Run(fmt.Sprintf("over %s, %d transactions from each side", tr.name, loadTxPerSide), func(t *testing.T) {
			guard(t)
			a, b, _, _ := linkPair(t, tr, false)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			errs := make(chan error, 2)
			go func() { errs <- runLoad(ctx, a, 1, loadTxPerSide) }()
			go func() { errs <- runLoad(ctx, b, 2, loadTxPerSide) }()
			for range 2 {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			if t.Failed() {
				return
			}
			for _, s := range []*side{a, b} {
				if n := s.conn.Stats().OpenTx; n != 2 {
					t.Errorf("%s: Stats().OpenTx = %d with only the two LNK_CONNs left, want 2", s.name, n)
				}
			}
			a.conn.Close()
			waitDone(t, a.conn)
			waitDone(t, b.conn)
			for _, s := range []*side{a, b} {
				if n := s.conn.Stats().OpenTx; n != 0 {
					t.Errorf("%s: Stats().OpenTx = %d after Done, want 0", s.name, n)
				}
				if n := s.overflow.Load(); n != 0 {
					t.Errorf("%s: %d answers more than a transaction expects", s.name, n)
				}
				if lost := s.checkEnds(t); lost != 2 {
					t.Errorf("%s: %d transactions terminated by link loss, want the 2 LNK_CONNs", s.name, lost)
				}
			}
			st := a.conn.Stats()
			t.Logf("A: %d messages / %d MiB out, %d messages / %d MiB in", st.TxMsgs, st.TxBytes>>20, st.RxMsgs, st.RxBytes>>20)
		})
	}
}

// OpenFinished queues a CREATE whose aux data finish fills in when the
// writer is about to encode it: not while the opener holds its locks (a
// finish taking the opener's lock would deadlock otherwise), in queue
// order with the link's other messages, with the aux CRC of what finish
// wrote.
func TestOpenFinishedCompletesTheMessageWhenItIsWritten(t *testing.T) {
	guard(t)
	c, p := newRawLink(t, iocom.Config{Handler: newRecorder(nil)})
	defer c.Close()
	var opener sync.Mutex
	var order []string
	finish := func(i int) func(*dmsg.Msg) {
		return func(m *dmsg.Msg) {
			opener.Lock() // held by the opener while it queues
			defer opener.Unlock()
			order = append(order, fmt.Sprint(i))
			copy(m.Aux, fmt.Sprintf("finished %d", i))
		}
	}
	opener.Lock()
	for i := range 3 {
		m := msg(dmsg.LnkSpan|dmsg.FlagCreate, 0)
		m.Aux = make([]byte, len("finished 0")) // sized now, filled later
		if _, err := c.OpenFinished(m, finish(i), func(*iocom.Tx, *dmsg.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := c.SendOneWay(msg(dmsg.LnkPing, 0)); err != nil {
			t.Fatal(err)
		}
	}
	opener.Unlock()
	for i := range 3 {
		m := p.expect(dmsg.LnkSpan|dmsg.FlagCreate, uint64(i+1))
		if got, want := string(m.Aux), fmt.Sprintf("finished %d", i); got != want {
			t.Fatalf("span %d carries %q, want %q", i, got, want)
		}
		p.expect(dmsg.LnkPing, 0)
	}
	opener.Lock()
	defer opener.Unlock()
	if got := fmt.Sprint(order); got != "[0 1 2]" {
		t.Fatalf("finished in the order %s", got)
	}
}
