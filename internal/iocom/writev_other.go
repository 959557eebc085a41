//go:build !linux

package iocom

// Elsewhere a relaying reader's direct write uses a short write deadline
// instead of a non-blocking writev.
const canTryWrite = false

const maxIOVecs = 1024

func writevNow(uintptr, [][]byte) (int, error) { panic("writevNow: not supported") }
