package dmsg

import (
	"bytes"

	"github.com/google/uuid"
)

// LabelSize is the size of every label field on the wire.
const LabelSize = 128

// putUUID writes u (RFC 4122 byte order) as DragonFly's struct uuid: the
// first three fields little-endian (docs/PROTOCOL.md 1.5).
func putUUID(b []byte, u uuid.UUID) {
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	copy(b[8:16], u[8:16])
}

// getUUID reads a struct uuid into RFC 4122 byte order.
func getUUID(b []byte) uuid.UUID {
	var u uuid.UUID
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	copy(u[8:16], b[8:16])
	return u
}

// putLabel writes s NUL padded into b, truncated so that the last byte of
// the field is always NUL.
func putLabel(b []byte, s string) {
	n := copy(b[:len(b)-1], s)
	clear(b[n:])
}

// getLabel reads a NUL-padded label. The last byte of the field is taken as
// NUL whatever it holds, as a receiver must.
func getLabel(b []byte) string {
	b = b[:len(b)-1]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
