package dmsg

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC returns the CRC-32C of b, the checksum both DMSG CRC fields use.
func CRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// zeroPad is the source of padding bytes.
var zeroPad [MaxHeaderSize]byte

// auxCRC is the CRC of aux padded with zeros to its aligned length.
func auxCRC(aux []byte) uint32 {
	if len(aux) == 0 {
		return 0
	}
	c := crc32.Update(0, castagnoli, aux)
	if pad := AlignUp(len(aux)) - len(aux); pad > 0 {
		c = crc32.Update(c, castagnoli, zeroPad[:pad])
	}
	return c
}

// Msg is one DMSG message: its base header by field, its extended header as
// bytes and its aux data.
type Msg struct {
	Header

	// Ext holds the whole extended header, HeaderBytes(Cmd) bytes, with the
	// command's own fields at their message offsets (0x40 onwards). Its
	// first 64 bytes are not used: the base header comes from Header. Ext
	// may be nil for 64-byte commands; a shorter Ext is zero-extended.
	Ext []byte

	// Aux is the aux data, unpadded. AuxBytes and AuxCRC describe it once
	// SetAux has been called or the message was decoded.
	Aux []byte

	auxSealed bool // AuxCRC and AuxBytes match Aux

	buf    []byte // pooled backing of Ext and Aux (decoded messages)
	class  int8   // buf's size class
	pooled bool   // made by a Decoder: Release may recycle it
}

// NewMsg returns a message for cmd (flags included) with an extended header
// of the size cmd declares.
func NewMsg(cmd uint32) *Msg {
	m := &Msg{Header: Header{Cmd: cmd}}
	if n := HeaderBytes(cmd); n > BaseHeaderSize {
		m.Ext = make([]byte, n)
	}
	return m
}

// SetAux attaches aux data and seals its length and CRC. The message keeps
// b; the caller must not modify it afterwards.
func (m *Msg) SetAux(b []byte) {
	m.Aux = b
	m.AuxBytes = uint32(len(b))
	m.AuxCRC = auxCRC(b)
	m.auxSealed = true
}

// EncodedSize is the number of bytes m occupies on the wire.
func (m *Msg) EncodedSize() int {
	return HeaderBytes(m.Cmd) + AlignUp(len(m.Aux))
}

// ext returns m's extended header of the size its command declares; a
// short Ext is read as a zero-extended copy. It never writes to m: the
// typed body readers that use it may run concurrently on one message.
func (m *Msg) ext(n int) []byte {
	if len(m.Ext) < n {
		e := make([]byte, n)
		copy(e, m.Ext)
		return e
	}
	return m.Ext[:n]
}

// Conn decodes a LNK_CONN body of either form.
func (m *Msg) Conn() (Conn, error) {
	var c Conn
	switch Base(m.Cmd) {
	case LnkConn:
		c.unmarshal(m.ext(ConnSize))
	case LnkConnV2:
		c.unmarshalV2(m.ext(ConnV2Size))
	default:
		return c, &ErrLayout{Want: LnkConn, Got: Base(m.Cmd)}
	}
	return c, nil
}

// Span decodes a LNK_SPAN body.
func (m *Msg) Span() (Span, error) {
	var s Span
	if Base(m.Cmd) != LnkSpan {
		return s, &ErrLayout{Want: LnkSpan, Got: Base(m.Cmd)}
	}
	s.unmarshal(m.ext(SpanSize))
	return s, nil
}

// Circ decodes a LNK_CIRC body.
func (m *Msg) Circ() (Circ, error) {
	var c Circ
	if Base(m.Cmd) != LnkCirc {
		return c, &ErrLayout{Want: LnkCirc, Got: Base(m.Cmd)}
	}
	c.unmarshal(m.ext(CircSize))
	return c, nil
}

// VolConf decodes a LNK_VOLCONF body.
func (m *Msg) VolConf() (VolConf, error) {
	var v VolConf
	if Base(m.Cmd) != LnkVolConf {
		return v, &ErrLayout{Want: LnkVolConf, Got: Base(m.Cmd)}
	}
	v.unmarshal(m.ext(VolConfSize))
	return v, nil
}

// NewConnMsg builds a LNK_CONN message with flags, in the dmsgd form or,
// with v2, in the libdmsg 2014+ form.
func NewConnMsg(flags uint32, c *Conn, v2 bool) *Msg {
	if v2 {
		m := NewMsg(flags | LnkConnV2)
		c.MarshalV2To(m.Ext)
		return m
	}
	m := NewMsg(flags | LnkConn)
	c.MarshalTo(m.Ext)
	return m
}

// NewSpanMsg builds a LNK_SPAN message with flags.
func NewSpanMsg(flags uint32, s *Span) *Msg {
	m := NewMsg(flags | LnkSpan)
	s.MarshalTo(m.Ext)
	return m
}

// NewCircMsg builds a LNK_CIRC message with flags.
func NewCircMsg(flags uint32, c *Circ) *Msg {
	m := NewMsg(flags | LnkCirc)
	c.MarshalTo(m.Ext)
	return m
}

// NewVolConfMsg builds a LNK_VOLCONF message with flags.
func NewVolConfMsg(flags uint32, v *VolConf) *Msg {
	m := NewMsg(flags | LnkVolConf)
	v.MarshalTo(m.Ext)
	return m
}
