package main

import (
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Messages to a dmsgd.

// connMsg is an endpoint's LNK_CONN (msgid 1), offering CIRC_WINDOW.
func connMsg(label string) *dmsg.Msg {
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label}
	if offerWindow {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, window
	}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	return m
}

// spanMsg advertises label (msgid 2).
func spanMsg(label string) *dmsg.Msg {
	sp := dmsg.Span{PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "bench", FsLabel: label}
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &sp)
	m.MsgID = 2
	return m
}

// routerWindow returns the window a router's LNK_CONN grants, if m is one
// and CIRC_WINDOW is in force (both offer it).
func routerWindow(m *dmsg.Msg) (int64, bool) {
	if !offerWindow || dmsg.Base(m.Cmd) != dmsg.LnkConn || m.Cmd&dmsg.FlagCreate == 0 || m.Cmd&dmsg.FlagReply != 0 {
		return 0, false
	}
	c, err := m.Conn()
	if err != nil || c.Caps&dmsg.CapCircWindow == 0 {
		return 0, false
	}
	return int64(c.CircWindow), true
}
