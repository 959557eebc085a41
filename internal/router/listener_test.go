package router_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/router"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// brokenListener accepts nothing: once broken is closed, Accept fails
// with an error that is neither temporary nor net.ErrClosed, as a
// listener whose socket the kernel took away does.
type brokenListener struct {
	broken chan struct{}
	closed chan struct{}
}

var errListenerGone = errors.New("listener socket gone")

func (l *brokenListener) Accept() (net.Conn, error) {
	select {
	case <-l.broken:
		return nil, errListenerGone
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *brokenListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *brokenListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }

func TestServeStopsWithTheErrorOfAListenerThatGaveUp(t *testing.T) {
	r := router.New(testnet.Config(t, "deaf"), testLogger(t))
	bl := &brokenListener{broken: make(chan struct{}), closed: make(chan struct{})}
	if err := r.Listen([]net.Listener{bl}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()

	if ok, why := r.Health(); !ok {
		t.Fatalf("healthy router reports %q", why)
	}
	close(bl.broken)
	var err error
	select {
	case err = <-served:
	case <-time.After(waitTimeout):
		t.Fatalf("Serve did not return within %v of its listener failing", waitTimeout)
	}
	if !errors.Is(err, errListenerGone) || !strings.Contains(err.Error(), "tcp://127.0.0.1:9") {
		t.Errorf("Serve returned %v, want the listener's error naming it", err)
	}
	if ok, why := r.Health(); ok || !strings.Contains(why, "stopped") {
		t.Errorf("health after a failed listener = %v %q", ok, why)
	}
}

func TestServeReturnsNilWhenItsContextEnds(t *testing.T) {
	r := testnet.Start(t, "calm", testLogger(t))
	if err := r.Stop(); err != nil {
		t.Errorf("Serve returned %v after its context ended", err)
	}
}
