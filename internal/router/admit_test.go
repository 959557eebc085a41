package router_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// withLimits edits a test router's limits.
func withLimits(edit func(l *config.Limits)) routerOption {
	return func(c *config.Config) { edit(&c.Limits) }
}

// limitHits returns how many refusals r counted for limit.
func limitHits(tb testing.TB, r *testRouter, limit string) float64 {
	tb.Helper()
	v, _ := sample(tb, r.Metrics().Registry(), "dmsgd_limit_refusals_total", map[string]string{"limit": limit})
	return v
}

// dialRawFrom connects a raw peer to the router's tcp listener from the
// loopback address ip (127.0.0.0/8 is all loopback).
func dialRawFrom(tb testing.TB, r *testRouter, ip string, autoPong bool) *rawPeer {
	tb.Helper()
	d := net.Dialer{Timeout: waitTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", r.addr())
	if err != nil {
		tb.Fatalf("dial %s from %s: %v", r.addr(), ip, err)
	}
	return startRaw(tb, nc, autoPong)
}

// refusedAtOnce checks that the router closed p's connection without
// sending anything: refused before it became a link.
func refusedAtOnce(tb testing.TB, p *rawPeer, what string) {
	tb.Helper()
	if err := p.WaitEnd(); !closedByRouter(err) {
		tb.Errorf("%s ended with %v, want EOF from the router", what, err)
	}
	if tr := p.Transcript(); tr != "" {
		tb.Errorf("%s received:\n%s", what, tr)
	}
}

// limits.max_links_per_source: one address holds only so many links; a
// connection beyond them is closed at once and counted, while another
// address still gets in.
func TestASourceHoldsAtMostItsShareOfLinks(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxLinksPerSource = 2 }))
	for i := range 2 {
		p := dialRawFrom(t, r, "127.0.0.1", true)
		p.Expect(fmt.Sprintf("the router's LNK_CONN on link %d", i+1), isConnCreate)
	}
	refusedAtOnce(t, dialRawFrom(t, r, "127.0.0.1", true), "a third connection from 127.0.0.1")
	if n := limitHits(t, r, "max_links_per_source"); n != 1 {
		t.Errorf("max_links_per_source refusals counted %v, want 1", n)
	}
	other := dialRawFrom(t, r, "127.0.0.2", true)
	other.Expect("the router's LNK_CONN on a link from 127.0.0.2", isConnCreate)
}

// The reserve: with every network link slot taken, the operator's shell
// socket still answers, and the router still opens a link of its own
// (the shell's `span`, as configured targets).
func TestTheShellSocketAndOwnLinksGetInWhenTheNetworkSlotsAreFull(t *testing.T) {
	r := newRouter(t, "r", withMaxLinks(1))
	dialLeaf(t, r.tcpURL(), leafConfig{Label: "l1"}).waitAcked()
	refusedAtOnce(t, dialRawFrom(t, r, "127.0.0.2", true), "a TCP connection beyond limits.max_links")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sh, err := endpoint.DialShell(ctx, "unix", r.socket, "operator")
	if err != nil {
		t.Fatalf("the shell socket refused the operator with the network slots full: %v", err)
	}
	out, err := sh.Shell(ctx, "tree")
	sh.Close()
	if err != nil || !strings.Contains(out, "(r)") {
		t.Fatalf("tree over the shell socket: %q, %v", out, err)
	}

	other := newRouter(t, "other")
	connect(t, r, other)
}

// A connection that does not send its LNK_CONN within
// limits.conn_timeout is closed, and no longer holds a pending slot.
func TestALinkWithoutLNKCONNIsClosedAfterTheTimeout(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) {
		l.ConnTimeout = time.Second
		l.MaxPendingLinks = 1
	}))
	silent := dialRaw(t, r.tcpURL(), true)
	silent.Expect("the router's LNK_CONN", isConnCreate)
	refusedAtOnce(t, dialRaw(t, r.tcpURL(), true), "a second pending connection from the same source")
	if err := silent.WaitEnd(); !closedByRouter(err) {
		t.Errorf("the silent connection ended with %v, want EOF", err)
	}
	if n := limitHits(t, r, "conn_timeout"); n != 1 {
		t.Errorf("conn_timeout counted %v, want 1", n)
	}
	waitSample(t, r.Metrics().Registry(), "dmsgd_link_downs_total", map[string]string{"reason": "conn_timeout"},
		"the link's down counted as conn_timeout", equal(1))
	// Its pending slot is free; a link whose LNK_CONN arrives in time
	// stays up past the timeout.
	eventually(t, "the router forgets the silent link", func() error { return noLinks(r) })
	l := dialLeaf(t, r.tcpURL(), leafConfig{Label: "prompt"})
	l.waitAcked()
	time.Sleep(2 * time.Second) // twice the timeout: an observation window
	if l.ConnState().Closed {
		t.Fatal("a link whose LNK_CONN arrived in time was closed")
	}
	if _, err := r.LinkTo("prompt"); err != nil {
		t.Fatal(err)
	}
}

// Links that have not sent their LNK_CONN cannot crowd out the others:
// beyond limits.max_pending_links a connection from the source holding
// the most pending links is refused, and one is accepted again as soon as
// a pending link sends its LNK_CONN.
func TestPendingLinksCannotCrowdOutEstablishedOnes(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxPendingLinks = 2 }))
	a := dialRaw(t, r.tcpURL(), true)
	b := dialRaw(t, r.tcpURL(), true)
	a.Expect("the router's LNK_CONN on a", isConnCreate)
	b.Expect("the router's LNK_CONN on b", isConnCreate)
	refusedAtOnce(t, dialRaw(t, r.tcpURL(), true), "a third pending connection from the same source")
	a.send(connMsg(libdmsgConn(), false, 0x1000))
	a.Expect("the acknowledgement of a's LNK_CONN", isCmd(dmsg.LnkError, dmsg.FlagCreate|dmsg.FlagReply|dmsg.FlagRevTrans))
	c := dialRaw(t, r.tcpURL(), true)
	c.Expect("the router's LNK_CONN on c", isConnCreate)
}

// Nor can a flood of them from a few sources keep new sources out: with
// the pending slots full, a connection from a source holding fewer than
// the largest holder takes the slot of that holder's oldest pending link,
// which is closed and counted, while the flood's own next connection is
// refused.
func TestAFloodOfPendingLinksCannotKeepANewSourceOut(t *testing.T) {
	r := newRouter(t, "r", withLimits(func(l *config.Limits) { l.MaxPendingLinks = 2 }))
	oldest := dialRawFrom(t, r, "127.0.0.2", true)
	oldest.Expect("the router's LNK_CONN on the flood's first link", isConnCreate)
	newer := dialRawFrom(t, r, "127.0.0.2", true)
	newer.Expect("the router's LNK_CONN on the flood's second link", isConnCreate)
	refusedAtOnce(t, dialRawFrom(t, r, "127.0.0.2", true), "the flood's third pending connection")

	fresh := dialLeaf(t, r.tcpURL(), leafConfig{Label: "fresh"}) // from 127.0.0.1
	fresh.waitAcked()
	if err := oldest.WaitEnd(); !closedByRouter(err) {
		t.Errorf("the flood's oldest pending link ended with %v, want EOF from the router", err)
	}
	if n := limitHits(t, r, "max_pending_links"); n != 2 {
		t.Errorf("max_pending_links counted %v, want 2: one refused, one displaced", n)
	}
	waitSample(t, r.Metrics().Registry(), "dmsgd_link_downs_total", map[string]string{"reason": "displaced"},
		"the displaced link's down counted as displaced", equal(1))
	if fresh.ConnState().Closed {
		t.Fatal("the new source's link was closed")
	}
	newer.send(connMsg(libdmsgConn(), false, 0x1000))
	newer.Expect("the acknowledgement of the flood's second LNK_CONN", isCmd(dmsg.LnkError, dmsg.FlagCreate|dmsg.FlagReply|dmsg.FlagRevTrans))
}

// A TLS connection that does not complete its handshake within
// limits.handshake_timeout is dropped and counted.
func TestATLSHandshakeThatDoesNotFinishIsDropped(t *testing.T) {
	k := newNodeKey(t, "r")
	r := newRouter(t, "r", withTLS(k, nil), withLimits(func(l *config.Limits) { l.HandshakeTimeout = 300 * time.Millisecond }))
	nc, err := net.Dial("tcp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(waitTimeout))
	start := time.Now()
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("the router did not close the silent TLS connection: %v", err)
	}
	t.Logf("dropped after %v", time.Since(start).Round(time.Millisecond))
	eventually(t, "the timeout is counted", func() error {
		if n := limitHits(t, r, "handshake_timeout"); n != 1 {
			return fmt.Errorf("handshake_timeout counted %v", n)
		}
		return nil
	})
}

// A flood of refused connections writes a few warnings, not one per
// connection; every refusal is counted.
func TestRefusedConnectionsAreCountedNotLoggedEach(t *testing.T) {
	log, warns := countingLogger(t)
	r := &testRouter{Router: testnet.Start(t, "r", log, withLimits(func(l *config.Limits) { l.MaxLinksPerSource = 1 })), tb: t}
	r.cfg, r.port, r.socket, r.label = r.Cfg, r.Port, r.Socket, "r"
	dialRaw(t, r.tcpURL(), true).Expect("the router's LNK_CONN", isConnCreate)
	const n = 50
	for range n {
		refusedAtOnce(t, dialRaw(t, r.tcpURL(), true), "a connection beyond the source's limit")
	}
	if got := limitHits(t, r, "max_links_per_source"); got != n {
		t.Errorf("refusals counted %v, want %d", got, n)
	}
	if got := warns(); got > 2 {
		t.Errorf("%d warning lines for %d refusals, want at most 2 per kind and window", got, n)
	}
}

// countingLogger logs to the test like testLogger and counts the warnings
// written.
func countingLogger(tb testing.TB) (*zap.Logger, func() int) {
	core, logs := observer.New(zapcore.WarnLevel)
	log := zap.New(zapcore.NewTee(testLogger(tb).Core(), core))
	return log, func() int { return logs.FilterLevelExact(zapcore.WarnLevel).Len() }
}
