package iocom

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestAFlushThatTimesOutKeepsTheRestForTheNextFlush(t *testing.T) {
	a, b := net.Pipe() // no kernel buffer: a write waits for the reader
	defer a.Close()
	defer b.Close()
	o := newOutBuf(a)
	want := bytes.Repeat([]byte("0123456789abcdef"), 256)
	if _, err := o.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := o.tryFlush(); !errors.Is(err, errSlowPeer) {
		t.Fatalf("flush to a peer that does not read: %v, want errSlowPeer", err)
	}
	if !o.pending() {
		t.Fatal("the unwritten bytes were dropped")
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(want))
		io.ReadFull(b, buf)
		got <- buf
	}()
	if err := o.flush(); err != nil {
		t.Fatal(err)
	}
	if o.pending() || !bytes.Equal(<-got, want) {
		t.Fatal("the second flush did not deliver every byte in order")
	}
}

func TestALargeWriteBypassesTheBufferOnceItIsEmpty(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	o := newOutBuf(a)
	big := bytes.Repeat([]byte{7}, 3*writeBufferSize)
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 10+len(big))
		io.ReadFull(b, buf)
		got <- buf
	}()
	if _, err := o.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Write(big); err != nil {
		t.Fatal(err)
	}
	if o.pending() {
		t.Fatal("a large write was buffered")
	}
	if b := <-got; string(b[:10]) != "0123456789" || !bytes.Equal(b[10:], big) {
		t.Fatal("bytes out of order")
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// lentChunk returns a chunk holding p, as a relaying reader fills one.
func lentChunk(p []byte) *chunk {
	ch := newChunk()
	ch.buf = append(ch.buf, p...)
	return ch
}

func TestLentBytesGoOutBetweenOwnBytesInOrder(t *testing.T) {
	for _, try := range []bool{false, true} {
		a, b := tcpPair(t)
		o := newOutBuf(a)
		lent := lentChunk(bytes.Repeat([]byte("L"), 5000))
		o.Write([]byte("own1-"))
		if err := o.lend(lent.buf, lent); err != nil {
			t.Fatal(err)
		}
		o.Write([]byte("-own2-"))
		o.Write([]byte("own3"))
		flush := o.flush
		if try {
			flush = o.tryFlush
		}
		if err := flush(); err != nil {
			t.Fatalf("flush (try %v): %v", try, err)
		}
		want := "own1-" + strings.Repeat("L", 5000) + "-own2-own3"
		got := make([]byte, len(want))
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(b, got); err != nil || string(got) != want {
			t.Fatalf("received %q..., %v", got[:min(len(got), 20)], err)
		}
		if n := lent.refs.Load(); n != 0 || o.pending() {
			t.Fatalf("after the flush the chunk has %d references, pending %v", n, o.pending())
		}
	}
}

// TestATryWriteToAFullSocketKeepsTheRestAsItsOwn: a relaying reader's
// write that the socket does not take in full leaves the rest buffered,
// copied, so the chunks it borrowed go back at once.
func TestATryWriteToAFullSocketKeepsTheRestAsItsOwn(t *testing.T) {
	a, b := tcpPair(t)
	o := newOutBuf(a)
	var chunks []*chunk
	var want []byte
	for i := 0; ; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 48<<10)
		ch := lentChunk(p)
		chunks = append(chunks, ch)
		o.Write([]byte{'<', byte(i)})
		if err := o.lend(ch.buf, ch); err != nil {
			t.Fatal(err)
		}
		want = append(append(want, '<', byte(i)), p...)
		err := o.tryFlush()
		if errors.Is(err, errSlowPeer) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 10000 {
			t.Fatal("the socket never filled up")
		}
	}
	if !o.pending() {
		t.Fatal("a partial write left nothing buffered")
	}
	for i, ch := range chunks {
		if n := ch.refs.Load(); n != 0 {
			t.Fatalf("chunk %d still has %d references after the partial write", i, n)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(want))
		b.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.ReadFull(b, buf)
		got <- buf
	}()
	if err := o.flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("bytes lost or out of order across the partial write")
	}
}
