package dmsg

import (
	"math/bits"
	"sync"
)

// A router relays circuit traffic it never looks into: decoding each such
// message into fresh memory and leaving it to the garbage collector was
// most of the relay's cost. Decoded messages therefore take their extended
// header and aux data from buffers pooled by size class, and whoever ends a
// message's life without handing it on (the link writer, for relayed
// messages) may Release it for reuse.

const (
	minClassShift = 6  // the smallest class holds 64 bytes
	numClasses    = 16 // up to 2 MiB: a 2 KiB header plus 1 MiB of aux
)

// pools[0] holds messages without a buffer; pools[c] those whose buffer is
// classSize(c) bytes.
var pools [numClasses + 1]sync.Pool

// classOf returns the smallest class whose buffers hold n bytes.
func classOf(n int) int {
	if n == 0 {
		return 0
	}
	return max(bits.Len(uint(n-1))-minClassShift+1, 1)
}

func classSize(c int) int { return 1 << (c - 1 + minClassShift) }

// newPooledMsg returns a reset message whose buffer holds n bytes.
func newPooledMsg(n int) *Msg {
	c := classOf(n)
	if v := pools[c].Get(); v != nil {
		return v.(*Msg)
	}
	m := &Msg{class: int8(c), pooled: true}
	if c > 0 {
		m.buf = make([]byte, classSize(c))
	}
	return m
}

// Release returns a decoded message to the pool its buffers came from. The
// caller must hold the only reference to m, its Ext and its Aux: after
// Release they belong to another message. Messages not made by a Decoder
// are left alone.
func (m *Msg) Release() {
	if !m.pooled {
		return
	}
	buf, c := m.buf, m.class
	*m = Msg{buf: buf, class: c, pooled: true}
	pools[c].Put(m)
}
