package router_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/router"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// LNK_VOLCONF (docs/PROTOCOL.md section 6): a copy slot naming span:<host>
// makes the router keep an outbound link there while the LNK_CONN that
// sent it is open. The media is the LNK_CONN's, as in the reference
// implementation, whatever media id the VOLCONF itself carries.
func TestAVolconfSlotKeepsAnOutboundLinkWhileItsLNKCONNIsOpen(t *testing.T) {
	media := uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00")
	tests := []struct {
		name         string
		volconfMedia uuid.UUID
		end          func(l *leaf, slot func(copyID uint8))
	}{
		{"until the leaf disconnects", media, func(l *leaf, _ func(uint8)) { l.Close() }},
		{"until the leaf disconnects, with another media id in the VOLCONF",
			uuid.MustParse("00000000-0000-0000-0000-00000000beef"), func(l *leaf, _ func(uint8)) { l.Close() }},
		{"until the slot is cleared with copyid 0", media, func(_ *leaf, slot func(uint8)) { slot(0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newRouter(t, "a"), newRouter(t, "b")
			l := dialLeaf(t, a.tcpURL(), leafConfig{Label: "mount", Conn: &dmsg.Conn{
				MediaID: media, PeerType: dmsg.PeerHammer2, PeerMask: ^uint64(0), ProtoVersion: 1}})
			l.waitAcked()
			slot := func(copyID uint8) {
				l.sendVolConf(dmsg.VolConf{Index: 3, MediaID: tc.volconfMedia, Copy: dmsg.VolCopy{
					CopyID: copyID, Flags: dmsg.VolCopyEnabled, Path: "span:" + b.addr()}})
			}
			slot(1)
			waitLinked(t, a, b)

			tc.end(l, slot)
			eventually(t, "a's outbound link to b closes", func() error {
				if err := a.lacks("b"); err != nil {
					return err
				}
				if _, err := a.LinkTo("b"); err == nil {
					return fmt.Errorf("a still has a link to b")
				}
				return b.lacks("a")
			})
		})
	}
}

// Shutdown is bounded by its caller's context. A peer that never reads
// (here over a net.Pipe, which buffers nothing) keeps its link from
// draining, and nothing else would end the link for an hour: when the
// context ends, Shutdown closes the link at once and returns the
// context's error, and nothing the router started outlives it.
func TestShutdownReturnsItsContextsErrorWhenAPeerDoesNotDrain(t *testing.T) {
	before := goleak.IgnoreCurrent()
	cfg := testnet.Config(t, "r", withKeepaliveTimeout(time.Hour), withLimits(func(l *config.Limits) {
		l.SlowConsumerGrace = time.Hour
		l.ConnTimeout = time.Hour
	}))
	r := router.New(cfg, testLogger(t))
	pl := newPipeListener()
	if err := r.Listen([]net.Listener{pl}); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background()) }()
	peer := pl.dial()
	defer peer.Close()
	go dmsg.NewEncoder(peer).Encode(connMsg(libdmsgConn(), false, 0x1000)) // and never read
	eventually(t, "the peer's LNK_CONN is in", func() error {
		if ls := r.Tree().Links; len(ls) != 1 || ls[0].PeerType == "" {
			return fmt.Errorf("links: %+v", ls)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown returned %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Shutdown did not return within %v of its context ending", waitTimeout)
	}
	if ls := r.Tree().Links; len(ls) != 0 {
		t.Errorf("links open after Shutdown: %+v", ls)
	}
	if err := <-served; !errors.Is(err, router.ErrRouterClosed) {
		t.Errorf("Serve returned %v, want ErrRouterClosed", err)
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after Shutdown gave up draining: %v", err)
	}
}

// Shutdown DELETEs the router's LNK_CONN on every link
// (peers see a DELETE on the wire, not just the socket going away), closes
// every link and returns; TestMain checks nothing outlives it.
func TestShutdownDeletesOurLNKCONNOnEveryLinkAndReturns(t *testing.T) {
	before := goleak.IgnoreCurrent()
	r := newRouter(t, "r")
	other := newRouter(t, "other")
	connect(t, other, r)
	l := dialLeaf(t, r.tcpURL(), leafConfig{Label: "leaf"})
	l.waitSpans("r", 1)
	l.waitSpans("other", 1)

	if err := r.stop(); err != nil {
		t.Errorf("Shutdown or Serve returned %v, want nil and ErrRouterClosed", err)
	}
	waitChan(t, "the leaf's link to go down", l.Done())
	rcs := l.RouterConns()
	if len(rcs) != 1 || !rcs[0].Closed || rcs[0].Lost || rcs[0].Error != 0 {
		t.Errorf("router LNK_CONNs seen by the leaf = %+v, want one, closed by a DELETE without error", rcs)
	}
	if got := l.labels(); len(got) != 0 {
		t.Errorf("spans still open on the leaf when its link went down: %v", got)
	}
	eventually(t, "other forgets r", func() error {
		if err := other.lacks("r"); err != nil {
			return err
		}
		return noLinks(other)
	})

	other.stop()
	l.Close()
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after both routers shut down: %v", err)
	}
}

// A reload applies span.max_relays at once and refuses a changed listen
// address, naming it, leaving the running configuration as it was.
func TestReloadAppliesMaxRelaysAndRefusesAChangedListen(t *testing.T) {
	r := newRouter(t, "r")
	watcher := dialLeaf(t, r.tcpURL(), leafConfig{Label: "watcher"})
	for _, o := range []string{"o1", "o2"} { // two paths to one node
		dialLeaf(t, r.tcpURL(), leafConfig{Label: o}).advertise(hammer2Span("pfs", "h2", 0, 1))
	}
	watcher.waitSpans("pfs", 2)

	newer := *r.Config()
	newer.Span.MaxRelays = 1
	changes, err := r.Reload(&newer)
	if err != nil {
		t.Fatalf("reload of span.max_relays: %v", err)
	}
	if !slices.ContainsFunc(changes, func(c string) bool { return strings.HasPrefix(c, "span.max_relays") }) {
		t.Errorf("reload changes = %q, want span.max_relays named", changes)
	}
	if got := r.Config().Span.MaxRelays; got != 1 {
		t.Errorf("running span.max_relays = %d, want 1", got)
	}
	watcher.waitSpans("pfs", 1)

	running := r.Config()
	moved := *running
	moved.Listen = []string{"tcp://127.0.0.1:1"}
	if _, err := r.Reload(&moved); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("reload of listen = %v, want an error naming listen", err)
	}
	if r.Config() != running {
		t.Error("a refused reload changed the running configuration")
	}
}
