package main

import (
	"bufio"
	"errors"
	"net"
	"sync"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// The stream both endpoints write: single messages through a dmsgtest
// peer, which numbers and encodes them, and bursts of one message encoded
// once in advance, whose frames are written as they are.

type stream struct {
	mu  sync.Mutex
	p   *dmsgtest.Peer
	bw  *bufio.Writer // bursts, batched as a dmsgd link's writer batches
	pos uint8         // the stream's position in the current turn
	lag uint8         // burst frames the peer's sequence has not counted
}

func newStream(nc net.Conn) *stream {
	p := dmsgtest.NewPeer(nc)
	return &stream{p: p, bw: bufio.NewWriterSize(rawWriter{p}, 64<<10)}
}

// rawWriter writes bytes to a peer's stream as they are.
type rawWriter struct{ p *dmsgtest.Peer }

func (w rawWriter) Write(b []byte) (int, error) {
	if err := w.p.WriteRaw(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// catchUpLocked writes out the bursts and moves the peer's sequence past
// their frames, so that its next message follows them.
func (s *stream) catchUpLocked() error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	pad := dmsg.NewMsg(dmsg.LnkPad)
	for ; s.lag > 0; s.lag-- {
		if _, err := s.p.Frame(pad); err != nil {
			return err
		}
	}
	return nil
}

// send writes and flushes messages.
func (s *stream) send(msgs ...*dmsg.Msg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.catchUpLocked(); err != nil {
		return err
	}
	s.pos += uint8(len(msgs))
	return s.p.Send(msgs...)
}

// turn is one message encoded 256 times, as the stream's next 256
// messages: since sequence numbers wrap at 256, writing its frames from
// the stream's position on keeps the stream's sequence.
type turn struct {
	b    []byte
	size int // of one frame
}

// newTurn encodes m as a turn starting at the stream's position.
func (s *stream) newTurn(m *dmsg.Msg) (*turn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.catchUpLocked(); err != nil {
		return nil, err
	}
	t := &turn{size: m.EncodedSize()}
	for range 256 {
		b, err := s.p.Frame(m)
		if err != nil {
			return nil, err
		}
		t.b = append(t.b, b...)
	}
	s.pos = 0
	return t, nil
}

// writeFrames writes n frames of t at the stream's position, unflushed.
func (s *stream) writeFrames(t *turn, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n > 0 {
		k := min(n, 256-int(s.pos))
		off := int(s.pos) * t.size
		if _, err := s.bw.Write(t.b[off : off+k*t.size]); err != nil {
			return err
		}
		s.pos += uint8(k)
		s.lag += uint8(k)
		n -= k
	}
	return nil
}

func (s *stream) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bw.Flush()
}

// credit is what an endpoint may still send on its circuit; an ideal
// chain gives unlimited credit.
type credit struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	dead  bool
}

func newCredit(n int64) *credit {
	c := &credit{avail: n}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *credit) add(n int64) {
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *credit) kill() {
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	c.cond.Broadcast()
}

// take waits until at least one frame of size fits and takes room for as
// many as fit, up to n.
func (c *credit) take(n, size int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail < int64(size) && !c.dead {
		c.cond.Wait()
	}
	if c.dead {
		return 0, errors.New("link closed")
	}
	k := min(n, int(c.avail/int64(size)))
	c.avail -= int64(k * size)
	return k, nil
}

func (c *credit) short(size int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.avail < int64(size)
}
