package iocom

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// outBuf is the write side's buffer: it gathers encoded messages and
// writes them to the socket in large pieces. Unlike a bufio.Writer it
// survives a write that times out: what the socket did not take stays
// buffered for the next flush. That lets a relaying reader try a small
// write with a short deadline (writeNow) and leave the rest to the writer
// goroutine instead of blocking on a peer that does not read.
type outBuf struct {
	nc  net.Conn
	rc  syscall.RawConn // for writes that never wait; nil: use a deadline
	buf []byte

	// noDeadline marks a stream that a timed-out write breaks for good
	// (TLS: a record may have been cut): it is only ever written without
	// a deadline, by the writer goroutine.
	noDeadline bool
}

func newOutBuf(nc net.Conn) *outBuf {
	_, isTLS := nc.(*tls.Conn)
	o := &outBuf{nc: nc, buf: make([]byte, 0, writeBufferSize), noDeadline: isTLS}
	if sc, ok := nc.(syscall.Conn); ok && !isTLS {
		o.rc, _ = sc.SyscallConn()
	}
	return o
}

// directMin is the size from which a write that does not fit is not
// copied into the buffer but handed to the socket with what is buffered,
// in one writev.
const directMin = 16 << 10

// Write buffers p. When p does not fit, the buffer is flushed first, or a
// large p goes to the socket with the buffered bytes, without being
// copied. Writes that fit never touch the socket (see writeNow).
func (o *outBuf) Write(p []byte) (int, error) {
	if len(o.buf)+len(p) > cap(o.buf) && len(p) >= directMin && !o.noDeadline {
		return o.writeThrough(p)
	}
	if len(o.buf)+len(p) > cap(o.buf) {
		if err := o.flush(time.Time{}); err != nil {
			return 0, err
		}
		if len(p) >= cap(o.buf) {
			return o.nc.Write(p)
		}
	}
	o.buf = append(o.buf, p...)
	return len(p), nil
}

// writeThrough writes the buffered bytes and p in one system call. Only
// the writer goroutine writes this much (see writeNow), without a
// deadline, so a short write is an error that ends the link.
func (o *outBuf) writeThrough(p []byte) (int, error) {
	if len(o.buf) == 0 {
		return o.nc.Write(p)
	}
	bufs := net.Buffers{o.buf, p}
	_, err := bufs.WriteTo(o.nc)
	o.buf = o.buf[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// pending reports whether bytes wait to be written.
func (o *outBuf) pending() bool { return len(o.buf) > 0 }

// errSlowPeer reports a timed-out flush; the unwritten bytes are kept.
var errSlowPeer = errors.New("socket full")

// flush writes the buffered bytes; with a non-zero deadline it gives up at
// the deadline (or, on a socket, as soon as the socket takes no more),
// keeps what was not written and returns errSlowPeer.
func (o *outBuf) flush(deadline time.Time) error {
	if len(o.buf) == 0 {
		return nil
	}
	if !deadline.IsZero() && o.rc != nil {
		return o.tryWrite()
	}
	if !deadline.IsZero() {
		o.nc.SetWriteDeadline(deadline)
		defer o.nc.SetWriteDeadline(time.Time{})
	}
	n, err := o.nc.Write(o.buf)
	o.buf = o.buf[:copy(o.buf, o.buf[n:])]
	if err != nil && !deadline.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) {
		return errSlowPeer
	}
	return err
}

// tryWrite writes what the socket takes at once, with one non-blocking
// write: no deadline to arm and disarm on the way of a relayed request.
func (o *outBuf) tryWrite() error {
	var n int
	var werr error
	err := o.rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), o.buf)
		return true // never wait for the socket: that is the writer's job
	})
	n = max(n, 0)
	o.buf = o.buf[:copy(o.buf, o.buf[n:])]
	switch {
	case err != nil:
		return err
	case werr == syscall.EAGAIN || werr == syscall.EINTR || (werr == nil && len(o.buf) > 0):
		return errSlowPeer
	case werr != nil:
		return &net.OpError{Op: "write", Net: o.nc.LocalAddr().Network(), Addr: o.nc.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	}
	return nil
}
