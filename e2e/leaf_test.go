package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// leaf is a DMSG leaf node on a router's listen port: an endpoint that
// advertises a span of its own, accepts every circuit aimed at it, and
// hands what arrives inside its circuits to the test, in order, on data.
// Unless it offers per-circuit flow control (leafOptions.window), it is a
// peer without it, as libdmsg or an older dmsgd is; with it, its circuits
// keep the windows iocom keeps for any circuit end.
type leaf struct {
	*endpoint.Endpoint
	t    *testing.T
	conn *dmsgtest.GatedConn
	data chan *dmsg.Msg // what arrived inside any of the leaf's circuits
}

// leafOptions say how a leaf behaves.
type leafOptions struct {
	// window offers per-circuit flow control in the leaf's LNK_CONN with
	// this window; 0 leaves it out.
	window uint32
}

// leafLink is the link configuration of every leaf. The test may pause a
// leaf's reader for as long as it likes, so the leaf never gives up on
// its router by itself: no dead-link check, no slow-consumer check. Its
// queue is small, so that a producer without flow control is held by its
// own link about where a blocking socket write would hold it.
var leafLink = iocom.Config{KeepaliveTimeout: -1, SlowConsumerGrace: -1, QueueBytes: 64 << 10}

// dialLeaf connects a leaf without per-circuit flow control to a router's
// listen port, introduces it with LNK_CONN and, if label is not empty,
// advertises a span called label.
func dialLeaf(t *testing.T, port int, label string) *leaf {
	t.Helper()
	return dialLeafWith(t, port, label, leafOptions{})
}

// dialLeafWith is dialLeaf with options.
func dialLeafWith(t *testing.T, port int, label string, opts leafOptions) *leaf {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l := &leaf{t: t, conn: dmsgtest.NewGatedConn(nc), data: make(chan *dmsg.Msg, 1024)}
	id := config.NodeIDFor("leaf-" + label)
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label, PfsFsid: id}
	if opts.window > 0 {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, opts.window
	}
	link := leafLink
	link.ID = "leaf-" + label
	l.Endpoint = endpoint.New(l.conn, endpoint.Config{Conn: c, Link: link,
		AcceptCircuit: func(*endpoint.Circuit) iocom.Handler { return circuitData(l.data) }})
	t.Cleanup(l.close)
	if label != "" {
		s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: id, PeerType: dmsg.PeerHammer2,
			ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
		if _, err := l.Advertise(s); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *leaf) close() {
	l.conn.Release()
	l.Close()
}

// flow reports whether per-circuit flow control is in force on the link.
func (l *leaf) flow() bool {
	_, _, ok := l.Link().CircWindows()
	return ok
}

// waitSpan waits until the leaf holds a span of the node labelled label
// and returns its msgid.
func (l *leaf) waitSpan(label string) uint64 {
	l.t.Helper()
	s, err := l.WaitRelay(leafCtx(l.t, 30*time.Second), label)
	if err != nil {
		l.t.Fatalf("leaf: %v", err)
	}
	return s.MsgID
}

// open opens a circuit toward the span target, without waiting for the
// answer; what arrives inside it goes to data.
func (l *leaf) open(target uint64) *endpoint.Circuit {
	l.t.Helper()
	c, err := l.OpenCircuit(target, circuitData(l.data))
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

// up waits until the far end accepted c.
func (l *leaf) up(c *endpoint.Circuit) {
	l.t.Helper()
	if err := c.Wait(leafCtx(l.t, 20*time.Second)); err != nil {
		l.t.Fatalf("leaf: circuit %d: %v", c.ID(), err)
	}
}

// accepted waits until the router has opened n circuits on the leaf and
// returns them, in order.
func (l *leaf) accepted(n int) []*endpoint.Circuit {
	l.t.Helper()
	var cs []*endpoint.Circuit
	l.until(fmt.Sprintf("%d LNK_CIRCs", n), func() bool {
		cs = l.Accepted()
		return len(cs) == n
	})
	return cs
}

// until waits, up to 20 seconds, for cond to hold, checking it at every
// change the endpoint records.
func (l *leaf) until(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		ch := l.Changes()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			l.t.Fatalf("leaf: timed out after 20s waiting for %s", what)
		}
	}
}

// pause stops the leaf's reader, as a consumer that stops reading its
// socket; resume lets it go on.
func (l *leaf) pause()  { l.conn.Hold() }
func (l *leaf) resume() { l.conn.Release() }

// ended reports whether c's LNK_CIRC has ended at this end.
func ended(c *endpoint.Circuit) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// endCode waits up to timeout for c to end and returns the error of its
// LNK_CIRC's terminating message.
func endCode(t *testing.T, c *endpoint.Circuit, what string, timeout time.Duration) uint32 {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	_, code := c.End()
	return code
}

// leafCtx is a context for one wait of a leaf, ended with the test.
func leafCtx(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// circuitData hands what arrives inside a leaf's circuits to the test, on
// the link's reader: a test that does not take it holds the reader, as a
// consumer that stops reading does. Leaves run no transactions inside
// circuits.
type circuitData chan *dmsg.Msg

func (d circuitData) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }

func (d circuitData) OneWay(l *iocom.Link, m *dmsg.Msg) {
	select {
	case d <- m:
	case <-l.Closed():
	}
}
