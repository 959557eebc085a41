package dmsgtest_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// readOne starts a one-byte read on g and returns where its result lands.
func readOne(g *dmsgtest.GatedConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

func TestAGatedConnHoldsReadsUntilReleased(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	g := dmsgtest.NewGatedConn(a)
	defer g.Close()
	g.Hold()
	got := readOne(g)
	go b.Write([]byte{1})
	select {
	case err := <-got:
		t.Fatalf("a held read returned (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.Release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("released read: %v", err)
		}
	case <-time.After(dmsgtest.Timeout):
		t.Fatal("a released read did not return")
	}
}

func TestClosingAGatedConnLetsAHeldReaderGo(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	g := dmsgtest.NewGatedConn(a)
	g.Hold()
	got := readOne(g)
	g.Close()
	select {
	case err := <-got:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("held read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(dmsgtest.Timeout):
		t.Fatal("a held read did not return after Close")
	}
}
