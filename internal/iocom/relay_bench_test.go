package iocom_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// BenchmarkRelay measures what relaying costs a router's links alone: a
// Link reads b.N circuit messages from memory and its Forward hook relays
// them to a Link whose socket discards what it is given. No kernel, no
// endpoints: ns/op is the CPU one relayed message takes.
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{64, 4 << 10} {
		b.Run("aux="+sizeLabel(size), func(b *testing.B) {
			guard(b)
			m := msg(dmsg.DbgShell, 0, onCircuit(7), withAuxBytes(make([]byte, size)))
			frameSize := m.EncodedSize()
			// 256 frames: one turn of the sequence number, so the source
			// can repeat them for as long as it is asked to.
			var turn []byte
			for seq := range 256 {
				turn = append(turn, frame(b, m, uint8(seq))...)
			}
			sink := &discardConn{want: int64(b.N * frameSize), done: make(chan struct{})}
			out := iocom.NewLink(sink, benchCfg("out", nil))
			acct := &byteCount{}
			src := &memConn{turn: turn, left: b.N * frameSize}
			in := iocom.NewLink(src, iocom.Config{ID: "in", KeepaliveInterval: -1, KeepaliveTimeout: -1,
				Forward: func(_ *iocom.Link, f *iocom.Frame) bool {
					f.RelayTo(out, 70, true, acct)
					return true
				}})
			b.SetBytes(int64(frameSize))
			b.ReportAllocs()
			b.ResetTimer()
			out.Start()
			in.Start()
			select {
			case <-sink.done:
			case <-time.After(time.Minute):
				b.Fatalf("%d of %d bytes relayed", sink.n.Load(), sink.want)
			}
			b.StopTimer()
			in.Close()
			out.Close()
			waitDone(b, in)
			waitDone(b, out)
		})
	}
}

func sizeLabel(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// memConn is a net.Conn that reads left bytes of turn, repeated, then
// waits for Close.
type memConn struct {
	turn   []byte
	off    int
	left   int
	closed chan struct{}
	once   sync.Once
}

func (c *memConn) init() {
	c.once.Do(func() { c.closed = make(chan struct{}) })
}

func (c *memConn) Read(p []byte) (int, error) {
	c.init()
	if c.left == 0 {
		<-c.closed
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.left)], c.turn[c.off:])
	c.off = (c.off + n) % len(c.turn)
	c.left -= n
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *memConn) Close() error {
	c.init()
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// discardConn is a net.Conn that takes every write and closes done once
// want bytes have been written; reads wait for Close.
type discardConn struct {
	memConn
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *discardConn) Read(p []byte) (int, error) {
	c.init()
	<-c.closed
	return 0, io.EOF
}

func (c *discardConn) Write(p []byte) (int, error) {
	if c.n.Add(int64(len(p))) >= c.want && c.n.Load()-int64(len(p)) < c.want {
		close(c.done)
	}
	return len(p), nil
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }
