// Package dmsgtest is the raw-frame peer of dmsgd's tests: a DMSG speaker
// built on the codec alone, with no state machine and no keepalive. It
// sends exactly the frames a test tells it to, including the ones no
// correct peer would (damaged frames, out-of-order flags, floods), and
// hands what it receives to the test, streamed (Run) or recorded for
// looking at (Record).
//
// Peers that behave are endpoints (internal/endpoint); this package is
// for the tests that must misbehave on the wire, or see it exactly.
package dmsgtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// DefaultWriteTimeout bounds one flush unless the peer says otherwise: a
// router that stops reading must not hang a test forever.
const DefaultWriteTimeout = 10 * time.Second

// flushAt is how much a peer buffers before writing on its own.
const flushAt = 64 << 10

// Peer is one raw DMSG speaker on its own stream. Its writes are
// buffered until Flush (Send flushes); every message gets the next
// sequence number of the link, as the codec keeps it. It is safe for use
// by several goroutines.
type Peer struct {
	nc net.Conn

	wmu   sync.Mutex
	buf   bytes.Buffer // encoded, not yet written
	enc   *dmsg.Encoder
	until time.Time // bounds every flush instead of DefaultWriteTimeout
}

// NewPeer makes a peer of an established stream.
func NewPeer(nc net.Conn) *Peer {
	p := &Peer{nc: nc}
	p.enc = dmsg.NewEncoder(&p.buf)
	return p
}

// Dial connects a peer to address on network ("tcp" or "unix").
func Dial(ctx context.Context, network, address string) (*Peer, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return NewPeer(nc), nil
}

// Conn returns the peer's stream.
func (p *Peer) Conn() net.Conn { return p.nc }

// Close closes the peer's stream.
func (p *Peer) Close() error { return p.nc.Close() }

// WriteUntil makes every flush wait up to t, instead of
// DefaultWriteTimeout from its start: a flooding peer pushes for as long as
// the router reads, up to the end of its attack.
func (p *Peer) WriteUntil(t time.Time) {
	p.wmu.Lock()
	p.until = t
	p.wmu.Unlock()
}

// Write encodes msgs as the peer's next messages into its buffer, which
// is written out once it is large or at the next Flush.
func (p *Peer) Write(msgs ...*dmsg.Msg) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for _, m := range msgs {
		if err := p.enc.Encode(m); err != nil {
			return err
		}
	}
	if p.buf.Len() >= flushAt {
		return p.flushLocked()
	}
	return nil
}

// Flush writes out everything buffered.
func (p *Peer) Flush() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.flushLocked()
}

func (p *Peer) flushLocked() error {
	if p.buf.Len() == 0 {
		return nil
	}
	deadline := p.until
	if deadline.IsZero() {
		deadline = time.Now().Add(DefaultWriteTimeout)
	}
	p.nc.SetWriteDeadline(deadline)
	n, err := p.nc.Write(p.buf.Bytes())
	p.buf.Next(n)
	return err
}

// Send writes msgs and flushes.
func (p *Peer) Send(msgs ...*dmsg.Msg) error {
	if err := p.Write(msgs...); err != nil {
		return err
	}
	return p.Flush()
}

// SendMangled encodes m as the peer's next message, lets mangle change
// its wire bytes (header, CRCs, aux) and sends them.
func (p *Peer) SendMangled(m *dmsg.Msg, mangle func(frame []byte)) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	start := p.buf.Len()
	if err := p.enc.Encode(m); err != nil {
		return err
	}
	mangle(p.buf.Bytes()[start:])
	return p.flushLocked()
}

// Frame returns m's wire form as the peer's next message, without
// sending it: a test cuts it, damages it or sends it later with WriteRaw.
// The sequence moves on as if it had been sent.
func (p *Peer) Frame(m *dmsg.Msg) ([]byte, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	start := p.buf.Len()
	if err := p.enc.Encode(m); err != nil {
		return nil, err
	}
	b := bytes.Clone(p.buf.Bytes()[start:])
	p.buf.Truncate(start)
	return b, nil
}

// WriteRaw flushes what is buffered and writes b as it is.
func (p *Peer) WriteRaw(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.flushLocked(); err != nil {
		return err
	}
	p.buf.Write(b)
	return p.flushLocked()
}

// Run decodes what the far end sends and hands each message to h until
// the stream ends, and returns why it ended. The message is recycled when
// h returns: h must not keep it. What h writes is flushed once the input
// is drained, so answers to a burst leave in few system calls.
func (p *Peer) Run(h func(m *dmsg.Msg)) error {
	dec := dmsg.NewDecoder(p.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			return err
		}
		h(m)
		m.Release()
		if dec.Buffered() == 0 {
			if err := p.Flush(); err != nil {
				return err
			}
		}
	}
}

// ClosedByFarEnd reports whether err, from reading or writing a peer's
// stream, means the far end closed it (rather than our own Close or a
// deadline of ours): EOF, or a reset when it closed with something of
// ours unread.
func ClosedByFarEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
