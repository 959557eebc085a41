package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The ideal relay.

func runRelay(listen, next string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s\n", ln.Addr())
	in, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	out, err := net.Dial("tcp", next)
	if err != nil {
		return err
	}
	go func() { relayFrames(in, out); in.Close() }()
	go func() { io.Copy(io.Discard, os.Stdin); in.Close(); out.Close() }()
	relayFrames(out, in)
	out.Close()
	return nil
}

// relayFrames copies whole frames from src to dst: each frame's length is
// (cmd & 0xff) * 64 + align64(aux_bytes), read from its base header. It
// flushes only when no more input is buffered, as a dmsgd link's writer
// flushes only when its queue is empty.
func relayFrames(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	bw := bufio.NewWriterSize(dst, 64<<10)
	for {
		hdr, err := br.Peek(dmsg.BaseHeaderSize)
		if err != nil {
			return err
		}
		cmd := binary.LittleEndian.Uint32(hdr[0x20:])
		aux := binary.LittleEndian.Uint32(hdr[0x28:])
		n := int(cmd&0xff)*dmsg.Align + dmsg.AlignUp(int(aux))
		for n > 0 {
			if br.Buffered() == 0 {
				if _, err := br.Peek(1); err != nil {
					return err
				}
			}
			k := min(n, br.Buffered())
			chunk, _ := br.Peek(k)
			if _, err := bw.Write(chunk); err != nil {
				return err
			}
			br.Discard(k)
			n -= k
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}
