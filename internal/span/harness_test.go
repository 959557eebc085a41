package span

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The harness is a deterministic discrete-event network of span engines.
// Every host (a router with an Engine, or a leaf that only advertises one
// span) owns one end of each of its links. Messages travel FIFO per
// direction; Run delivers them one at a time, picking the next direction
// with a seeded RNG, until nothing is in flight. It mirrors what iocom does
// for the engine: LNK_CONN exchange, LNK_SPAN CREATE, DELETE, the
// receiver's REPLY|DELETE (answering our DELETE, or refusing), and link loss.

type msgKind uint8

const (
	msgConn   msgKind = iota // the sender's LNK_CONN
	msgCreate                // LNK_SPAN CREATE, opener -> receiver
	msgDelete                // the opener's DELETE
	msgReply                 // the receiver's REPLY|DELETE
)

// hmsg is kept small (pointers, not copies): a 1000-router convergence has
// millions of messages in flight.
type hmsg struct {
	kind  msgKind
	msgid uint64
	span  *dmsg.Span // msgCreate: the engine's fresh copy, ours to keep
	conn  *dmsg.Conn // msgConn
	proof *Proof     // msgCreate in a signing network: the relay's record
}

var (
	testClid    = uuid.NewSHA1(uuid.NameSpaceOID, []byte("test-cluster"))
	errLinkDown = errors.New("harness: link is down")
)

const testClLabel = "test"

// host is a router (eng != nil) or a leaf (ad != nil).
type host struct {
	idx  int
	name string
	eng  *Engine
	ad   *dmsg.Span // leaf: its advertisement
	ends []*end
	down bool // a removed leaf
	// In a signing network (trust_test.go): a router's sequence number,
	// new with every start; a forger is a leaf advertising another
	// node, with the record it sends (nil: unsigned).
	seq    uint64
	forger bool
	adRec  []byte
}

func (h *host) isRouter() bool { return h.eng != nil }

// end is one host's side of a link. For a router it is the engine's Peer.
type end struct {
	net   *network
	id    string
	owner *host
	peer  *end
	edge  *edge
	q     []hmsg
	qhead int
	act   int // index in network.active, -1 when the queue is empty
	conn  *Neighbor
	sent  map[uint64]*htx // transactions this side opened
	recv  map[uint64]*hrx // transactions the other side opened
	next  uint64
	cut   bool
}

// htx is a LNK_SPAN transaction opened by an end: a relay (router) or the
// leaf's advertisement. It is the engine's SpanTx.
type htx struct {
	e      *end
	msgid  uint64
	relay  *Relay // nil for a leaf's advertisement
	closed bool   // our DELETE was sent; waiting for the REPLY|DELETE
}

func (t *htx) MsgID() uint64 { return t.msgid }

func (t *htx) Close() {
	if t.closed {
		return
	}
	t.closed = true
	t.e.send(hmsg{kind: msgDelete, msgid: t.msgid})
}

// hrx is a LNK_SPAN transaction received by an end.
type hrx struct {
	link    *Advert    // a router's: what the engine made of it
	span    *dmsg.Span // a leaf's: what it got
	refused bool
	replied bool
}

type edge struct {
	a, b *end
	key  [2]int
}

type network struct {
	tb       testing.TB
	rng      *rand.Rand
	cfg      Config // template for every router (Rnss and Self are per router)
	hosts    []*host
	edges    map[[2]int]*edge
	active   []*end
	linkSeq  int
	sent     int  // messages sent so far
	refused  int  // spans refused for a budget so far
	maxSteps int  // 0: a bound from the network's size (see run)
	sink     bool // benchmarks: count messages but do not queue them

	ownRefused int // spans routers refused as their own node's (ErrOwnNode)

	// signed makes every router sign its advertisement and know every
	// router's key, as a cluster pinning each other's keys does
	// (trust_test.go).
	signed  bool
	signSeq uint64
}

func newNetwork(tb testing.TB, seed uint64, cfg Config) *network {
	return &network{
		tb:    tb,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		cfg:   cfg,
		edges: make(map[[2]int]*edge),
	}
}

func routerName(i int) string { return fmt.Sprintf("r%d", i) }

func routerSpan(name string) dmsg.Span {
	return dmsg.Span{
		PfsClid:  testClid,
		PfsFsid:  uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)),
		PeerType: dmsg.PeerRouter,
		ClLabel:  testClLabel,
		FsLabel:  name,
	}
}

func leafSpan(name string) dmsg.Span {
	s := routerSpan(name)
	s.PeerType = dmsg.PeerHammer2
	s.PfsType = 1 // MASTER
	return s
}

// addRouters adds n routers, each advertising itself.
func (n *network) addRouters(count int) {
	for range count {
		h := &host{idx: len(n.hosts)}
		h.name = routerName(h.idx)
		n.hosts = append(n.hosts, h)
		n.startEngine(h)
	}
}

func (n *network) startEngine(h *host) {
	cfg := n.cfg
	cfg.Rnss = n.rng.Uint32() | 1
	self := routerSpan(h.name)
	cfg.Self = &self
	if n.signed {
		n.signSeq++
		h.seq = n.signSeq
		cfg.SignSelf = func(s dmsg.Span) Proof { return Proof{Verified: true, Seq: h.seq, Record: record(h.name, h.seq)} }
	}
	h.eng = New(cfg)
}

// addLeaf attaches a new leaf advertising a HAMMER2 span to router r.
func (n *network) addLeaf(r int) *host {
	h := &host{idx: len(n.hosts)}
	h.name = fmt.Sprintf("leaf%d", h.idx)
	ad := leafSpan(h.name)
	h.ad = &ad
	n.hosts = append(n.hosts, h)
	n.link(h.idx, r)
	return h
}

func (n *network) router(i int) *host { return n.hosts[i] }

// connInfo is the LNK_CONN h sends. Odd hosts name themselves in it (a
// dmsgd router sends its node id), so their peers never offer them their
// own advertisement; even ones do not (as older peers), so a router they
// link must refuse it when it comes back (ErrOwnNode).
func (n *network) connInfo(h *host) dmsg.Conn {
	var self uuid.UUID
	if h.idx%2 == 1 {
		self = uuid.NewSHA1(uuid.NameSpaceOID, []byte(h.name))
	}
	if h.isRouter() {
		return dmsg.Conn{PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter, Rnss: h.eng.Rnss(), FsLabel: h.name, PfsFsid: self}
	}
	return dmsg.Conn{PeerMask: 1 << dmsg.PeerHammer2, PeerType: dmsg.PeerHammer2, FsLabel: h.name, PfsFsid: self}
}

func edgeKey(a, b int) [2]int { return [2]int{min(a, b), max(a, b)} }

// link connects hosts a and b; both send their LNK_CONN at once.
func (n *network) link(a, b int) {
	k := edgeKey(a, b)
	if a == b || n.edges[k] != nil {
		n.tb.Fatalf("harness: bad or duplicate link %d-%d", a, b)
	}
	n.linkSeq++
	id := fmt.Sprintf("L%d", n.linkSeq)
	ed := &edge{key: k}
	ed.a, ed.b = n.newEnd(id, n.hosts[a], ed), n.newEnd(id, n.hosts[b], ed)
	ed.a.peer, ed.b.peer = ed.b, ed.a
	n.edges[k] = ed
	ca, cb := n.connInfo(ed.a.owner), n.connInfo(ed.b.owner)
	ed.a.send(hmsg{kind: msgConn, conn: &ca})
	ed.b.send(hmsg{kind: msgConn, conn: &cb})
}

func (n *network) newEnd(id string, h *host, ed *edge) *end {
	e := &end{net: n, id: id, owner: h, edge: ed, act: -1,
		sent: make(map[uint64]*htx), recv: make(map[uint64]*hrx)}
	h.ends = append(h.ends, e)
	return e
}

// ID and OpenSpan make an end the engine's Peer.
func (e *end) ID() string { return e.id }

func (e *end) OpenSpan(s *dmsg.Span, r *Relay) (SpanTx, error) {
	if e.cut {
		return nil, errLinkDown
	}
	return e.open(s, r), nil
}

func (e *end) open(s *dmsg.Span, r *Relay) *htx {
	e.next++
	tx := &htx{e: e, msgid: e.next, relay: r}
	if !e.net.sink {
		e.sent[tx.msgid] = tx
	}
	m := hmsg{kind: msgCreate, msgid: tx.msgid, span: s}
	switch {
	case r != nil && r.Proof().Record != nil:
		m.proof = &Proof{Record: extend(r.Proof().Record, e.peer.owner.name)}
	case r == nil && e.owner.adRec != nil:
		m.proof = &Proof{Record: extend(e.owner.adRec, e.peer.owner.name)}
	}
	e.send(m)
	return tx
}

func (e *end) send(m hmsg) {
	n := e.net
	if e.cut {
		return
	}
	n.sent++
	if n.sink {
		return
	}
	e.q = append(e.q, m)
	if e.act < 0 {
		e.act = len(n.active)
		n.active = append(n.active, e)
	}
}

func (n *network) deactivate(e *end) {
	last := n.active[len(n.active)-1]
	n.active[e.act] = last
	last.act = e.act
	n.active = n.active[:len(n.active)-1]
	e.act = -1
	e.q, e.qhead = e.q[:0], 0
}

// run delivers messages until the network is quiet and returns how many
// were delivered.
func (n *network) run() int {
	n.tb.Helper()
	limit := n.maxSteps
	if limit == 0 {
		// Convergence costs about K*degree messages per (router, origin)
		// pair; this is far above that, so a routing loop fails fast
		// instead of running for minutes.
		limit = 200*len(n.hosts)*len(n.hosts) + 100_000
	}
	steps := 0
	for len(n.active) > 0 {
		if steps++; steps > limit {
			n.tb.Fatalf("harness: not quiet after %d messages", limit)
		}
		from := n.active[n.rng.IntN(len(n.active))]
		m := from.q[from.qhead]
		from.q[from.qhead] = hmsg{}
		from.qhead++
		if from.qhead == len(from.q) {
			n.deactivate(from)
		}
		from.peer.deliver(m)
	}
	return steps
}

func (e *end) deliver(m hmsg) {
	switch m.kind {
	case msgConn:
		e.onConn(*m.conn)
	case msgCreate:
		e.onCreate(m.msgid, m.span, m.proof)
	case msgDelete:
		e.onDelete(m.msgid)
	case msgReply:
		e.onReply(m.msgid)
	}
}

func (e *end) onConn(c dmsg.Conn) {
	if e.owner.isRouter() {
		e.conn = e.owner.eng.ConnUp(e, c)
		return
	}
	// A leaf advertises once it knows the router listens (docs/PROTOCOL.md 4.1).
	e.open(e.owner.ad, nil)
}

func (e *end) onCreate(msgid uint64, s *dmsg.Span, proof *Proof) {
	if e.recv[msgid] != nil {
		e.net.tb.Fatalf("harness: %s %s: CREATE for open msgid %d", e.owner.name, e.id, msgid)
	}
	rx := &hrx{}
	e.recv[msgid] = rx
	if !e.owner.isRouter() {
		rx.span = s
		return
	}
	if e.conn == nil {
		e.net.tb.Fatalf("harness: %s %s: span before LNK_CONN", e.owner.name, e.id)
	}
	p, forged := e.net.judge(s, proof, e.owner.name, e.peer.owner.name)
	if forged {
		// The daemon refuses a forged signature before the engine sees it.
		rx.refused, rx.replied = true, true
		e.send(hmsg{kind: msgReply, msgid: msgid})
		return
	}
	l, err := e.owner.eng.SpanReceivedWith(e.conn, msgid, *s, p)
	switch {
	case errors.Is(err, ErrOwnNode):
		e.net.ownRefused++
		rx.refused, rx.replied = true, true
		e.send(hmsg{kind: msgReply, msgid: msgid})
	case Limit(err) != "": // refused for a budget: REPLY|DELETE
		e.net.refused++
		rx.refused, rx.replied = true, true
		e.send(hmsg{kind: msgReply, msgid: msgid})
	case err != nil:
		e.net.tb.Fatalf("harness: %s %s: SpanReceived(%d): %v", e.owner.name, e.id, msgid, err)
	}
	rx.link = l
}

func (e *end) onDelete(msgid uint64) {
	rx := e.recv[msgid]
	if rx == nil {
		e.net.tb.Fatalf("harness: %s %s: DELETE for unknown msgid %d", e.owner.name, e.id, msgid)
	}
	delete(e.recv, msgid)
	if rx.link != nil {
		e.owner.eng.SpanWithdrawn(rx.link)
	}
	if !rx.replied {
		e.send(hmsg{kind: msgReply, msgid: msgid})
	}
}

// onReply finishes a transaction we closed, or handles the peer closing
// (refusing) one we still hold open: the router's engine must DELETE back.
func (e *end) onReply(msgid uint64) {
	tx := e.sent[msgid]
	if tx == nil {
		e.net.tb.Fatalf("harness: %s %s: REPLY|DELETE for unknown msgid %d", e.owner.name, e.id, msgid)
	}
	delete(e.sent, msgid)
	if tx.closed {
		return
	}
	if tx.relay == nil {
		tx.Close() // a leaf's refused advertisement
		return
	}
	e.owner.eng.RelayClosed(tx.relay)
	if !tx.closed {
		e.net.tb.Fatalf("harness: %s %s: RelayClosed did not DELETE back msgid %d", e.owner.name, e.id, msgid)
	}
}

// unlink cuts a link as a lost neighbor: queued messages are lost and
// each router side sees link loss. Half the time (seeded) the router is
// told the iocom way, every span transaction terminated first and the
// LNK_CONN last; otherwise with ConnDown alone.
func (n *network) unlink(a, b int) {
	ed := n.edges[edgeKey(a, b)]
	if ed == nil {
		n.tb.Fatalf("harness: no link %d-%d", a, b)
	}
	delete(n.edges, ed.key)
	for _, e := range []*end{ed.a, ed.b} {
		e.cut = true
		if e.act >= 0 {
			n.deactivate(e)
		}
		e.owner.ends = slices.DeleteFunc(e.owner.ends, func(x *end) bool { return x == e })
	}
	for _, e := range []*end{ed.a, ed.b} {
		e.lose(n.rng.IntN(2) == 0)
	}
}

func (e *end) lose(childrenFirst bool) {
	if e.owner.isRouter() && e.conn != nil {
		eng := e.owner.eng
		if childrenFirst {
			for _, id := range sortedKeys(e.recv) {
				eng.SpanWithdrawn(e.recv[id].link)
			}
			for _, id := range sortedKeys(e.sent) {
				eng.RelayClosed(e.sent[id].relay)
			}
		}
		eng.ConnDown(e.conn)
	}
	clear(e.sent)
	clear(e.recv)
}

// restart replaces a router's engine (new rnss) as a crash and restart
// would: every link is lost, then re-established.
func (n *network) restart(r int) {
	h := n.hosts[r]
	var peers []int
	for _, e := range slices.Clone(h.ends) {
		peers = append(peers, e.peer.owner.idx)
		n.unlink(r, e.peer.owner.idx)
	}
	n.startEngine(h)
	for _, p := range peers {
		n.link(r, p)
	}
}

// removeLeaf detaches a leaf for good.
func (n *network) removeLeaf(l *host) {
	for _, e := range slices.Clone(l.ends) {
		n.unlink(l.idx, e.peer.owner.idx)
	}
	l.down = true
}
