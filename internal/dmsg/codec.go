package dmsg

import (
	"bufio"
	"bytes"
	"encoding/binary"
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

// Decoder reads messages from one direction of a link, checking framing,
// limits, both CRCs and the salt sequence before handing a message out.
// It is not safe for concurrent use. After an error other than io.EOF the
// stream is unusable: DMSG has no resynchronisation.
type Decoder struct {
	r   *bufio.Reader
	seq uint8
	hdr [MaxHeaderSize]byte
}

// NewDecoder returns a Decoder reading from r, buffered unless r already
// is a *bufio.Reader.
func NewDecoder(r io.Reader) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Decoder{r: br}
}

// Buffered reports how many bytes are already read from the stream but not
// yet decoded.
func (d *Decoder) Buffered() int { return d.r.Buffered() }

// Decode reads the next message. It returns io.EOF only when the stream ends
// cleanly at a message boundary; an end inside a message is
// io.ErrUnexpectedEOF.
func (d *Decoder) Decode() (*Msg, error) {
	base := d.hdr[:BaseHeaderSize]
	if _, err := io.ReadFull(d.r, base); err != nil {
		return nil, err
	}
	var order binary.ByteOrder
	switch magic := le.Uint16(base[offMagic:]); magic {
	case Magic:
		order = binary.LittleEndian
	case MagicSwapped:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("%w %#04x", ErrBadMagic, magic)
	}
	cmd := order.Uint32(base[offCmd:])
	units := cmd & SizeMask
	if units == 0 || units > MaxHeaderUnits {
		return nil, fmt.Errorf("%w: %d units in %s", ErrHeaderSize, units, CmdString(cmd))
	}
	auxBytes := order.Uint32(base[offAuxBytes:])
	if auxBytes > MaxAuxSize {
		return nil, fmt.Errorf("%w: %d bytes in %s", ErrAuxSize, auxBytes, CmdString(cmd))
	}
	if order.Uint64(base[offAuxDescr:]) != 0 {
		return nil, fmt.Errorf("%w (%s)", ErrAuxDescr, CmdString(cmd))
	}
	n := int(units) * Align
	hdr := d.hdr[:n]
	if _, err := io.ReadFull(d.r, hdr[BaseHeaderSize:]); err != nil {
		return nil, noEOF(err)
	}
	want := order.Uint32(hdr[offHdrCRC:])
	le.PutUint32(hdr[offHdrCRC:], 0)
	got := CRC(hdr)
	order.PutUint32(hdr[offHdrCRC:], want)
	if got != want {
		return nil, fmt.Errorf("%w in %s: got %#08x, header says %#08x", ErrHeaderCRC, CmdString(cmd), got, want)
	}
	var h Header
	h.get(hdr, order)
	if seq := uint8(h.Salt); seq != d.seq {
		return nil, fmt.Errorf("%w: got %d, want %d", ErrSequence, seq, d.seq)
	}
	d.seq++
	ext := 0
	if n > BaseHeaderSize {
		ext = n
	}
	m := newPooledMsg(ext + AlignUp(int(auxBytes)))
	m.Header, m.auxSealed = h, true
	if ext > 0 {
		m.Ext = m.buf[:n:n]
		clear(m.Ext[:BaseHeaderSize])
		copy(m.Ext[BaseHeaderSize:], hdr[BaseHeaderSize:])
		if order != binary.LittleEndian {
			swapExt(Base(cmd), m.Ext)
		}
	}
	if auxBytes > 0 {
		if err := d.readAux(m, m.buf[ext:ext+AlignUp(int(auxBytes))]); err != nil {
			m.Release()
			return nil, err
		}
	}
	return m, nil
}

// readAux reads m's aux data and padding into buf, its aligned size.
func (d *Decoder) readAux(m *Msg, buf []byte) error {
	if _, err := io.ReadFull(d.r, buf); err != nil {
		return noEOF(err)
	}
	if got := CRC(buf); got != m.AuxCRC {
		return fmt.Errorf("%w in %s: got %#08x, header says %#08x", ErrAuxCRC, CmdString(m.Cmd), got, m.AuxCRC)
	}
	// aux_crc is defined over the aux data padded with zeros (PROTOCOL.md
	// 1.4). m.Aux drops the padding, so a message accepted with nonzero
	// padding that its CRC covers would re-encode with a wrong aux_crc.
	if pad := buf[m.AuxBytes:]; !bytes.Equal(pad, zeroPad[:len(pad)]) {
		return fmt.Errorf("%w in %s: aux padding is not zero", ErrAuxCRC, CmdString(m.Cmd))
	}
	m.Aux = buf[:m.AuxBytes:m.AuxBytes]
	return nil
}

// noEOF turns an EOF inside a message into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
