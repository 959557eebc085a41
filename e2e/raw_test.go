package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// rawPeer is a frame-level DMSG peer: it writes what the test tells it and
// records everything the router sends, answering only keepalive pings,
// for tests that play a hostile or foreign peer.
type rawPeer struct {
	t   *testing.T
	nc  net.Conn
	wmu sync.Mutex
	bw  *bufio.Writer
	enc *dmsg.Encoder

	mu      sync.Mutex
	msgs    []*dmsg.Msg
	changed chan struct{}
	done    chan struct{}
	// onMsg, when set, sees every message as it arrives (on the reader)
	// and may answer it.
	onMsg func(m *dmsg.Msg)
}

func startRawPeer(t *testing.T, nc net.Conn, onMsg func(p *rawPeer, m *dmsg.Msg)) *rawPeer {
	p := &rawPeer{t: t, nc: nc, bw: bufio.NewWriter(nc), changed: make(chan struct{}), done: make(chan struct{})}
	p.enc = dmsg.NewEncoder(p.bw)
	if onMsg != nil {
		p.onMsg = func(m *dmsg.Msg) { onMsg(p, m) }
	}
	go p.readLoop()
	t.Cleanup(func() { nc.Close(); <-p.done })
	return p
}

func dialRawPeer(t *testing.T, port int, onMsg func(p *rawPeer, m *dmsg.Msg)) *rawPeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return startRawPeer(t, nc, onMsg)
}

func (p *rawPeer) readLoop() {
	defer close(p.done)
	dec := dmsg.NewDecoder(p.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			p.mu.Lock()
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			return
		}
		if dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply == 0 && m.Circuit == 0 {
			p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}})
			continue
		}
		if p.onMsg != nil {
			p.onMsg(m)
		}
		p.mu.Lock()
		p.msgs = append(p.msgs, m)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *rawPeer) send(msgs ...*dmsg.Msg) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, m := range msgs {
		if err := p.enc.Encode(m); err != nil {
			return
		}
	}
	p.bw.Flush()
}

// find waits for the first message match accepts among everything
// received, from the start.
func (p *rawPeer) find(what string, match func(*dmsg.Msg) bool) *dmsg.Msg {
	p.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		p.mu.Lock()
		for _, m := range p.msgs {
			if match(m) {
				p.mu.Unlock()
				return m
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			p.t.Fatalf("raw peer: link closed while waiting for %s", what)
		case <-deadline:
			p.t.Fatalf("raw peer: timed out waiting for %s", what)
		}
	}
}

// all returns every message received so far.
func (p *rawPeer) all() []*dmsg.Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*dmsg.Msg(nil), p.msgs...)
}

// spanOf waits for the router's LNK_SPAN CREATE of the node labelled label.
func (p *rawPeer) spanOf(label string) *dmsg.Msg {
	p.t.Helper()
	return p.find("a LNK_SPAN of "+label, func(m *dmsg.Msg) bool {
		if dmsg.Base(m.Cmd) != dmsg.LnkSpan || m.Cmd&(dmsg.FlagCreate|dmsg.FlagReply) != dmsg.FlagCreate {
			return false
		}
		s, _ := m.Span()
		return s.FsLabel == label
	})
}

// answer waits for the router's first answer to our transaction msgid.
func (p *rawPeer) answer(msgid uint64) *dmsg.Msg {
	p.t.Helper()
	return p.find(fmt.Sprintf("the answer to msgid %#x", msgid), func(m *dmsg.Msg) bool {
		return m.MsgID == msgid && m.Circuit == 0 && m.Cmd&dmsg.FlagReply != 0
	})
}

// advertise opens a LNK_SPAN (msgid) carrying s and, when rec is not nil,
// that signed record; it returns the router's answer.
func (p *rawPeer) advertise(msgid uint64, s dmsg.Span, rec []byte) *dmsg.Msg {
	p.t.Helper()
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
	m.MsgID = msgid
	if rec != nil {
		m.SetAux(rec)
	}
	p.send(m)
	return p.answer(msgid)
}

// openCircuit opens LNK_CIRC circ toward the span the router sent with
// msgid target and waits until it is accepted.
func (p *rawPeer) openCircuit(circ, target uint64) {
	p.t.Helper()
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: target})
	m.MsgID = circ
	p.send(m)
	if a := p.answer(circ); a.Cmd&dmsg.FlagDelete != 0 {
		p.t.Fatalf("the circuit was refused: %s", dmsg.ErrorString(a.Error))
	}
}

// runInCircuit sends a shell command line inside circuit circ and returns
// what came back up to the prompt. Earlier output on the circuit is
// skipped: each call starts after the last prompt seen.
func (p *rawPeer) runInCircuit(circ uint64, line string) string {
	p.t.Helper()
	p.mu.Lock()
	start := len(p.msgs)
	p.mu.Unlock()
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.Circuit = circ
	m.SetAux(append([]byte(line), 0))
	p.send(m)
	var out strings.Builder
	deadline := time.After(30 * time.Second)
	for {
		p.mu.Lock()
		done, ch := promptAfter(p, circ, start, &out), p.changed
		p.mu.Unlock()
		if done {
			return out.String()
		}
		select {
		case <-ch:
		case <-p.done:
			p.t.Fatalf("raw peer: link closed while running %q", line)
		case <-deadline:
			p.t.Fatalf("raw peer: no prompt after %q; got %q", line, out.String())
		}
	}
}

// promptAfter gathers the shell output on circ received since index start
// and reports whether it ends with the prompt. Called with p.mu held.
func promptAfter(p *rawPeer, circ uint64, start int, out *strings.Builder) bool {
	out.Reset()
	for _, m := range p.msgs[start:] {
		if m.Circuit != circ || dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply == 0 {
			continue
		}
		t := strings.TrimRight(string(m.Aux), "\x00")
		if t == "debug> " {
			return true
		}
		out.WriteString(t)
	}
	return false
}

func isRefusal(m *dmsg.Msg) bool { return m.Cmd&dmsg.FlagDelete != 0 && m.Error == dmsg.ErrParam }
