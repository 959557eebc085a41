package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// circEnds keeps, for one raw peer, every message the daemon sent in each
// LNK_CIRC transaction, and answers the daemon's DELETE with ours as a
// leaf must (once).
type circEnds struct {
	mu     sync.Mutex
	msgs   map[uint64][]uint32 // LNK_CIRC msgid -> cmds received in it
	codes  map[uint64]uint32   // its terminating error
	closed map[uint64]bool     // we sent our DELETE
	theirs map[uint64]bool     // msgids of LNK_CIRCs the daemon opened on us
	accept map[uint64]bool     // of those, the ones we answered REPLY|CREATE
}

func newCircEnds() *circEnds {
	return &circEnds{msgs: map[uint64][]uint32{}, codes: map[uint64]uint32{}, closed: map[uint64]bool{},
		theirs: map[uint64]bool{}, accept: map[uint64]bool{}}
}

// note records m if it belongs to a LNK_CIRC, ours (mine reports whether
// msgid is one) or the daemon's, and returns our DELETE when m ends one
// we have not closed yet.
func (e *circEnds) note(m *dmsg.Msg, mine func(msgid uint64) bool) *dmsg.Msg {
	if m.Circuit != 0 || m.MsgID == 0 {
		return nil
	}
	reply := m.Cmd&dmsg.FlagReply != 0
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case !reply && dmsg.Base(m.Cmd) == dmsg.LnkCirc && m.Cmd&dmsg.FlagCreate != 0:
		e.theirs[m.MsgID] = true
	case reply && mine(m.MsgID), !reply && e.theirs[m.MsgID]:
	default:
		return nil
	}
	e.msgs[m.MsgID] = append(e.msgs[m.MsgID], m.Cmd)
	if m.Cmd&dmsg.FlagDelete == 0 {
		return nil
	}
	e.codes[m.MsgID] = m.Error
	if e.closed[m.MsgID] {
		return nil
	}
	e.closed[m.MsgID] = true
	cmd := dmsg.LnkError | dmsg.FlagDelete
	if !reply {
		cmd |= dmsg.FlagReply | dmsg.FlagRevTrans
		if !e.accept[m.MsgID] { // our first reply must open our side
			cmd |= dmsg.FlagCreate
		}
	}
	return &dmsg.Msg{Header: dmsg.Header{Cmd: cmd, MsgID: m.MsgID}}
}

// accepted notes that we answered the daemon's LNK_CIRC msgid with
// REPLY|CREATE.
func (e *circEnds) accepted(msgid uint64) {
	e.mu.Lock()
	e.accept[msgid] = true
	e.mu.Unlock()
}

// check reports a LNK_CIRC that did not end with exactly one DELETE, an
// ABORT|DELETE with one of codes, as its last message.
func (e *circEnds) check(t *testing.T, who string, n int, codes ...uint32) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.msgs) != n {
		t.Errorf("%s saw %d LNK_CIRCs, want %d", who, len(e.msgs), n)
	}
	for id, cmds := range e.msgs {
		dels := 0
		for _, c := range cmds {
			if c&dmsg.FlagDelete != 0 {
				dels++
			}
		}
		last := cmds[len(cmds)-1]
		ok := dels == 1 && last&dmsg.FlagAbort != 0 && last&dmsg.FlagDelete != 0
		code := e.codes[id]
		known := false
		for _, c := range codes {
			known = known || c == code
		}
		if !ok || !known {
			names := ""
			for _, c := range cmds {
				names += " " + dmsg.CmdString(c)
			}
			want := make([]string, len(codes))
			for i, c := range codes {
				want[i] = dmsg.ErrorString(c)
			}
			t.Errorf("%s's LNK_CIRC %#x got%s (ending with %s); want exactly one ABORT|DELETE, last, with %s",
				who, id, names, dmsg.ErrorString(code), strings.Join(want, " or "))
		}
	}
}

// rawHello introduces a raw peer with LNK_CONN (msgid 1), offering
// per-circuit flow control with window unless it is 0.
func rawHello(p *rawPeer, label string, window uint32) {
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label, PfsFsid: config.NodeIDFor("leaf-" + label)}
	if window > 0 {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, window
	}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	p.Send(m)
}

// leafSpan is the span a raw peer advertises as the node labelled label.
func leafSpan(label string) *dmsg.Msg {
	s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: config.NodeIDFor("leaf-" + label),
		PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
	return dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
}

// A circuit whose span goes away just as it is set up, while other spans
// change on the same daemons, is aborted at both of its ends with exactly
// one ABORT|DELETE each, and nothing after it. Q, the target, withdraws
// its span as each LNK_CIRC reaches it: after accepting it in the same
// write, before accepting it, or without accepting it at all.
func TestACircuitAbortedJustAfterSetupEndsOnceAtEachEnd(t *testing.T) {
	ds := startLine(t, 3)
	const rounds = 30
	const firstCirc, firstSpan = 100, 1000

	pEnds, qEnds := newCircEnds(), newCircEnds()
	mineP := func(id uint64) bool { return id >= firstCirc && id < firstCirc+rounds }
	mineQ := func(uint64) bool { return false }
	var qmu sync.Mutex
	qRound := 0 // the round whose span Q advertises
	pOut, qOut := newOutbox(t), newOutbox(t)
	pGone := newSpanSet()
	p := dialRawPeer(t, ds[0].port, func(p *rawPeer, m *dmsg.Msg) {
		pGone.note(m)
		if d := pEnds.note(m, mineP); d != nil {
			pOut.push(p, d)
		}
	})
	q := dialRawPeer(t, ds[2].port, func(q *rawPeer, m *dmsg.Msg) {
		var out []*dmsg.Msg
		if d := qEnds.note(m, mineQ); d != nil {
			out = append(out, d)
		}
		if dmsg.Base(m.Cmd) == dmsg.LnkCirc && m.Cmd&(dmsg.FlagCreate|dmsg.FlagReply) == dmsg.FlagCreate {
			qmu.Lock()
			round := qRound
			qmu.Unlock()
			accept := dmsgtest.Ack(m.MsgID)
			withdraw := dmsgtest.CloseTx(uint64(firstSpan + round))
			if round%3 != 2 {
				qEnds.accepted(m.MsgID)
			}
			switch round % 3 {
			case 0:
				out = append(out, accept, withdraw)
			case 1:
				out = append(out, withdraw, accept)
			case 2:
				out = append(out, withdraw)
			}
		}
		if len(out) > 0 {
			qOut.push(q, out...)
		}
	})
	rawHello(p, "P", 0)
	rawHello(q, "Q", leafWindow)
	// The daemons ping only a link they have nothing else to send on;
	// with spans changing all along, P and Q must speak up themselves.
	keepTalking(p)
	keepTalking(q)

	// Other spans come and go on the same daemons all along.
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopChurn := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(stopChurn)
	churned := make(chan int, 1)
	churn := dialRawPeer(t, ds[1].port, nil)
	rawHello(churn, "churn", 0)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for ; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			m := leafSpan(fmt.Sprintf("churn-%d", n%4))
			m.MsgID = uint64(10 + n)
			churn.Send(m)
			time.Sleep(time.Millisecond)
			churn.Send(&dmsg.Msg{Header: dmsg.Header{MsgID: uint64(10 + n), Cmd: dmsg.LnkError | dmsg.FlagDelete}})
		}
	}()

	for round := range rounds {
		qmu.Lock()
		qRound = round
		qmu.Unlock()
		ad := leafSpan("Q")
		ad.MsgID = uint64(firstSpan + round)
		q.Send(ad)
		// The daemon's span of Q toward P for this round: the newest
		// one it opened on P.
		span := p.Find(fmt.Sprintf("Q's span, round %d", round), func(m *dmsg.Msg) bool {
			if dmsg.Base(m.Cmd) != dmsg.LnkSpan || m.Cmd&(dmsg.FlagCreate|dmsg.FlagReply) != dmsg.FlagCreate {
				return false
			}
			s, _ := m.Span()
			return s.FsLabel == "Q" && !pGone.has(m.MsgID)
		})
		circ := uint64(firstCirc + round)
		open := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span.MsgID})
		open.MsgID = circ
		p.Send(open)
		p.Find(fmt.Sprintf("the end of LNK_CIRC %#x", circ), func(m *dmsg.Msg) bool {
			return m.MsgID == circ && m.Circuit == 0 && m.Cmd&(dmsg.FlagReply|dmsg.FlagDelete) == dmsg.FlagReply|dmsg.FlagDelete
		})
		// Q's span of this round is gone everywhere before the next.
		p.Find(fmt.Sprintf("Q's span of round %d withdrawn", round), func(m *dmsg.Msg) bool {
			return m.MsgID == span.MsgID && m.Cmd&dmsg.FlagReply == 0 && m.Cmd&dmsg.FlagDelete != 0
		})
	}
	stopChurn()
	t.Logf("%d other span changes meanwhile", <-churned)
	for _, d := range ds {
		waitFor(t, 20*time.Second, d.name+" has no circuits", func() bool {
			tj, err := d.tree()
			return err == nil && len(tj.Circuits) == 0
		})
	}
	pEnds.check(t, "P", rounds, dmsg.ErrCantCirc, dmsg.ErrLostLink)
	qEnds.check(t, "Q", rounds, dmsg.ErrCantCirc, dmsg.ErrLostLink)
}

// spanSet keeps the msgids of the transactions a daemon ended toward a
// raw peer (its msgids are never reused, so a span's is there once the
// span is withdrawn), noted on the peer's reader before the peer records the message,
// so that a match run by Recorder.Find (which holds the recorder's lock)
// can ask it.
type spanSet struct {
	mu   sync.Mutex
	gone map[uint64]bool
}

func newSpanSet() *spanSet { return &spanSet{gone: map[uint64]bool{}} }

func (s *spanSet) note(m *dmsg.Msg) {
	if m.Circuit != 0 || m.Cmd&(dmsg.FlagReply|dmsg.FlagDelete) != dmsg.FlagDelete {
		return
	}
	s.mu.Lock()
	s.gone[m.MsgID] = true
	s.mu.Unlock()
}

func (s *spanSet) has(msgid uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone[msgid]
}

// keepTalking sends a LNK_PING from p every 500 ms until its link is
// gone, so that the daemon's keepalive check hears from it.
func keepTalking(p *rawPeer) {
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.Done():
				return
			case <-tick.C:
				p.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
			}
		}
	}()
}

// outbox sends what a raw peer's reader answers, in order, off the
// reader: answering on the reader could wait for a daemon that waits for
// us to read.
type outbox struct {
	ch   chan func()
	done chan struct{}
}

func newOutbox(t *testing.T) *outbox {
	o := &outbox{ch: make(chan func(), 4096), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for f := range o.ch {
			f()
		}
	}()
	t.Cleanup(func() { close(o.ch); <-o.done })
	return o
}

func (o *outbox) push(p *rawPeer, msgs ...*dmsg.Msg) {
	o.ch <- func() { p.Send(msgs...) }
}
