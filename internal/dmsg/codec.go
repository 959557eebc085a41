package dmsg

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
)

// Framing errors. Each is fatal for the link that produced it; Decoder
// errors wrap one of these with the details.
var (
	ErrBadMagic   = errors.New("bad magic")
	ErrHeaderSize = errors.New("extended header size out of range")
	ErrAuxSize    = errors.New("aux data too large")
	ErrHeaderCRC  = errors.New("header CRC mismatch")
	ErrAuxCRC     = errors.New("aux CRC mismatch")
	ErrSequence   = errors.New("message sequence mismatch")
	ErrAuxDescr   = errors.New("out-of-band aux data not supported")
)

// checkSizes validates the sizes of a message about to be encoded.
func checkSizes(m *Msg) (int, error) {
	units := m.Cmd & SizeMask
	if units == 0 || units > MaxHeaderUnits {
		return 0, fmt.Errorf("encode %s: %w: %d units", CmdString(m.Cmd), ErrHeaderSize, units)
	}
	if len(m.Aux) > MaxAuxSize {
		return 0, fmt.Errorf("encode %s: %w: %d bytes", CmdString(m.Cmd), ErrAuxSize, len(m.Aux))
	}
	return int(units) * Align, nil
}

// putHeader fills hdr (the extended header size) with m's extended header
// and base header, using salt, and seals hdr_crc. It returns the aux CRC
// written.
func putHeader(hdr []byte, m *Msg, salt uint32) {
	n := len(hdr)
	if len(m.Ext) > BaseHeaderSize {
		c := copy(hdr[BaseHeaderSize:], m.Ext[BaseHeaderSize:min(len(m.Ext), n)])
		clear(hdr[BaseHeaderSize+c:])
	} else {
		clear(hdr[BaseHeaderSize:])
	}
	h := m.Header
	h.Salt = salt
	h.HdrCRC = 0
	if !m.auxSealed {
		h.AuxBytes = uint32(len(m.Aux))
		h.AuxCRC = auxCRC(m.Aux)
	}
	h.put(hdr)
	le.PutUint32(hdr[offHdrCRC:], CRC(hdr))
}

// AppendMsg appends the wire form of m to dst using m.Salt as the salt, and
// returns the extended slice. It seals both CRCs (the aux CRC only if SetAux
// or the Decoder has not already). It is the encoding without a link's
// sequence: use an Encoder to send.
func AppendMsg(dst []byte, m *Msg) ([]byte, error) {
	n, err := checkSizes(m)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, zeroPad[:n]...)
	putHeader(dst[start:], m, m.Salt)
	dst = append(dst, m.Aux...)
	return append(dst, zeroPad[:AlignUp(len(m.Aux))-len(m.Aux)]...), nil
}

// Encoder writes messages to one direction of a link, numbering them with
// the salt sequence byte. It is not safe for concurrent use.
type Encoder struct {
	w   io.Writer
	seq uint8
	rnd uint32
	hdr [MaxHeaderSize]byte
}

// NewEncoder returns an Encoder writing to w. Wrap sockets in a
// bufio.Writer: Encode issues up to three writes per message.
func NewEncoder(w io.Writer) *Encoder {
	return &Encoder{w: w, rnd: rand.Uint32() | 1}
}

// saltHigh returns fresh random upper salt bits (xorshift32: cheap, and the
// bits need only vary, not resist prediction).
func (e *Encoder) saltHigh() uint32 {
	x := e.rnd
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	e.rnd = x
	return x &^ 0xFF
}

// Encode writes m with the next sequence number. m is not modified.
func (e *Encoder) Encode(m *Msg) error {
	n, err := checkSizes(m)
	if err != nil {
		return err
	}
	hdr := e.hdr[:n]
	putHeader(hdr, m, e.saltHigh()|uint32(e.seq))
	e.seq++
	if _, err := e.w.Write(hdr); err != nil {
		return err
	}
	if len(m.Aux) == 0 {
		return nil
	}
	if _, err := e.w.Write(m.Aux); err != nil {
		return err
	}
	if pad := AlignUp(len(m.Aux)) - len(m.Aux); pad > 0 {
		_, err = e.w.Write(zeroPad[:pad])
	}
	return err
}

// SealFrames readies b, whole little-endian messages back to back in wire
// form as Decoder.Frame returned them (and SetFrameCircuit changed them),
// to be written next: each frame gets the next sequence number in its
// salt and a fresh hdr_crc, in place; everything else stays as it is. A
// base header's hdr_crc is patched from the one it has, which must be
// right (crcpatch.go); longer headers are resealed whole. It returns how
// many frames b holds. If b does not hold whole frames, nothing is
// changed.
func (e *Encoder) SealFrames(b []byte) (int, error) {
	frames := 0
	for off := 0; off < len(b); frames++ {
		_, size := FrameSize(b[off:])
		if size == 0 || off+size > len(b) {
			return 0, fmt.Errorf("seal frames: %w: a frame is cut at byte %d", ErrHeaderSize, off)
		}
		off += size
	}
	for off := 0; off < len(b); {
		n, size := FrameSize(b[off:])
		e.seal(b[off : off+n])
		off += size
	}
	return frames, nil
}

// seal gives hdr, a whole little-endian extended header, the next
// sequence number in its salt, whose random upper bits it keeps from the
// sender, and a fresh hdr_crc.
func (e *Encoder) seal(hdr []byte) {
	old := le.Uint32(hdr[offSalt:])
	salt := old&^0xFF | uint32(e.seq)
	e.seq++
	le.PutUint32(hdr[offSalt:], salt)
	if len(hdr) == BaseHeaderSize {
		le.PutUint32(hdr[offHdrCRC:], patchCRC(le.Uint32(hdr[offHdrCRC:]), patchSalt, uint64(old^salt)))
		return
	}
	le.PutUint32(hdr[offHdrCRC:], 0)
	le.PutUint32(hdr[offHdrCRC:], CRC(hdr))
}

// FrameSize returns the extended header size and the whole wire size of
// the little-endian message frame starts with, read from its header (0, 0
// if frame is shorter than a base header).
func FrameSize(frame []byte) (hdr, size int) {
	if len(frame) < BaseHeaderSize {
		return 0, 0
	}
	hdr = HeaderBytes(le.Uint32(frame[offCmd:]))
	return hdr, hdr + AlignUp(int(le.Uint32(frame[offAuxBytes:])))
}

// SetFrameCircuit rewrites the circuit field and the REVCIRC flag of the
// little-endian message frame starts with, as a router relaying it does.
// A base header's hdr_crc, right before, is patched to stay right; a
// longer header's is left stale, and SealFrames reseals it whole.
func SetFrameCircuit(frame []byte, circuit uint64, revCirc bool) {
	oldCirc := le.Uint64(frame[offCircuit:])
	oldCmd := le.Uint32(frame[offCmd:])
	cmd := oldCmd &^ FlagRevCirc
	if revCirc {
		cmd |= FlagRevCirc
	}
	le.PutUint64(frame[offCircuit:], circuit)
	le.PutUint32(frame[offCmd:], cmd)
	if HeaderBytes(cmd) == BaseHeaderSize {
		crc := patchCRC(le.Uint32(frame[offHdrCRC:]), patchCircuit, oldCirc^circuit)
		crc = patchCRC(crc, patchFlags, uint64((oldCmd^cmd)>>24))
		le.PutUint32(frame[offHdrCRC:], crc)
	}
}
