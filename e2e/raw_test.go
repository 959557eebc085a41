package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// rawPeer is a frame-level DMSG peer, for tests that play a hostile or
// foreign peer: a dmsgtest.Peer whose stream a Recorder keeps, answering
// keepalive pings. What e2e adds are the waits its tests share.
type rawPeer struct {
	*dmsgtest.Peer
	*dmsgtest.Recorder
	t *testing.T
}

// startRawPeer starts a raw peer on nc. onMsg, if not nil, sees every
// message but the keepalive pings as it arrives, on the reader, and may
// answer it; the message is recorded either way.
func startRawPeer(t *testing.T, nc net.Conn, onMsg func(p *rawPeer, m *dmsg.Msg)) *rawPeer {
	p := &rawPeer{Peer: dmsgtest.NewPeer(nc), t: t}
	opts := dmsgtest.RecordOptions{AutoPong: true}
	if onMsg != nil {
		opts.OnMsg = func(m *dmsg.Msg) bool {
			if !dmsgtest.IsPing(m) {
				onMsg(p, m)
			}
			return true
		}
	}
	p.Recorder = p.Record(t, opts)
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

// spanOf waits for the router's LNK_SPAN CREATE of the node labelled label.
func (p *rawPeer) spanOf(label string) *dmsg.Msg {
	p.t.Helper()
	return p.Find("a LNK_SPAN of "+label, func(m *dmsg.Msg) bool {
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
	return p.Find(fmt.Sprintf("the answer to msgid %#x", msgid), func(m *dmsg.Msg) bool {
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
	if err := p.Send(m); err != nil {
		p.t.Fatalf("raw peer: advertise %s: %v", s.FsLabel, err)
	}
	return p.answer(msgid)
}

func isRefusal(m *dmsg.Msg) bool { return m.Cmd&dmsg.FlagDelete != 0 && m.Error == dmsg.ErrParam }
