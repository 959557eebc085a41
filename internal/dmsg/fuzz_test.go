package dmsg_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// FuzzDecode feeds arbitrary bytes to a Decoder expecting sequence seq
// first. With fix set, the sequence numbers and both CRCs of every whole
// message in data are made right first, so that mutations get past the
// CRC checks and reach the rest of the decoder and the typed bodies.
//
// Every message the Decoder hands out must re-encode (AppendMsg) to a
// message that decodes to the same thing, and typed body decoding must not
// panic; every error must be one of the framing errors.
func FuzzDecode(f *testing.F) {
	for _, name := range captureFiles(f) {
		data := readCapture(f, name)
		f.Add(uint8(0), false, data)
		f.Add(uint8(0), true, data)
		for _, wm := range splitStream(f, data) {
			f.Add(uint8(wm.msg.Salt), false, wm.wire)
		}
	}
	f.Fuzz(func(t *testing.T, seq uint8, fix bool, data []byte) {
		if fix {
			data = fixFraming(seq, data)
		}
		r := bytes.NewReader(data)
		d := dmsg.NewDecoder(r)
		d.SetSeq(seq)
		off := 0
		for {
			m, err := d.Decode()
			if err != nil {
				if !isFramingError(err) {
					t.Fatalf("message at offset %d: unexpected error %v", off, err)
				}
				return
			}
			n := m.EncodedSize()
			if consumed := len(data) - r.Len() - d.Buffered(); consumed != off+n {
				t.Fatalf("message at offset %d: decoder consumed up to %d, message ends at %d", off, consumed, off+n)
			}
			if got := uint8(m.Salt); got != seq {
				t.Fatalf("message at offset %d: sequence %d, want %d", off, got, seq)
			}
			seq++
			checkReencodes(t, m, data[off:off+n])
			checkTypedBodies(t, m)
			off += n
		}
	})
}

// checkReencodes re-encodes m and decodes it again with a fresh Decoder
// primed to m's sequence.
func checkReencodes(t *testing.T, m *dmsg.Msg, wire []byte) {
	t.Helper()
	re, err := dmsg.AppendMsg(nil, m)
	if err != nil {
		t.Fatalf("AppendMsg of a decoded %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if len(re) != len(wire) {
		t.Fatalf("re-encoded %s is %d bytes, received %d", dmsg.CmdString(m.Cmd), len(re), len(wire))
	}
	hn := dmsg.HeaderBytes(m.Cmd)
	if binary.LittleEndian.Uint16(wire) == dmsg.Magic && !bytes.Equal(re[:hn], wire[:hn]) {
		t.Fatalf("re-encoded %s header differs from the received one at byte %d", dmsg.CmdString(m.Cmd), firstDiff(re, wire))
	}
	d := dmsg.NewDecoder(bytes.NewReader(re))
	d.SetSeq(uint8(m.Salt))
	m2, err := d.Decode()
	if err != nil {
		t.Fatalf("decoding re-encoded %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if diff := sameMsg(m2, m); diff != "" {
		t.Fatalf("re-encoded %s decodes differently: %s", dmsg.CmdString(m.Cmd), diff)
	}
	if _, err := d.Decode(); err != io.EOF {
		t.Fatalf("after the re-encoded message: %v, want io.EOF", err)
	}
}

// checkTypedBodies decodes every typed body m may carry, and checks that
// marshalling a decoded body and decoding it again is stable.
func checkTypedBodies(t *testing.T, m *dmsg.Msg) {
	t.Helper()
	var layout *dmsg.ErrLayout
	base := dmsg.Base(m.Cmd)
	if c, err := m.Conn(); err == nil {
		buf := dmsg.NewMsg(m.Cmd)
		if base == dmsg.LnkConnV2 {
			c.MarshalV2To(buf.Ext)
		} else {
			c.MarshalTo(buf.Ext)
		}
		if c2, err := buf.Conn(); err != nil || c2 != c {
			t.Fatalf("Conn does not survive a re-marshal: %+v, %v; want %+v", c2, err, c)
		}
	} else if !errors.As(err, &layout) || base == dmsg.LnkConn || base == dmsg.LnkConnV2 {
		t.Fatalf("Conn of %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if s, err := m.Span(); err == nil {
		buf := dmsg.NewSpanMsg(0, &s)
		if s2, err := buf.Span(); err != nil || s2 != s {
			t.Fatalf("Span does not survive a re-marshal: %+v, %v; want %+v", s2, err, s)
		}
	} else if !errors.As(err, &layout) || base == dmsg.LnkSpan {
		t.Fatalf("Span of %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if c, err := m.Circ(); err == nil {
		buf := dmsg.NewCircMsg(0, &c)
		if c2, err := buf.Circ(); err != nil || c2 != c {
			t.Fatalf("Circ does not survive a re-marshal: %+v, %v; want %+v", c2, err, c)
		}
	} else if !errors.As(err, &layout) || base == dmsg.LnkCirc {
		t.Fatalf("Circ of %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if c, err := m.Credit(); err == nil {
		buf := dmsg.NewCreditMsg(1, false, c.Increment)
		if c2, err := buf.Credit(); err != nil || c2 != c {
			t.Fatalf("Credit does not survive a re-marshal: %+v, %v; want %+v", c2, err, c)
		}
	} else if !errors.As(err, &layout) || base == dmsg.LnkCredit {
		t.Fatalf("Credit of %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	if v, err := m.VolConf(); err == nil {
		buf := dmsg.NewVolConfMsg(0, &v)
		if v2, err := buf.VolConf(); err != nil || v2 != v {
			t.Fatalf("VolConf does not survive a re-marshal: %+v, %v; want %+v", v2, err, v)
		}
	} else if !errors.As(err, &layout) || base == dmsg.LnkVolConf {
		t.Fatalf("VolConf of %s: %v", dmsg.CmdString(m.Cmd), err)
	}
	_ = dmsg.CmdString(m.Cmd)
	_ = dmsg.ErrorString(m.Error)
}

// fixFraming returns a copy of data in which every whole message has the
// sequence number it should have when the first has seq, an aux CRC over
// its aux data as it stands (padding included) and a correct header CRC,
// each stored in the byte order the message's magic declares. It stops at
// the first message that is cut short or that the Decoder rejects before
// reading it whole.
func fixFraming(seq uint8, data []byte) []byte {
	data = bytes.Clone(data)
	for pos := 0; len(data)-pos >= dmsg.BaseHeaderSize; seq++ {
		b := data[pos:]
		var o binary.ByteOrder
		var seqOff int
		switch binary.LittleEndian.Uint16(b) {
		case dmsg.Magic:
			o, seqOff = binary.LittleEndian, 0x04
		case dmsg.MagicSwapped:
			o, seqOff = binary.BigEndian, 0x07
		default:
			return data
		}
		units := o.Uint32(b[0x20:]) & dmsg.SizeMask
		aux := int64(o.Uint32(b[0x28:]))
		if units == 0 || units > dmsg.MaxHeaderUnits || aux > dmsg.MaxAuxSize {
			return data
		}
		n := int(units) * dmsg.Align
		padded := dmsg.AlignUp(int(aux))
		if n+padded > len(b) {
			return data
		}
		b[seqOff] = seq
		var crc uint32
		if aux > 0 {
			crc = dmsg.CRC(b[n : n+padded])
		}
		o.PutUint32(b[0x24:], crc)
		reseal(b)
		pos += n + padded
	}
	return data
}

// FuzzFrame reads the same bytes with Decode and with the relay path
// (Next, then Frame up to max bytes, else Msg): both must hand out the
// same messages and fail at the same one. Every frame must be the exact
// bytes received, and relayed on a new circuit (SetFrameCircuit,
// SealFrames) it must decode as the same message on that circuit.
func FuzzFrame(f *testing.F) {
	for _, name := range captureFiles(f) {
		data := readCapture(f, name)
		f.Add(uint16(4096), false, data)
		f.Add(uint16(64), true, data)
	}
	f.Fuzz(func(t *testing.T, max uint16, fix bool, data []byte) {
		if fix {
			data = fixFraming(0, data)
		}
		want := dmsg.NewDecoder(bytes.NewReader(data))
		got := dmsg.NewDecoder(bytes.NewReader(data))
		off := 0
		for i := 0; ; i++ {
			wm, werr := want.Decode()
			m, frame, err := nextByFrame(got, int(max))
			if (werr == nil) != (err == nil) {
				t.Fatalf("message %d: Decode error %v, relay path error %v", i, werr, err)
			}
			if err != nil {
				return
			}
			n := wm.EncodedSize()
			if frame != nil {
				if !bytes.Equal(frame, data[off:off+n]) {
					t.Fatalf("message %d: frame differs from the input at byte %d", i, firstDiff(frame, data[off:off+n]))
				}
				checkRelays(t, frame, wm)
			} else if diff := sameMsg(m, wm); diff != "" {
				t.Fatalf("message %d: %s", i, diff)
			}
			off += n
		}
	})
}

// nextByFrame reads a message the way a relaying link does.
func nextByFrame(d *dmsg.Decoder, max int) (*dmsg.Msg, []byte, error) {
	if _, err := d.Next(); err != nil {
		return nil, nil, err
	}
	frame, ok, err := d.Frame(max)
	if err != nil || ok {
		return nil, bytes.Clone(frame), err
	}
	m, err := d.Msg()
	return m, nil, err
}

// checkRelays relays frame onto circuit 77 and decodes it.
func checkRelays(t *testing.T, frame []byte, want *dmsg.Msg) {
	t.Helper()
	dmsg.SetFrameCircuit(frame, 77, true)
	var out bytes.Buffer
	if _, err := dmsg.NewEncoder(&out).SealFrames(frame); err != nil {
		t.Fatalf("SealFrames of a received frame: %v", err)
	}
	out.Write(frame)
	m, err := dmsg.NewDecoder(&out).Decode()
	if err != nil {
		t.Fatalf("decoding a relayed %s: %v", dmsg.CmdString(want.Cmd), err)
	}
	w := *want
	w.Circuit, w.Cmd = 77, want.Cmd|dmsg.FlagRevCirc
	w.Salt, w.HdrCRC = m.Salt, m.HdrCRC
	if diff := sameMsg(m, &w); diff != "" {
		t.Fatalf("relayed %s: %s", dmsg.CmdString(want.Cmd), diff)
	}
}
