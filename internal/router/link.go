package router

import (
	"context"
	"crypto/ed25519"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/circ"
	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/span"
)

// link is the router's side of one iocom link: the LNK_CONN exchange, the
// spans received on it, and its shell session. It is the span engine's
// Peer for the link.
type link struct {
	r     *Router
	id    string
	conn  *iocom.Link
	opts  linkOptions
	trust linkTrust // auth.go

	circuits *circ.Table // circuits relayed over this link

	mu       sync.Mutex
	peer     *dmsg.Conn     // the peer's LNK_CONN, once received
	peerTx   *iocom.Tx      // its transaction
	spanConn *span.Neighbor // its registration with the engine
	ourTx    *iocom.Tx      // our LNK_CONN
	ourConn  dmsg.Conn      // what it says
	ourV2    bool           // ourTx is the libdmsg 2014+ form
	session  *shell.Session
	connDue  *time.Timer // limits.conn_timeout, until the peer's LNK_CONN

	peerV2      bool      // the peer's LNK_CONN is the libdmsg 2014+ form: no LNK_CIRC
	ident       peerIdent // who the peer is, for metrics (peerstats.go)
	closeReason string    // why we closed the link, when we did
}

// linkOptions say how a link came to be.
type linkOptions struct {
	via         string        // listener address or outbound target
	outbound    bool          // we dialled it
	target      config.Target // for outbound links
	shellSocket bool          // accepted on the shell socket
	tlsPeer     string        // the tls.peers name a TLS handshake authenticated
	adm         *admission    // its place in the admission counts (admit.go)

	tlsKey ed25519.PublicKey // the pinned key it presented (auth.go)
}

// startLink runs a new link over nc, admitted as opts.adm says, or
// refuses it when the router is shutting down. It returns nil when
// refused.
func (r *Router) startLink(nc net.Conn, opts linkOptions) *link {
	cfg := r.Config()
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		r.admit.release(opts.adm)
		nc.Close()
		return nil
	}
	l := &link{r: r, id: r.newLinkID(), opts: opts}
	l.trust.origin, l.trust.tlsKey = shellOrigin(nc, opts), opts.tlsKey
	log := r.log
	if opts.shellSocket {
		log = quietLogger(log) // quietlog.go
	}
	l.conn = iocom.NewLink(nc, iocom.Config{
		ID:                l.id,
		Remote:            remoteName(nc, opts),
		KeepaliveInterval: orDisabled(cfg.Keepalive.Interval),
		KeepaliveTimeout:  orDisabled(cfg.Keepalive.Timeout),
		QueueBytes:        int(cfg.Limits.QueueBytesPerLink),
		SlowConsumerGrace: cfg.Limits.SlowConsumerGrace,
		MaxTransactions:   cfg.Limits.MaxTransactionsPerLink,
		Transactions:      r.txPool,
		WorkRate:          linkRate(cfg, opts),
		WorkBurst:         2 * linkRate(cfg, opts),
		Handler:           l,
		Forward:           func(c *iocom.Link, f *iocom.Frame) bool { return l.circuits.Forward(c, f) },
		Logger:            log,
		Events:            r.events,
		Metrics:           r.metrics,
	})
	l.circuits = circ.NewTable(l.conn, l.id, l)
	r.links[l.id] = l
	r.wg.Add(1)
	r.mu.Unlock()
	r.admit.onEvict(opts.adm, func() { l.closeFor(downDisplaced) })

	l.conn.Logger().Info("link up", zap.String("via", opts.via), zap.Bool("outbound", opts.outbound),
		zap.String("tls_peer", opts.tlsPeer))
	// Our LNK_CONN is queued before the reader starts: the peer's
	// LNK_CONN makes the engine relay spans at once, and those must not
	// reach the peer ahead of our LNK_CONN.
	l.sendConn(opts.target.ConnForm == config.ConnLibdmsg)
	l.mu.Lock()
	l.connDue = time.AfterFunc(cfg.Limits.ConnTimeout, l.connTimedOut)
	l.mu.Unlock()
	l.conn.Start()
	go l.reap()
	return l
}

// connTimedOut closes a link whose peer has not sent its LNK_CONN within
// limits.conn_timeout: a connection that does not speak DMSG must not
// hold a link slot.
func (l *link) connTimedOut() {
	l.mu.Lock()
	due := l.connDue
	l.connDue = nil
	l.mu.Unlock()
	if due == nil {
		return // the LNK_CONN won the race
	}
	l.r.metrics.LimitHit("conn_timeout")
	l.r.events.Warn("conn_timeout", "link closed: no LNK_CONN within limits.conn_timeout",
		zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()))
	l.closeFor(downConnTimeout)
}

// connArrived stops the LNK_CONN deadline: the peer's LNK_CONN is in, and
// the link is no longer pending.
func (l *link) connArrived() {
	l.mu.Lock()
	if l.connDue != nil {
		l.connDue.Stop()
		l.connDue = nil
	}
	l.mu.Unlock()
	l.r.admit.connected(l.opts.adm)
}

// linkRate is the work a link's peer may make the router do per second
// (limits.link_rate), 0 for none: the operator's shell socket is not
// metered, so that its `tree` answers at once whatever the tree's size.
func linkRate(cfg *config.Config, opts linkOptions) int {
	if opts.shellSocket {
		return 0
	}
	return cfg.Limits.LinkRate
}

// orDisabled maps the config's "0 disables" to iocom's "negative disables".
func orDisabled(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// remoteName names the peer for logs and `links`: its address, or for
// unix sockets (whose peers have none) the socket it came in on.
func remoteName(nc net.Conn, opts linkOptions) string {
	if opts.outbound {
		return opts.target.Addr()
	}
	if a := nc.RemoteAddr(); a != nil && a.Network() != "unix" && a.String() != "" {
		return a.String()
	}
	return opts.via
}

// reap forgets the link once it is down.
func (l *link) reap() {
	defer l.r.wg.Done()
	<-l.conn.Done()
	reason := l.downReason()
	l.mu.Lock()
	if l.connDue != nil {
		l.connDue.Stop()
		l.connDue = nil
	}
	l.mu.Unlock()
	l.r.admit.release(l.opts.adm) // before the link leaves the list: who sees it gone may take its slot
	l.r.mu.Lock()
	delete(l.r.links, l.id)
	l.r.countDown(l, reason)
	l.r.mu.Unlock()
	l.r.linkFreed(l.conn.QueuedBytes())
}

// ID is the link id, for the engine and the tree.
func (l *link) ID() string { return l.id }

// Accept dispatches the transactions the peer opens.
func (l *link) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	switch dmsg.Base(m.Cmd) {
	case dmsg.LnkConn, dmsg.LnkConnV2:
		return l.acceptConn(tx, m)
	case dmsg.LnkSpan:
		return l.acceptSpan(tx, m)
	case dmsg.LnkCirc:
		h := l.r.circuits.Accept(l.circuits, tx, m)
		if h != nil {
			tx.Uncharge() // the circuit limits hold it now
		}
		return h
	}
	return nil // iocom refuses it with NOSUPP
}

// OneWay handles shell commands and ping answers.
func (l *link) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	switch {
	case dmsg.Base(m.Cmd) == dmsg.DbgShell && m.Cmd&dmsg.FlagReply == 0:
		l.shellCommand(m)
	case dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0:
		l.mu.Lock()
		s := l.session
		l.mu.Unlock()
		if s != nil {
			s.PingReply()
		}
	default:
		l.conn.Logger().Debug("one-way message ignored", zap.String("cmd", dmsg.CmdString(m.Cmd)))
	}
}

// shutdown closes our LNK_CONN and the peer's, which withdraws every span
// relayed over the link, then drains and closes it. It returns ctx's
// error when ctx ended before the link drained: it is then closed at once.
func (l *link) shutdown(ctx context.Context) error {
	l.mu.Lock()
	our, peer := l.ourTx, l.peerTx
	if l.closeReason == "" {
		l.closeReason = downShutdown
	}
	l.mu.Unlock()
	if our != nil {
		our.Close()
	}
	if peer != nil {
		l.connDown()
		peer.Close()
	}
	err := l.conn.Shutdown(ctx)
	<-l.conn.Done()
	return err
}
