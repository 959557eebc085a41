package router_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// A peer that breaks the framing or the transaction rules loses its own
// link and nothing else: the router keeps serving its other links.
func TestABadPeerOnlyLosesItsOwnLink(t *testing.T) {
	// The raw peers never answer keepalives: the dead-link timeout must
	// not be what closes their links.
	r := newRouter(t, "r", withKeepaliveTimeout(time.Minute))
	healthy := dialLeaf(t, r.tcpURL(), leafConfig{Label: "healthy"})
	origin := dialLeaf(t, r.tcpURL(), leafConfig{Label: "origin"})
	healthy.waitAcked()
	origin.waitAcked()

	conn := func(p *rawPeer) { p.send(connMsg(libdmsgConn(), false, 0x1000)) }
	tests := []struct {
		name      string
		misbehave func(p *rawPeer)
	}{
		{"garbage bytes instead of a header", func(p *rawPeer) {
			p.write(bytes.Repeat([]byte{0xab}, dmsg.BaseHeaderSize))
		}},
		{"a LNK_CONN whose header CRC does not match", func(p *rawPeer) {
			c := libdmsgConn()
			p.SendMangled(connMsg(c, false, 0x1000), func(b []byte) { b[0x100] ^= 0xff })
		}},
		{"a DBG_SHELL whose aux CRC does not match", func(p *rawPeer) {
			p.SendMangled(dmsgtest.ShellLine("help"), func(b []byte) { b[dmsg.BaseHeaderSize] ^= 0xff })
		}},
		{"a message out of sequence", func(p *rawPeer) {
			conn(p)
			p.SendMangled(dmsgtest.ShellLine("help"), func(b []byte) { b[4]++ })
		}},
		{"an extended header size of 0", func(p *rawPeer) {
			p.SendMangled(dmsgtest.ShellLine(""), func(b []byte) { b[0x20] = 0 })
		}},
		{"aux data over the 1 MiB limit", func(p *rawPeer) {
			p.SendMangled(dmsgtest.ShellLine(""), func(b []byte) { binary.LittleEndian.PutUint32(b[0x28:], 2<<20) })
		}},
		{"a DELETE for a transaction that does not exist", func(p *rawPeer) {
			conn(p)
			p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, MsgID: 0x9999}})
		}},
		{"a CREATE for a msgid already open", func(p *rawPeer) {
			conn(p)
			s := hammer2Span("dup", "h2", 0, 0)
			m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
			m.MsgID = 0x1000 // the msgid of the open LNK_CONN
			p.send(m)
		}},
		{"a reply for a transaction the router never opened", func(p *rawPeer) {
			conn(p)
			p.send(&dmsg.Msg{Header: dmsg.Header{
				Cmd: dmsg.LnkError | dmsg.FlagReply | dmsg.FlagRevTrans | dmsg.FlagDelete, MsgID: 0x7777}})
		}},
		{"a LNK_SPAN before its LNK_CONN", func(p *rawPeer) {
			s := hammer2Span("early", "h2", 0, 0)
			m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
			m.MsgID = 0x2000
			p.send(m)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := dialRaw(t, r.tcpURL(), false)
			p.Next("the router's LNK_CONN") // the link is up
			tc.misbehave(p)
			if err := p.WaitEnd(); !closedByRouter(err) {
				t.Errorf("bad peer's link ended with %v, want EOF from the router", err)
			}

			label := fmt.Sprintf("after%d", i)
			origin.advertise(hammer2Span(label, "h2", 0, 1))
			healthy.waitSpans(label, 1, 1)
			eventually(t, "the bad link is gone and the good ones stay", func() error {
				if n := len(r.Tree().Links); n != 2 {
					return fmt.Errorf("%d links: %+v", n, r.Tree().Links)
				}
				return nil
			})
			if healthy.ConnState().Closed {
				t.Error("the healthy leaf's LNK_CONN was closed")
			}
			if err := r.Holds("early"); err == nil {
				t.Error("the router holds a span sent before its peer's LNK_CONN")
			}
		})
	}
}

// limits.max_spans_per_link: the span beyond the limit is refused
// (REPLY|CREATE|DELETE with an error) and the link stays up; once a span
// goes, another is accepted.
func TestASpanBeyondMaxSpansPerLinkIsRefusedAndTheLinkStays(t *testing.T) {
	r := newRouter(t, "r", withMaxSpansPerLink(2))
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	origin := dialLeaf(t, r.tcpURL(), leafConfig{Label: "origin"})
	s1 := origin.advertise(hammer2Span("s1", "h2", 0, 1))
	origin.advertise(hammer2Span("s2", "h2", 0, 1))
	s3 := origin.advertise(hammer2Span("s3", "h2", 0, 1))

	eventually(t, "s3 refused", func() error {
		if st := s3.State(); !st.Refused || st.Acked || st.Error == 0 {
			return fmt.Errorf("s3 %+v", st)
		}
		return nil
	})
	watcher.waitSpans("s1", 1)
	watcher.waitSpans("s2", 1)
	if err := r.lacks("s3"); err != nil {
		t.Error(err)
	}
	if len(watcher.RelaysOf("s3")) != 0 {
		t.Error("the watcher received the refused span")
	}
	if origin.ConnState().Closed {
		t.Fatal("the router closed the origin's LNK_CONN")
	}

	s1.Withdraw()
	watcher.waitSpans("s1", 0)
	s4 := origin.advertise(hammer2Span("s4", "h2", 0, 1))
	watcher.waitSpans("s4", 1)
	eventually(t, "s4 accepted once s1 went", func() error {
		if st := s4.State(); !st.Acked || st.Refused {
			return fmt.Errorf("s4 %+v", st)
		}
		return nil
	})
	select {
	case <-origin.Done():
		t.Error("the origin's link went down")
	default:
	}
}

// A link lost to garbage mid-stream is link loss like any other: the spans
// received on it are withdrawn from every other link.
func TestALinkLostToGarbageWithdrawsItsSpansEverywhere(t *testing.T) {
	r := newRouter(t, "r")
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	origin := dialLeaf(t, r.tcpURL(), leafConfig{Label: "origin"})
	origin.advertise(hammer2Span("pfs", "h2", 0, 1))
	watcher.waitSpans("pfs", 1, 1)

	origin.rawWrite(bytes.Repeat([]byte{0x5a}, dmsg.BaseHeaderSize))
	waitChan(t, "the origin's link to go down", origin.Done())
	watcher.waitSpans("pfs", 0)
	eventually(t, "r drops pfs and the origin's link", func() error {
		if err := r.lacks("pfs"); err != nil {
			return err
		}
		if _, err := r.LinkTo("origin"); err == nil {
			return fmt.Errorf("r still has a link to origin")
		}
		return nil
	})
}
