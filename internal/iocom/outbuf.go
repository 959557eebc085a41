package iocom

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
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
	buf []byte

	// noDeadline marks a stream that a timed-out write breaks for good
	// (TLS: a record may have been cut): it is only ever written without
	// a deadline, by the writer goroutine.
	noDeadline bool
}

func newOutBuf(nc net.Conn) *outBuf {
	_, isTLS := nc.(*tls.Conn)
	return &outBuf{nc: nc, buf: make([]byte, 0, writeBufferSize), noDeadline: isTLS}
}

// Write buffers p. A full buffer is flushed first; a large p goes straight
// to the socket once the buffer is empty, without being copied.
func (o *outBuf) Write(p []byte) (int, error) {
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

// pending reports whether bytes wait to be written.
func (o *outBuf) pending() bool { return len(o.buf) > 0 }

// errSlowPeer reports a timed-out flush; the unwritten bytes are kept.
var errSlowPeer = errors.New("socket full")

// flush writes the buffered bytes; with a non-zero deadline it gives up at
// the deadline, keeps what was not written and returns errSlowPeer.
func (o *outBuf) flush(deadline time.Time) error {
	if len(o.buf) == 0 {
		return nil
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
