package dmsg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Decoder reads messages from one direction of a link, checking framing,
// limits, both CRCs and the salt sequence before handing a message out.
// It is not safe for concurrent use. After an error other than io.EOF the
// stream is unusable: DMSG has no resynchronisation.
//
// A message is read in two steps: Next reads and checks its header, then
// Msg decodes the rest or Frame hands out the whole message as the bytes
// received. Decode does both steps for callers that want every message
// decoded. A router relays circuit traffic with Frame: it never needs the
// message as anything but bytes.
type Decoder struct {
	r   *bufio.Reader
	seq uint8

	cur     Header // the header Next read
	swapped bool   // the current message is opposite-endian
	hdrSize int    // its extended header size; 0: no current message
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
	if _, err := d.Next(); err != nil {
		return nil, err
	}
	return d.Msg()
}

// errNoMessage is a programming error: Msg or Frame without Next.
var errNoMessage = errors.New("dmsg: no message header read (call Next)")

// Next reads and checks the next message's header, and returns it in host
// form; the header is valid until the next call on d. The message's aux
// data is still unread: Msg or Frame must be called before Next again
// (Next skips a message left half read).
func (d *Decoder) Next() (*Header, error) {
	if d.hdrSize != 0 {
		if err := d.skip(); err != nil {
			return nil, err
		}
	}
	base, err := d.r.Peek(BaseHeaderSize)
	if err != nil {
		if len(base) > 0 {
			return nil, noEOF(err)
		}
		return nil, err
	}
	switch magic := le.Uint16(base[offMagic:]); magic {
	case Magic:
		d.swapped = false
	case MagicSwapped:
		d.swapped = true
	default:
		return nil, fmt.Errorf("%w %#04x", ErrBadMagic, magic)
	}
	// One branch on the byte order, not one per field: every message
	// comes through here.
	cmd, auxBytes := le.Uint32(base[offCmd:]), le.Uint32(base[offAuxBytes:])
	if d.swapped {
		cmd, auxBytes = bits.ReverseBytes32(cmd), bits.ReverseBytes32(auxBytes)
	}
	units := cmd & SizeMask
	if units == 0 || units > MaxHeaderUnits {
		return nil, fmt.Errorf("%w: %d units in %s", ErrHeaderSize, units, CmdString(cmd))
	}
	if auxBytes > MaxAuxSize {
		return nil, fmt.Errorf("%w: %d bytes in %s", ErrAuxSize, auxBytes, CmdString(cmd))
	}
	if le.Uint64(base[offAuxDescr:]) != 0 { // zero in either byte order
		return nil, fmt.Errorf("%w (%s)", ErrAuxDescr, CmdString(cmd))
	}
	n := int(units) * Align
	hdr := base
	if n > BaseHeaderSize {
		if hdr, err = d.r.Peek(n); err != nil {
			return nil, noEOF(err)
		}
	}
	if err := d.checkHeader(hdr, cmd); err != nil {
		return nil, err
	}
	d.hdrSize = n
	return &d.cur, nil
}

// checkHeader checks the CRC and the sequence number of hdr, the whole
// extended header, and keeps its base header as the current one.
func (d *Decoder) checkHeader(hdr []byte, cmd uint32) error {
	// hdr_crc is computed with its own field taken as zero. hdr is the
	// reader's buffer: the field is zeroed there for one CRC call over the
	// whole header, and put back.
	field := le.Uint32(hdr[offHdrCRC:])
	le.PutUint32(hdr[offHdrCRC:], 0)
	got := CRC(hdr)
	le.PutUint32(hdr[offHdrCRC:], field)
	want := field
	if d.swapped {
		want = bits.ReverseBytes32(field)
	}
	if got != want {
		return fmt.Errorf("%w in %s: got %#08x, header says %#08x", ErrHeaderCRC, CmdString(cmd), got, want)
	}
	d.cur.get(hdr, d.swapped)
	if seq := uint8(d.cur.Salt); seq != d.seq {
		return fmt.Errorf("%w: got %d, want %d", ErrSequence, seq, d.seq)
	}
	d.seq++
	return nil
}

// Msg decodes the message whose header Next read.
func (d *Decoder) Msg() (*Msg, error) {
	n := d.hdrSize
	if n == 0 {
		return nil, errNoMessage
	}
	d.hdrSize = 0
	auxBytes := int(d.cur.AuxBytes)
	ext := 0
	if n > BaseHeaderSize {
		ext = n
	}
	m := newPooledMsg(ext + AlignUp(auxBytes))
	m.Header, m.auxSealed = d.cur, true
	if ext > 0 {
		hdr, _ := d.r.Peek(n) // buffered by Next
		m.Ext = m.buf[:n:n]
		clear(m.Ext[:BaseHeaderSize])
		copy(m.Ext[BaseHeaderSize:], hdr[BaseHeaderSize:])
		if d.swapped {
			swapExt(Base(m.Cmd), m.Ext)
		}
	}
	d.r.Discard(n)
	if auxBytes > 0 {
		if err := d.readAux(m, m.buf[ext:ext+AlignUp(auxBytes)]); err != nil {
			m.Release()
			return nil, err
		}
	}
	return m, nil
}

// Frame returns the whole message whose header Next read, as received:
// header, aux data and padding, with both CRCs checked. The bytes are the
// Decoder's buffer, valid until the next call on d. ok is false, with
// nothing consumed, for a message that is not little-endian or is larger
// than max bytes or the buffer: decode those with Msg.
func (d *Decoder) Frame(max int) (frame []byte, ok bool, err error) {
	n := d.hdrSize
	if n == 0 {
		return nil, false, errNoMessage
	}
	aux := AlignUp(int(d.cur.AuxBytes))
	if d.swapped || n+aux > min(max, d.r.Size()) {
		return nil, false, nil
	}
	d.hdrSize = 0
	frame, err = d.r.Peek(n + aux)
	if err != nil {
		return nil, false, noEOF(err)
	}
	if err := d.checkAux(frame[n:]); err != nil {
		return nil, false, err
	}
	d.r.Discard(n + aux)
	return frame, true, nil
}

// skip reads past the rest of a message whose header Next read, still
// checking its aux data.
func (d *Decoder) skip() error {
	if _, ok, err := d.Frame(d.r.Size()); ok || err != nil {
		return err
	}
	m, err := d.Msg()
	if err == nil {
		m.Release()
	}
	return err
}

// readAux reads m's aux data and padding into buf, its aligned size.
func (d *Decoder) readAux(m *Msg, buf []byte) error {
	if _, err := io.ReadFull(d.r, buf); err != nil {
		return noEOF(err)
	}
	if err := d.checkAux(buf); err != nil {
		return err
	}
	m.Aux = buf[:m.AuxBytes:m.AuxBytes]
	return nil
}

// checkAux checks the current message's aux data and padding, buf.
func (d *Decoder) checkAux(buf []byte) error {
	if got := CRC(buf); got != d.cur.AuxCRC {
		return fmt.Errorf("%w in %s: got %#08x, header says %#08x", ErrAuxCRC, CmdString(d.cur.Cmd), got, d.cur.AuxCRC)
	}
	// aux_crc is defined over the aux data padded with zeros (docs/PROTOCOL.md
	// 1.4). Msg.Aux drops the padding, so a message accepted with nonzero
	// padding that its CRC covers would re-encode with a wrong aux_crc.
	if pad := buf[d.cur.AuxBytes:]; !bytes.Equal(pad, zeroPad[:len(pad)]) {
		return fmt.Errorf("%w in %s: aux padding is not zero", ErrAuxCRC, CmdString(d.cur.Cmd))
	}
	return nil
}

// noEOF turns an EOF inside a message into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
