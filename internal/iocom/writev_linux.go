package iocom

import "golang.org/x/sys/unix"

// canTryWrite says this system can write a vector of buffers to a socket
// once, without waiting (tryWrite).
const canTryWrite = true

// maxIOVecs is the most buffers one writev takes (IOV_MAX).
const maxIOVecs = 1024

// writevNow is one writev(2) on fd, a non-blocking socket.
func writevNow(fd uintptr, vec [][]byte) (int, error) {
	return unix.Writev(int(fd), vec)
}
