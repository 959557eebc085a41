package e2e

import (
	bin "encoding/binary"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// The attack suite's peers are dmsgtest.Peers, hostile or well-behaved:
// what they send and when is entirely the test's choice, and what they
// receive streams through Run, so that floods of millions of messages go
// through them. What e2e adds is where they dial from.

// dialWire connects a peer to the router on 127.0.0.1:port from the
// loopback address from ("" for any).
func dialWire(port int, from string) (*dmsgtest.Peer, error) {
	return dialWirePeer(port, from, 0)
}

// dialWirePeer is dialWire with the socket's receive buffer set to
// rcvbuf when it is not 0: a peer that does not mean to read makes it
// small, so that what the router sends it piles up in the router rather
// than in the kernel.
func dialWirePeer(port int, from string, rcvbuf int) (*dmsgtest.Peer, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return err
		}
	}
	nc, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	return dmsgtest.NewPeer(nc), nil
}

// writeFlushing writes msgs into p's buffer and, with flush, writes
// everything buffered out: floods flush every few hundred messages.
func writeFlushing(p *dmsgtest.Peer, flush bool, msgs ...*dmsg.Msg) error {
	if err := p.Write(msgs...); err != nil || !flush {
		return err
	}
	return p.Flush()
}

// Messages, built as docs/PROTOCOL.md section 2 lays them out.

// seqID returns a node id made of kind and two counters, so floods need
// not hash a label per span.
func seqID(kind byte, a, b uint32) uuid.UUID {
	var u uuid.UUID
	u[0] = kind
	bin.LittleEndian.PutUint32(u[4:], a)
	bin.LittleEndian.PutUint32(u[8:], b)
	return u
}

// leafConn is a LNK_CONN from a leaf called label that wants the spans
// peerMask selects.
func leafConn(msgid uint64, label string, peerType uint8, peerMask uint64) *dmsg.Msg {
	c := dmsg.Conn{PeerMask: peerMask, PfsMask: ^uint64(0), PeerType: peerType, ProtoVersion: 1,
		FsLabel: label, PfsFsid: uuid.NewSHA1(uuid.NameSpaceOID, []byte("attack-"+label))}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = msgid
	return m
}

// advertSpan is a LNK_SPAN CREATE advertising node label with id in
// cluster "attack"; seq goes in the media bytes, which routers relay
// unchanged, so a receiver can tell advertisements of one label apart.
func advertSpan(msgid uint64, label string, id uuid.UUID, seq uint64) *dmsg.Msg {
	s := dmsg.Span{PfsClid: uuid.NewSHA1(uuid.NameSpaceOID, []byte("attack")), PfsFsid: id,
		PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "attack", FsLabel: label}
	bin.LittleEndian.PutUint64(s.Media[:], seq)
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
	m.MsgID = msgid
	return m
}

func spanSeq(s dmsg.Span) uint64 { return bin.LittleEndian.Uint64(s.Media[:]) }

// politeness is the book a well-behaved peer keeps on the transactions
// the router opens on it, so that it answers each as docs/PROTOCOL.md 3 asks:
// LNK_CONNs are acknowledged and kept open (or refused, for a shell
// client), every DELETE is answered.
type politeness struct {
	mu     sync.Mutex
	opened map[uint64]txAnswer // router-opened transactions, by msgid
	refuse bool                // refuse the router's LNK_CONN (shell clients)
}

// txAnswer is how far we answered a transaction the router opened.
type txAnswer uint8

const (
	unanswered   txAnswer = iota
	acknowledged          // REPLY|CREATE sent
	closedByUs            // REPLY|DELETE sent
)

// handle answers m if it needs an answer, and reports whether m opened
// (create) or ended (del) a transaction of the router.
func (pl *politeness) handle(p *dmsgtest.Peer, m *dmsg.Msg) (create, del bool) {
	f := m.Cmd & dmsg.FlagsMask
	if m.Circuit != 0 || f&dmsg.FlagReply != 0 {
		return false, false
	}
	if f&(dmsg.FlagCreate|dmsg.FlagDelete) == 0 {
		if m.MsgID == 0 && dmsg.Base(m.Cmd) == dmsg.LnkPing {
			p.Write(dmsgtest.Pong())
		}
		return false, false
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.opened == nil {
		pl.opened = make(map[uint64]txAnswer)
	}
	create, del = f&dmsg.FlagCreate != 0, f&dmsg.FlagDelete != 0
	base := dmsg.Base(m.Cmd)
	isConn := base == dmsg.LnkConn || base == dmsg.LnkConnV2
	switch {
	case create && del:
		p.Write(dmsgtest.Answer(m.MsgID, dmsg.FlagCreate|dmsg.FlagDelete, 0))
	case create && isConn && pl.refuse:
		p.Write(dmsgtest.Answer(m.MsgID, dmsg.FlagCreate|dmsg.FlagDelete, dmsg.ErrNoSupp))
		pl.opened[m.MsgID] = closedByUs
	case create && isConn:
		p.Write(dmsgtest.Answer(m.MsgID, dmsg.FlagCreate, 0))
		pl.opened[m.MsgID] = acknowledged
	case create:
		pl.opened[m.MsgID] = unanswered
	case del:
		state, ok := pl.opened[m.MsgID]
		delete(pl.opened, m.MsgID)
		switch {
		case !ok || state == closedByUs:
		case state == acknowledged:
			p.Write(dmsgtest.Answer(m.MsgID, dmsg.FlagDelete, 0))
		default:
			p.Write(dmsgtest.Answer(m.MsgID, dmsg.FlagCreate|dmsg.FlagDelete, 0))
		}
	}
	return create, del
}
