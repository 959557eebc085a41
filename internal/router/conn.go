package router

import (
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// ourConn is the LNK_CONN this router sends: its identity, filters that
// ask for every span, and the extensions it speaks (docs/PROTOCOL.md 11.1):
// per-circuit flow control with the window limits.circuit_window.
func (r *Router) ourConn() dmsg.Conn {
	cfg := r.Config()
	return dmsg.Conn{
		PfsFsid:      r.nodeID,
		PeerMask:     ^uint64(0),
		PeerType:     dmsg.PeerRouter,
		ProtoVersion: 1,
		Rnss:         r.engine.Rnss(),
		PfsMask:      ^uint64(0),
		FsLabel:      cfg.Node.Label,
		Caps:         dmsg.CapCircWindow,
		CircWindow:   uint32(cfg.Limits.CircuitWindow),
	}
}

// sendConn opens our LNK_CONN, in the dmsgd form first or in the libdmsg
// 2014+ form after a fallback or when the target's conn_form says so
// (docs/PROTOCOL.md section 10).
func (l *link) sendConn(v2 bool) {
	c := l.r.ourConn()
	c.Caps |= l.ourCaps()
	tx, err := l.conn.Open(dmsg.NewConnMsg(0, &c, v2), l.ourConnMsg)
	if err != nil {
		return // the link is already going down
	}
	l.mu.Lock()
	l.ourTx, l.ourV2, l.ourConn = tx, v2, c
	l.mu.Unlock()
	if v2 {
		// The libdmsg form carries no extension: none is in force on the
		// link any more (docs/PROTOCOL.md 11.1).
		l.conn.SetCircWindows(0, 0)
	}
}

// setCircWindows puts per-circuit flow control in force on the link when
// both LNK_CONNs name it (docs/PROTOCOL.md 11.1, 11.2), before the peer's
// LNK_CONN lets any span, and so any circuit, exist on the link.
func (l *link) setCircWindows(peer *dmsg.Conn, peerV2 bool) {
	l.mu.Lock()
	our, ourV2 := l.ourConn, l.ourV2
	l.mu.Unlock()
	switch {
	case peerV2 || ourV2 || !our.Shared(peer, dmsg.CapCircWindow):
		return
	case peer.CircWindow < dmsg.MinCircWindow:
		l.conn.Logger().Warn("peer offers per-circuit flow control with a window too small for the largest message; not using it",
			zap.Uint32("circ_window", peer.CircWindow), zap.Int("min", dmsg.MinCircWindow))
		return
	}
	l.conn.SetCircWindows(int(our.CircWindow), int(peer.CircWindow))
}

// ourConnMsg handles the peer's answers to our LNK_CONN.
func (l *link) ourConnMsg(tx *iocom.Tx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return // the acknowledgement: our LNK_CONN stays open
	}
	tx.Close()
	if m.Error == dmsg.ErrLostLink {
		return
	}
	l.mu.Lock()
	retry := m.Error == dmsg.ErrNoSupp && !l.ourV2 && l.ourTx == tx
	l.mu.Unlock()
	switch {
	case retry && l.opts.target.ConnForm == config.ConnDmsgd:
		l.conn.Logger().Warn("peer refused our LNK_CONN; conn_form dmsgd keeps the libdmsg form from being tried",
			zap.String("error", dmsg.ErrorString(m.Error)))
	case retry:
		l.conn.Logger().Debug("peer refused our LNK_CONN; sending the libdmsg form")
		l.sendConn(true)
	}
}

// fallbackToV2 replaces our dmsgd-form LNK_CONN with the libdmsg form when
// the peer shows it speaks only that generation.
func (l *link) fallbackToV2() {
	if l.opts.target.ConnForm == config.ConnDmsgd {
		return
	}
	l.mu.Lock()
	old, v2 := l.ourTx, l.ourV2
	l.mu.Unlock()
	if v2 || old == nil {
		return
	}
	l.mu.Lock()
	l.ourV2 = true // ourConnMsg must not retry again on the refusal to come
	l.mu.Unlock()
	old.Close()
	l.sendConn(true)
}

// acceptConn handles the peer's LNK_CONN: acknowledge it, keep it open and
// register the peer's filters with the span engine, which starts relaying.
func (l *link) acceptConn(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	info, err := m.Conn()
	if err != nil {
		return nil
	}
	log := l.conn.Logger()
	if info.PfsFsid == l.r.nodeID {
		l.r.events.Warn("conn_self", "link refused: the peer is this router itself",
			zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()), zap.String("node_id", info.PfsFsid.String()))
		tx.CloseError(dmsg.ErrParam)
		l.closeFor(downSelfLink)
		return nil
	}
	l.connArrived()
	l.mu.Lock()
	dup := l.peerTx != nil
	l.mu.Unlock()
	if dup {
		l.r.events.Warn("conn_second", "second LNK_CONN on one link refused",
			zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()))
		tx.CloseError(dmsg.ErrParam)
		return nil
	}
	if !l.awaitSourceTurn() {
		return nil // closed while its source was in debt (churn.go)
	}
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	if m.Cmd&dmsg.FlagDelete != 0 {
		tx.Close()
		return nil
	}
	v2 := dmsg.Base(m.Cmd) == dmsg.LnkConnV2
	if v2 {
		l.fallbackToV2()
	}
	// Set before the engine relays anything over the link: a circuit
	// resolved toward its spans must already see the form.
	l.mu.Lock()
	l.peerV2 = v2
	l.mu.Unlock()
	l.noteConn(&info, v2)
	l.identify(info)
	l.circuits.SetRouterPeer(info.PeerType == dmsg.PeerRouter)
	l.setCircWindows(&info, v2)
	sc := l.r.engine.ConnUp(l, info)
	l.chargeWork(sc, false) // the table relayed to it: its source pays
	l.mu.Lock()
	l.peer, l.peerTx, l.spanConn = &info, tx, sc
	l.mu.Unlock()
	log.Info("peer connected", zap.String("peer_label", info.FsLabel),
		zap.String("peer_type", shell.PeerTypeName(info.PeerType)), zap.String("node_id", info.PfsFsid.String()),
		zap.Bool("libdmsg_form", dmsg.Base(m.Cmd) == dmsg.LnkConnV2))
	return l.peerConnMsg
}

// peerConnMsg handles the rest of the peer's LNK_CONN: VOLCONF messages
// while it is open, then its end, which withdraws everything relayed to the
// peer.
func (l *link) peerConnMsg(tx *iocom.Tx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		if dmsg.Base(m.Cmd) == dmsg.LnkVolConf {
			l.volconf(m)
		}
		return
	}
	l.connDown()
	tx.Close()
	if m.Error != dmsg.ErrLostLink {
		l.conn.Logger().Info("peer closed its LNK_CONN")
	}
}

// connDown unregisters the peer's LNK_CONN from the engine once.
func (l *link) connDown() {
	l.mu.Lock()
	sc := l.spanConn
	l.spanConn = nil
	peer := l.peer
	l.mu.Unlock()
	if sc != nil {
		l.r.engine.ConnDown(sc)
		work := l.chargeWork(sc, false) // its withdrawal: its source pays
		l.r.memory.teardown(work)
	}
	if peer != nil {
		l.r.mediaConnClosed(l, peer.MediaID)
	}
}
