package iocom

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// outBuf is the write side's buffer: it gathers encoded messages and
// writes them to the socket in large pieces. Two things set it apart from
// a bufio.Writer:
//
//   - It survives a write that stops short (tryFlush): what the socket
//     did not take stays buffered for the next flush. That lets a
//     relaying reader try a write that never waits (writeNow) and leave
//     the rest to the writer goroutine instead of blocking on a peer that
//     does not read.
//   - Relayed frames are not copied into it: it borrows them where they
//     already are (their chunk) and hands them to the socket together
//     with its own bytes, in one writev.
type outBuf struct {
	nc  net.Conn
	rc  syscall.RawConn // for writes that never wait; nil: use a deadline
	buf []byte          // own bytes: headers, control messages

	// vec is what to write next, in order: pieces of buf and borrowed
	// bytes. ownTail says its last piece is buf's tail, so a Write can
	// grow it; held are the chunks the borrowed pieces live in.
	vec     [][]byte
	ownTail bool
	held    []*chunk
	lent    int         // borrowed bytes in vec
	scratch net.Buffers // a copy of vec for a write that may stop short

	// noDeadline marks a stream that a timed-out write breaks for good
	// (TLS: a record may have been cut): it is only ever written without
	// a deadline, by the writer goroutine.
	noDeadline bool

	// written counts the bytes the socket has taken, as it takes them:
	// the slow-consumer check (budget.go) measures a peer's progress with
	// it, also in the middle of a large batch.
	written atomic.Uint64
}

func newOutBuf(nc net.Conn) *outBuf {
	_, isTLS := nc.(*tls.Conn)
	o := &outBuf{nc: nc, buf: make([]byte, 0, writeBufferSize), noDeadline: isTLS}
	if sc, ok := nc.(syscall.Conn); ok && !isTLS && canTryWrite {
		o.rc, _ = sc.SyscallConn()
	}
	return o
}

// directMin is the size from which a write that does not fit is not
// copied into the buffer but handed to the socket with what is buffered,
// in one writev.
const directMin = 16 << 10

// lendMax bounds the borrowed bytes waiting for a flush.
const lendMax = 256 << 10

// Write buffers p. When p does not fit, the buffer is flushed first, or a
// large p goes to the socket with the buffered bytes, without being
// copied. Writes that fit never touch the socket (see writeNow).
func (o *outBuf) Write(p []byte) (int, error) {
	if len(o.buf)+len(p) > cap(o.buf) {
		if len(p) >= directMin && !o.noDeadline {
			return o.writeThrough(p)
		}
		if err := o.flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(o.buf) {
			return o.writeDirect(p)
		}
	}
	start := len(o.buf)
	o.buf = append(o.buf, p...)
	if o.ownTail {
		last := len(o.vec) - 1
		o.vec[last] = o.vec[last][:len(o.vec[last])+len(p)]
	} else {
		o.vec = append(o.vec, o.buf[start:len(o.buf):cap(o.buf)])
		o.ownTail = true
	}
	return len(p), nil
}

// lend queues p, which lives in ch, to be written after what is buffered,
// without copying it. The outBuf takes over the caller's reference to ch.
func (o *outBuf) lend(p []byte, ch *chunk) error {
	if o.lent+len(p) > lendMax {
		if err := o.flush(); err != nil {
			ch.unref()
			return err
		}
	}
	o.vec = append(o.vec, p)
	o.ownTail = false
	o.held = append(o.held, ch)
	o.lent += len(p)
	return nil
}

// writeThrough writes what is buffered and p in one system call. Only
// the writer goroutine writes this much (see writeNow), without a
// deadline, so a short write is an error that ends the link.
func (o *outBuf) writeThrough(p []byte) (int, error) {
	if len(o.vec) == 0 {
		return o.writeDirect(p)
	}
	bufs := append(net.Buffers(o.vec), p)
	n, err := bufs.WriteTo(o.nc)
	o.written.Add(uint64(n))
	o.reset()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeDirect writes p to the socket, bypassing the buffer.
func (o *outBuf) writeDirect(p []byte) (int, error) {
	n, err := o.nc.Write(p)
	o.written.Add(uint64(n))
	return n, err
}

// pending reports whether bytes wait to be written.
func (o *outBuf) pending() bool { return len(o.vec) > 0 }

// reset empties the buffer and lets the borrowed chunks go.
func (o *outBuf) reset() {
	clear(o.vec)
	o.vec, o.buf, o.ownTail, o.lent = o.vec[:0], o.buf[:0], false, 0
	for i, ch := range o.held {
		ch.unref()
		o.held[i] = nil
	}
	o.held = o.held[:0]
}

// errSlowPeer reports a timed-out flush; the unwritten bytes are kept.
var errSlowPeer = errors.New("socket full")

// flush writes what is buffered, waiting for the socket as long as it
// takes.
func (o *outBuf) flush() error {
	if len(o.vec) == 0 {
		return nil
	}
	bufs := net.Buffers(o.vec)
	n, err := bufs.WriteTo(o.nc)
	o.written.Add(uint64(n))
	o.reset()
	return err
}

// tryWaitMax bounds how long tryFlush waits for a stream that cannot be
// written without waiting at all (no non-blocking writev there).
const tryWaitMax = time.Millisecond

// tryFlush writes what the socket takes without waiting (on a stream
// without a non-blocking writev, for at most tryWaitMax), keeps what was
// not written and then returns errSlowPeer. A relaying reader writes this
// way (writeNow), so that a slow peer is the writer goroutine's business
// and never holds up the reader's own link.
func (o *outBuf) tryFlush() error {
	if len(o.vec) == 0 {
		return nil
	}
	var n int
	var err error
	if o.rc != nil {
		n, err = o.tryWrite()
	} else {
		o.nc.SetWriteDeadline(time.Now().Add(tryWaitMax))
		var n64 int64
		// WriteTo consumes the slices it is given; keepUnwritten needs
		// them as they were.
		o.scratch = append(o.scratch[:0], o.vec...)
		bufs := o.scratch
		n64, err = bufs.WriteTo(o.nc)
		clear(o.scratch)
		n = int(n64)
		o.nc.SetWriteDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errSlowPeer
		}
	}
	o.written.Add(uint64(n))
	o.keepUnwritten(n)
	return err
}

// keepUnwritten keeps what is left after the first n bytes were written,
// as own bytes: the borrowed chunks go back, whatever happens next.
func (o *outBuf) keepUnwritten(n int) {
	var rest []byte
	for _, p := range o.vec {
		if n >= len(p) {
			n -= len(p)
			continue
		}
		rest = append(rest, p[n:]...)
		n = 0
	}
	o.reset()
	if len(rest) > 0 {
		o.buf = append(o.buf, rest...)
		o.vec = append(o.vec, o.buf[:len(o.buf):cap(o.buf)])
		o.ownTail = true
	}
}

// tryWrite writes what the socket takes at once, with one non-blocking
// writev: no deadline to arm and disarm on the way of a relayed request.
// It returns errSlowPeer if the socket did not take everything.
func (o *outBuf) tryWrite() (int, error) {
	vec := o.vec[:min(len(o.vec), maxIOVecs)]
	var n int
	var werr error
	err := o.rc.Write(func(fd uintptr) bool {
		n, werr = writevNow(fd, vec)
		return true // never wait for the socket: that is the writer's job
	})
	n = max(n, 0)
	switch {
	case err != nil:
		return n, err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return n, errSlowPeer
	case werr != nil:
		return n, &net.OpError{Op: "write", Net: o.nc.LocalAddr().Network(), Addr: o.nc.RemoteAddr(), Err: os.NewSyscallError("writev", werr)}
	}
	total := 0
	for _, p := range o.vec {
		total += len(p)
	}
	if n < total {
		return n, errSlowPeer
	}
	return n, nil
}
