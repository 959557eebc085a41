package circ_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Fuzz program opcodes: each op is one byte (mod opCount) followed by the
// operand bytes it reads. Running out of input ends the program.
const (
	opFrameP    = iota // P sends a frame on some circuit
	opFrameQ           // Q sends a frame on some circuit
	opCircOpen         // P opens a LNK_CIRC on a span it holds (or on junk)
	opCircReply        // Q answers a LNK_CIRC aimed at it: accept, refuse, or nothing
	opCircEnd          // P or Q DELETEs / ABORTs a LNK_CIRC
	opSync             // wait until the router has handled everything so far
	opSpan             // Q withdraws or re-advertises its span
	opBurst            // P or Q sends a burst of data on a circuit
	opDrop             // P or Q goes away abruptly
	opGarbage          // raw bytes on P's socket
	opCredit           // P or Q sends a LNK_CREDIT, well formed or not
	opFlood            // P or Q sends megabytes on a circuit, past any window
	opCount
)

// The first byte of a program says which peers offer CIRC_WINDOW in their
// LNK_CONN: bit 0 P, bit 1 Q.
const (
	cfgWindowP = 1 << iota
	cfgWindowQ
)

// fuzzCmds are the commands frames are built from: link commands that
// mean something to a router, and commands only circuit ends know.
var fuzzCmds = []uint32{dmsg.LnkError, dmsg.DbgShell, cmdInner, dmsg.LnkCirc, dmsg.LnkSpan,
	dmsg.LnkPing, dmsg.LnkConn, dmsg.LnkPad, 0x00303001, dmsg.LnkCredit}

// fuzzFlags maps operand bits to cmd flags.
var fuzzFlags = []uint32{dmsg.FlagCreate, dmsg.FlagDelete, dmsg.FlagAbort, dmsg.FlagReply,
	dmsg.FlagRevTrans, dmsg.FlagRevCirc}

// fuzzProgram is one iteration: a router shared across iterations, two
// raw peers P and Q it drives, and the bookkeeping to pick real ids.
type fuzzProgram struct {
	t     *testing.T
	data  []byte
	p, q  *rawPeer
	dead  [2]bool
	msgid uint64   // next msgid P or Q allocates for a LNK_CIRC/span
	pCirc []uint64 // LNK_CIRC msgids P opened
	qSpan uint64   // Q's span msgid, 0 while withdrawn
}

func (f *fuzzProgram) byte() byte {
	if len(f.data) == 0 {
		return 0
	}
	b := f.data[0]
	f.data = f.data[1:]
	return b
}

func (f *fuzzProgram) peer(b byte) (*rawPeer, int) {
	if b&1 == 0 {
		return f.p, 0
	}
	return f.q, 1
}

// circuitID picks a circuit id: one in play on the chosen peer's link,
// 0, or junk.
func (f *fuzzProgram) circuitID(who int, b byte) uint64 {
	var known []uint64
	if who == 0 {
		known = f.pCirc
	} else {
		f.q.mu.Lock()
		known = append(known, f.q.rxCircs...)
		f.q.mu.Unlock()
	}
	switch {
	case b < 160 && len(known) > 0:
		return known[int(b)%len(known)]
	case b < 176:
		return 0
	case b < 240:
		return uint64(b & 15)
	}
	return uint64(b) << 40
}

// frame builds a frame from the next operand bytes.
func (f *fuzzProgram) frame(who int) *dmsg.Msg {
	cb, fb, mb, ab, cid := f.byte(), f.byte(), f.byte(), f.byte(), f.byte()
	cmd := fuzzCmds[int(cb)%len(fuzzCmds)]
	for i, fl := range fuzzFlags {
		if fb&(1<<i) != 0 {
			cmd |= fl
		}
	}
	m := dmsg.NewMsg(cmd)
	m.MsgID = uint64(mb & 15)
	if mb&16 != 0 && len(f.pCirc) > 0 {
		m.MsgID = f.pCirc[int(mb>>5)%len(f.pCirc)]
	}
	m.Circuit = f.circuitID(who, cid)
	if fb&64 != 0 {
		m.Error = dmsg.ErrLostLink + uint32(mb>>6)
	}
	if dmsg.Base(cmd) == dmsg.LnkCirc && len(m.Ext) >= dmsg.CircSize {
		binary.LittleEndian.PutUint64(m.Ext[0x48:], uint64(ab))
	}
	if ab > 0 {
		aux := make([]byte, int(ab)*7)
		for i := range aux {
			aux[i] = byte(i)
		}
		m.SetAux(aux)
	}
	return m
}

func (f *fuzzProgram) send(who int, m *dmsg.Msg) {
	p := f.p
	if who == 1 {
		p = f.q
	}
	if f.dead[who] {
		return
	}
	if p.Send(m) != nil {
		f.dead[who] = true
	}
}

func (f *fuzzProgram) run() {
	for steps := 0; len(f.data) > 0 && steps < 64; steps++ {
		switch f.byte() % opCount {
		case opFrameP:
			f.send(0, f.frame(0))
		case opFrameQ:
			f.send(1, f.frame(1))
		case opCircOpen:
			sel, flags := f.byte(), f.byte()
			target := uint64(sel)
			if sel < 200 {
				if id, ok := f.p.spanFor("Q"); ok {
					target = id
				}
			}
			m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target})
			if flags&1 != 0 {
				m.Cmd |= dmsg.FlagDelete
			}
			if flags&2 != 0 {
				m.Cmd |= dmsg.FlagAbort
			}
			f.msgid++
			m.MsgID = f.msgid
			if flags&4 != 0 && len(f.pCirc) > 0 {
				m.MsgID = f.pCirc[len(f.pCirc)-1] // a duplicate CREATE: a violation
			} else {
				f.pCirc = append(f.pCirc, m.MsgID)
			}
			f.send(0, m)
		case opCircReply:
			sel, how := f.byte(), f.byte()
			f.q.mu.Lock()
			var id uint64
			if n := len(f.q.rxCircs); n > 0 {
				id = f.q.rxCircs[int(sel)%n]
			}
			f.q.mu.Unlock()
			if id == 0 {
				continue
			}
			cmd := dmsg.LnkError | dmsg.FlagReply | dmsg.FlagRevTrans | dmsg.FlagCreate
			m := &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, MsgID: id}}
			switch how % 4 {
			case 1:
				m.Cmd |= dmsg.FlagDelete
				m.Error = dmsg.ErrCantCirc
			case 2:
				m.Cmd &^= dmsg.FlagCreate
				m.Cmd |= dmsg.FlagDelete
			case 3:
				m.Cmd |= dmsg.FlagDelete | dmsg.FlagAbort
			}
			f.send(1, m)
		case opCircEnd:
			who, sel, how := f.byte(), f.byte(), f.byte()
			cmd := dmsg.LnkError | dmsg.FlagDelete
			if how&1 != 0 {
				cmd |= dmsg.FlagAbort
			}
			var id uint64
			if who&1 == 0 {
				if len(f.pCirc) == 0 {
					continue
				}
				id = f.pCirc[int(sel)%len(f.pCirc)]
				f.send(0, &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, MsgID: id, Error: uint32(how >> 1)}})
			} else {
				f.q.mu.Lock()
				if n := len(f.q.rxCircs); n > 0 {
					id = f.q.rxCircs[int(sel)%n]
				}
				f.q.mu.Unlock()
				if id == 0 {
					continue
				}
				cmd |= dmsg.FlagReply | dmsg.FlagRevTrans
				f.send(1, &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, MsgID: id, Error: uint32(how >> 1)}})
			}
		case opSync:
			for i, p := range []*rawPeer{f.p, f.q} {
				if !f.dead[i] {
					p.ping(200 * time.Millisecond)
				}
			}
		case opSpan:
			if f.qSpan != 0 {
				f.send(1, &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, MsgID: f.qSpan}})
				f.qSpan = 0
			} else {
				f.msgid++
				f.qSpan = f.msgid
				s := dmsg.Span{PeerType: dmsg.PeerHammer2, ProtoVersion: 1, ClLabel: "leaves", FsLabel: "Q"}
				m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
				m.MsgID = f.qSpan
				f.send(1, m)
			}
		case opBurst:
			who, cid, n := f.byte(), f.byte(), f.byte()
			p, w := f.peer(who)
			if f.dead[w] {
				continue
			}
			circ := f.circuitID(w, cid)
			for i := range int(n%32) + 1 {
				m := dmsg.NewMsg(dmsg.DbgShell)
				m.Circuit = circ
				if w == 1 {
					m.Cmd |= dmsg.FlagRevCirc
				}
				m.SetAux(make([]byte, 64*(i%5)))
				if p.Write(m) != nil {
					f.dead[w] = true
					break
				}
			}
			if !f.dead[w] && p.Flush() != nil {
				f.dead[w] = true
			}
		case opDrop:
			p, w := f.peer(f.byte())
			p.Close()
			f.dead[w] = true
		case opCredit:
			who, cid, inc, how := f.byte(), f.byte(), f.byte(), f.byte()
			p, w := f.peer(who)
			m := dmsg.NewCreditMsg(f.circuitID(w, cid), w == 1, creditIncrement(inc))
			switch how % 8 {
			case 1:
				m.Cmd ^= dmsg.FlagRevCirc
			case 2:
				m.MsgID = uint64(how)
			case 3:
				m.Cmd |= dmsg.FlagCreate
			case 4:
				m.Cmd |= dmsg.FlagDelete | dmsg.FlagAbort
			case 5:
				m.SetAux([]byte{how})
			}
			if !f.dead[w] && p.Send(m) != nil {
				f.dead[w] = true
			}
		case opFlood:
			who, cid := f.byte(), f.byte()
			p, w := f.peer(who)
			circ := f.circuitID(w, cid)
			for range 3 {
				m := dmsg.NewMsg(dmsg.DbgShell)
				m.Circuit = circ
				if w == 1 {
					m.Cmd |= dmsg.FlagRevCirc
				}
				m.SetAux(floodAux)
				if f.dead[w] || p.Send(m) != nil {
					f.dead[w] = true
					break
				}
			}
		case opGarbage:
			n := int(f.byte()%64) + 1
			b := make([]byte, n)
			for i := range b {
				b[i] = f.byte()
			}
			if !f.dead[0] {
				f.p.WriteRaw(b)
				f.dead[0] = true // the link is as good as dead
			}
		}
	}
}

// creditIncrement maps an operand byte to a LNK_CREDIT increment: small,
// about a window, or absurd.
func creditIncrement(b byte) uint64 {
	switch b % 4 {
	case 0:
		return uint64(b)
	case 1:
		return uint64(b) << 16
	case 2:
		return dmsg.MinCircWindow
	}
	return ^uint64(0) - uint64(b)
}

// floodAux is the largest aux data: three of them are past any window.
var floodAux = make([]byte, dmsg.MaxAuxSize)

// FuzzCircuit drives a router with two raw peers that set circuits up
// between them (or pretend to) and then send frames with random circuit
// ids, REVCIRC set or not, CREATE/DELETE/ABORT flags, LNK_CIRC closes
// racing data on the circuit, withdrawn spans and dropped links; with or
// without per-circuit flow control on either link, LNK_CREDITs of any
// size and form, and floods past the windows. The router must not panic,
// must keep serving (a healthy pair of leaves can still run a circuit),
// must never send anything in a LNK_CIRC it opened after that
// transaction's DELETE, and once every peer has gone it must hold no
// circuit, link or span.
func FuzzCircuit(f *testing.F) {
	log := zap.NewNop()
	if lvl := os.Getenv("DMSGD_TEST_LOG"); lvl != "" {
		// Not the test's logger: f may not log from inside the target.
		cfg := zap.NewDevelopmentConfig()
		if err := cfg.Level.UnmarshalText([]byte(lvl)); err != nil {
			f.Fatal(err)
		}
		log, _ = cfg.Build()
	}
	r := newRouterLog(f, "fz", log, withoutKeepalive())
	seeds := [][]byte{
		{},
		// both with windows: open, accept, credit both ways, flood past
		// the window, then close
		{3, opCircOpen, 0, 0, opSync, opCircReply, 0, 0, opCredit, 0, 0, 2, 0, opCredit, 1, 0, 1, 0,
			opFlood, 0, 0, opSync, opBurst, 1, 0, 8, opCircEnd, 0, 0, 0, opSync},
		// malformed credits on a legacy link and on a flow-controlled one
		{1, opCircOpen, 0, 0, opSync, opCircReply, 0, 0, opCredit, 0, 0, 3, 3, opCredit, 1, 0, 7, 4,
			opCredit, 1, 0, 5, 5, opCredit, 0, 200, 1, 1, opSync},
		// open, accept, data both ways, close from P, Q closes back
		{0, opCircOpen, 0, 0, opSync, opCircReply, 0, 0, opBurst, 0, 0, 8, opBurst, 1, 0, 8, opCircEnd, 0, 0, 0, opSync, opCircEnd, 1, 0, 0},
		// open and abort at once, data racing it
		{cfgWindowP | cfgWindowQ, opCircOpen, 0, 2, opBurst, 0, 0, 20, opCircEnd, 0, 0, 1, opBurst, 0, 0, 20},
		// accept then withdraw the span under the circuit while data flows
		{0, opCircOpen, 0, 0, opSync, opCircReply, 0, 0, opBurst, 0, 0, 31, opSpan, opBurst, 1, 0, 31, opSync},
		// refuse, then P keeps sending on the refused circuit
		{cfgWindowP | cfgWindowQ, opCircOpen, 0, 0, opSync, opCircReply, 0, 1, opFrameP, 2, 0, 3, 0, 0, opCircEnd, 0, 0, 0},
		// CREATE|DELETE LNK_CIRC, then junk frames with REVCIRC
		{0, opCircOpen, 0, 1, opSync, opFrameQ, 1, 32, 4, 2, 0, opFrameP, 1, 33, 5, 2, 200},
		// Q drops mid-setup; P sends inner transactions
		{cfgWindowP | cfgWindowQ, opCircOpen, 0, 0, opDrop, 1, opFrameP, 2, 1, 7, 9, 0, opSync},
		// duplicate CREATE on a circuit id
		{0, opCircOpen, 0, 0, opCircOpen, 0, 4, opSync},
		// garbage after setup
		{cfgWindowP | cfgWindowQ, opCircOpen, 0, 0, opSync, opCircReply, 0, 0, opGarbage, 3, 0x48, 0x32, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		panics := iocom.Panics()
		fp := &fuzzProgram{t: t, data: data, msgid: 10, qSpan: 2}
		cfg := fp.byte()
		fp.p, fp.q = dialRaw(t, r.addr(), nil), dialRaw(t, r.addr(), nil)
		window := func(bit byte) uint32 {
			if cfg&bit != 0 {
				return dmsg.MinCircWindow
			}
			return 0
		}
		if fp.p.helloWindow("P", window(cfgWindowP)) != nil || fp.q.helloWindow("Q", window(cfgWindowQ)) != nil {
			t.Fatal("hello failed")
		}
		if err := poll(5*time.Second, func() error {
			if _, ok := fp.p.spanFor("Q"); !ok {
				return fmt.Errorf("P does not hold Q's span")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		fp.run()
		if err := fp.nothingAfterDelete(); err != nil {
			t.Fatal(err)
		}

		// The router still serves: a healthy pair runs a circuit.
		if err := healthy(t, r); err != nil {
			t.Fatalf("router unhealthy after the program: %v", err)
		}
		fp.p.close()
		fp.q.close()
		if err := poll(10*time.Second, func() error {
			tr := r.Tree()
			switch {
			case len(tr.Circuits) != 0:
				return fmt.Errorf("circuits left: %+v", tr.Circuits)
			case len(tr.Links) != 0:
				return fmt.Errorf("links left: %+v", tr.Links)
			}
			for _, c := range tr.Clusters {
				for _, n := range c.Nodes {
					if n.Label != "fz" {
						return fmt.Errorf("node %s left", n.Label)
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("after every peer left: %v", err)
		}
		if n := iocom.Panics() - panics; n != 0 {
			t.Fatalf("link code recovered from %d panic(s)", n)
		}
	})
}

// nothingAfterDelete checks that the router sent nothing in a LNK_CIRC it
// opened on Q after that transaction's DELETE, but for one ABORT|DELETE
// after a plain DELETE (tearing a half-closed transaction down, section
// 3): never a second ABORT|DELETE, never anything after one.
func (f *fuzzProgram) nothingAfterDelete() error {
	f.q.mu.Lock()
	ids := slices.Clone(f.q.rxCircs)
	f.q.mu.Unlock()
	for _, id := range ids {
		cmds := f.q.circCmds(txRef{id, false})
		closed, aborted := false, false
		for _, c := range cmds {
			if aborted || closed && c&dmsg.FlagAbort == 0 {
				return fmt.Errorf("the router's LNK_CIRC %d on Q went on after its DELETE: %s", id, cmdList(cmds))
			}
			if c&dmsg.FlagDelete != 0 {
				closed, aborted = true, c&dmsg.FlagAbort != 0
			}
		}
	}
	return nil
}

// healthy checks that two fresh leaves on r can run a circuit with a
// transaction in it and close it, then disconnects them.
func healthy(t *testing.T, r *testRouter) error {
	a := dialLeaf(t, r.addr(), "hA", leafOptions{})
	defer a.close()
	b := dialLeaf(t, r.addr(), "hB", leafOptions{})
	defer b.close()
	var target uint64
	if err := poll(5*time.Second, func() error {
		s, ok := a.spanFor("hB")
		if !ok {
			return fmt.Errorf("hA does not hold hB")
		}
		target = s.MsgID
		return nil
	}); err != nil {
		return err
	}
	c := a.open(target)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	good, err := c.pump(ctx, 3, 3, func(int) int { return 100 }, func(int) byte { return kindEcho })
	if err != nil || good != 3 {
		return fmt.Errorf("circuit hA->hB: %d of 3 answered, %v", good, err)
	}
	c.close()
	select {
	case <-c.ec.Done():
	case <-ctx.Done():
		return fmt.Errorf("circuit hA->hB did not close")
	}
	return nil
}
