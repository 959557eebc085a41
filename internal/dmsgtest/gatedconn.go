package dmsgtest

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// GatedConn is a stream whose reads a test can hold, to play a peer that
// stops reading: while held, a reader waits before reading, and what the
// far end sends piles up in the kernel and then in the far end. Writes
// are untouched. Close releases a held reader, to find the stream closed.
type GatedConn struct {
	net.Conn

	mu     sync.Mutex
	gate   chan struct{} // not nil while reads are held; closed to release
	closed chan struct{}
	once   sync.Once
}

// NewGatedConn wraps nc, with reads flowing.
func NewGatedConn(nc net.Conn) *GatedConn {
	return &GatedConn{Conn: nc, closed: make(chan struct{})}
}

// Read waits while reads are held, then reads.
func (g *GatedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-g.closed:
			return 0, net.ErrClosed
		}
	}
	return g.Conn.Read(p)
}

// Hold makes reads wait until Release.
func (g *GatedConn) Hold() {
	g.mu.Lock()
	if g.gate == nil {
		g.gate = make(chan struct{})
	}
	g.mu.Unlock()
}

// Release lets reads go on.
func (g *GatedConn) Release() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

// Close closes the stream and releases a held reader.
func (g *GatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// SyscallConn gives the wrapped socket's raw connection, so that writes
// through a GatedConn take the same path as through the socket itself.
func (g *GatedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := g.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("dmsgtest: the wrapped stream has no raw connection")
}
