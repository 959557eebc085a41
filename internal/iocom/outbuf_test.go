package iocom

import (
	"bytes"
	"errors"
	"io"
	"net"
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
	if err := o.flush(time.Now().Add(10 * time.Millisecond)); !errors.Is(err, errSlowPeer) {
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
	if err := o.flush(time.Time{}); err != nil {
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
