package shell

import "bytes"

// chunkWriter gathers output into messages of at most chunkSize bytes,
// cut after a newline when one is near, and hands each to out as soon as
// it is full: a large rendering costs one buffer and one queued message
// at a time, not a copy of the whole document, nor a message per line.
type chunkWriter struct {
	out func(text string)
	buf []byte
}

func newChunkWriter(out func(string)) *chunkWriter {
	return &chunkWriter{out: out, buf: make([]byte, 0, chunkSize+chunkSize/8)}
}

// Write appends p, sending every full chunk. It never fails.
func (w *chunkWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	w.sendFull()
	return len(p), nil
}

// WriteString is Write for a string.
func (w *chunkWriter) WriteString(s string) (int, error) {
	w.buf = append(w.buf, s...)
	w.sendFull()
	return len(s), nil
}

// sendFull sends chunks while more than a whole one is buffered: with
// more, the chunk can be cut after a newline.
func (w *chunkWriter) sendFull() {
	for len(w.buf) > chunkSize {
		w.send(cutAt(w.buf))
	}
}

// Flush sends whatever is buffered.
func (w *chunkWriter) Flush() {
	for len(w.buf) > 0 {
		w.send(cutAt(w.buf))
	}
}

// send hands out the first n bytes and keeps the rest.
func (w *chunkWriter) send(n int) {
	w.out(string(w.buf[:n]))
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
}

// cutAt is where the next chunk of b ends: all of b when it fits, else
// after the last newline of the first chunkSize bytes, or at chunkSize
// when a line is longer than that.
func cutAt(b []byte) int {
	n := min(len(b), chunkSize)
	if n < len(b) {
		if i := bytes.LastIndexByte(b[:n], '\n'); i > 0 {
			n = i + 1
		}
	}
	return n
}
