package circ_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// leafOptions say how a test leaf behaves.
type leafOptions struct {
	peerType uint8 // of its LNK_CONN and span; HAMMER2 when 0
	gated    bool  // wrap the socket so reads can be held
	// refuse answers every circuit aimed at the leaf with CANTCIRC.
	refuse bool
	// queueBytes bounds its outbound queue for WaitRoom; 1 MiB when 0.
	queueBytes int
	// legacy leaves per-circuit flow control out of its LNK_CONN, as a
	// libdmsg peer or an older dmsgd would; window is the window it
	// grants otherwise (leafWindow when 0).
	legacy bool
	window int
}

// leafWindow is the window a test leaf grants on its circuits: the
// smallest a LNK_CONN may declare, so that windows run out quickly.
const leafWindow = dmsg.MinCircWindow

// leaf is a test node: an endpoint that advertises its own span and runs
// the inner request protocol (circuit) on every circuit it opens or
// accepts. A circuit that must stay unanswered in setup is a raw peer's
// job (dmsgtest), not a leaf's.
type leaf struct {
	tb     testing.TB
	label  string
	opts   leafOptions
	ep     *endpoint.Endpoint
	conn   *iocom.Link         // the endpoint's link
	gate   *dmsgtest.GatedConn // with gated: holds the leaf's reads
	advert *endpoint.Advert

	mu       sync.Mutex
	accepted map[*endpoint.Circuit]*circuit // by the endpoint's circuit
}

// dialLeaf connects a leaf labelled label to the router at addr, sends its
// LNK_CONN and advertises its span. The test's cleanup closes it.
func dialLeaf(tb testing.TB, addr, label string, opts leafOptions) *leaf {
	tb.Helper()
	if opts.peerType == 0 {
		opts.peerType = dmsg.PeerHammer2
	}
	if opts.queueBytes == 0 {
		opts.queueBytes = 1 << 20
	}
	if opts.window == 0 {
		opts.window = leafWindow
	}
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		tb.Fatalf("leaf %s: dial %s: %v", label, addr, err)
	}
	l := &leaf{tb: tb, label: label, opts: opts, accepted: make(map[*endpoint.Circuit]*circuit)}
	timeout := 10 * time.Second // room for a loaded machine
	if opts.gated {
		l.gate = dmsgtest.NewGatedConn(nc)
		nc = l.gate
		timeout = -1 // a held reader must not count the router as silent
	}
	c := dmsg.Conn{PfsFsid: config.NodeIDFor(label), PeerMask: ^uint64(0), PeerType: opts.peerType,
		ProtoVersion: 1, PfsMask: ^uint64(0), FsLabel: label}
	if !opts.legacy {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, uint32(opts.window)
	}
	l.ep = endpoint.New(nc, endpoint.Config{Conn: c, AcceptCircuit: l.acceptCircuit, Link: iocom.Config{
		ID:                "leaf-" + label,
		KeepaliveInterval: 100 * time.Millisecond,
		KeepaliveTimeout:  timeout,
		QueueBytes:        opts.queueBytes,
		Logger:            zap.NewNop(),
	}})
	l.conn = l.ep.Link()
	tb.Cleanup(l.close)
	if l.advert, err = l.ep.Advertise(l.ownSpan()); err != nil {
		tb.Fatalf("leaf %s: %v", label, err)
	}
	return l
}

// ownSpan is the leaf's advertisement.
func (l *leaf) ownSpan() dmsg.Span {
	return dmsg.Span{
		PfsClid:      config.NodeIDFor("leaves"),
		PfsFsid:      config.NodeIDFor(l.label),
		PeerType:     l.opts.peerType,
		ProtoVersion: 1,
		Rnss:         1,
		ClLabel:      "leaves",
		FsLabel:      l.label,
	}
}

// withdraw closes the leaf's span.
func (l *leaf) withdraw() { l.advert.Withdraw() }

func (l *leaf) close() {
	l.conn.Close()
	select {
	case <-l.ep.Done():
	case <-time.After(waitTimeout):
		l.tb.Errorf("leaf %s: link did not go down", l.label)
	}
}

// acceptCircuit runs the inner protocol on a circuit aimed at the leaf's
// span, unless the leaf refuses every circuit.
func (l *leaf) acceptCircuit(ec *endpoint.Circuit) iocom.Handler {
	if l.opts.refuse {
		return nil
	}
	c := newCircuit(l)
	c.setEnd(ec)
	l.mu.Lock()
	l.accepted[ec] = c
	l.mu.Unlock()
	return c
}

// spanFor returns the best span the leaf holds for the node labelled
// label.
func (l *leaf) spanFor(label string) (endpoint.Relay, bool) { return l.ep.Best(label) }

// waitSpan waits until the leaf holds a span for label and returns it.
func (l *leaf) waitSpan(label string) endpoint.Relay {
	l.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := l.ep.WaitRelay(ctx, label)
	if err != nil {
		l.tb.Fatalf("leaf %s: %v", l.label, err)
	}
	return s
}

// open opens a circuit on the span with msgid target and makes this leaf
// its opening end. It does not wait for the answer.
func (l *leaf) open(target uint64) *circuit {
	l.tb.Helper()
	c := newCircuit(l)
	ec, err := l.ep.OpenCircuit(target, c)
	if err != nil {
		l.tb.Fatalf("leaf %s: %v", l.label, err)
	}
	c.setEnd(ec)
	return c
}

// openTo opens a circuit to the node labelled label and waits until the
// far end accepted it.
func (l *leaf) openTo(label string) *circuit {
	l.tb.Helper()
	c := l.open(l.waitSpan(label).MsgID)
	c.waitUp()
	return c
}

// waitAccepted waits for the n-th circuit (0-based) aimed at the leaf.
// The endpoint lists a circuit once it is set up, scope and all.
func (l *leaf) waitAccepted(n int) *circuit {
	l.tb.Helper()
	var c *circuit
	eventually(l.tb, fmt.Sprintf("%s accepted circuit #%d", l.label, n), func() error {
		accepted := l.ep.Accepted()
		if len(accepted) <= n {
			return fmt.Errorf("%d accepted", len(accepted))
		}
		l.mu.Lock()
		c = l.accepted[accepted[n]]
		l.mu.Unlock()
		return nil
	})
	return c
}

// checkClean reports an error while the leaf holds circuit state: an
// open circuit, an open scope or transaction inside one, or more
// transactions on its link than its LNK_CONNs and spans account for.
func (l *leaf) checkClean() error {
	if n := l.ep.OpenCircuits(); n != 0 {
		return fmt.Errorf("leaf %s: %d circuit(s) open", l.label, n)
	}
	want := len(l.ep.Relays())
	if !l.ep.ConnState().Closed {
		want++ // our LNK_CONN
	}
	if !l.advert.State().Ended {
		want++
	}
	for _, rc := range l.ep.RouterConns() {
		if !rc.Closed {
			want++
		}
	}
	if got := l.conn.Stats().OpenTx; got != want {
		return fmt.Errorf("leaf %s: %d transactions open on the link, want %d (LNK_CONNs and spans only)", l.label, got, want)
	}
	return nil
}
