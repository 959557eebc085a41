package router_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
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

// pipeListener hands the router the server ends of net.Pipes: a peer
// whose writes and reads the kernel buffers nothing of.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// dial returns the peer's end of a new connection.
func (l *pipeListener) dial() net.Conn {
	peer, ours := net.Pipe()
	select {
	case l.conns <- ours:
	case <-l.closed:
		ours.Close()
	}
	return peer
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.conns:
		return nc, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10} }

// A listener that gives up fails Serve with its error, naming it, and
// Serve stops accepting everywhere (here on the shell socket) rather than
// leave the daemon half deaf; the links up stay until Shutdown or Close.
func TestServeStopsWithTheErrorOfAListenerThatGaveUp(t *testing.T) {
	cfg := testnet.Config(t, "deaf")
	r := router.New(cfg, testLogger(t))
	bl := &brokenListener{broken: make(chan struct{}), closed: make(chan struct{})}
	if err := r.Listen([]net.Listener{bl}); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background()) }()

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
	if nc, err := net.Dial("unix", cfg.Shell.Socket); err == nil {
		nc.Close()
		t.Error("the shell socket still accepts after Serve returned")
	}
}

// Once Shutdown begins, Serve returns ErrRouterClosed, as net/http's
// Serve returns ErrServerClosed; Shutdown returns nil when every link
// drained in time.
func TestServeReturnsErrRouterClosedOnceShutdownBegins(t *testing.T) {
	r := router.New(testnet.Config(t, "calm"), testLogger(t))
	if err := r.Listen(nil); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of an idle router returned %v", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, router.ErrRouterClosed) {
			t.Errorf("Serve returned %v after Shutdown, want ErrRouterClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Serve did not return within %v of Shutdown", waitTimeout)
	}
	if err := r.Serve(context.Background()); !errors.Is(err, router.ErrRouterClosed) {
		t.Errorf("Serve after Shutdown returned %v, want ErrRouterClosed", err)
	}
	if err := r.Shutdown(ctx); err != nil {
		t.Errorf("a second Shutdown returned %v", err)
	}
}

// Ending Serve's context stops the router as Close does, before Serve
// returns ctx's error.
func TestServeClosesTheRouterWhenItsContextEnds(t *testing.T) {
	cfg := testnet.Config(t, "brief")
	r := router.New(cfg, testLogger(t))
	if err := r.Listen(nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()
	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v after its context ended, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Serve did not return within %v of its context ending", waitTimeout)
	}
	if ok, why := r.Ready(); ok || !strings.Contains(why, "shutting down") {
		t.Errorf("readiness after Serve returned = %v %q, want shutting down", ok, why)
	}
}
