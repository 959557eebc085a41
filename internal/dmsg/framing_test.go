package dmsg_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// framingErrors are the sentinels a Decoder wraps.
var framingErrors = []error{
	dmsg.ErrBadMagic, dmsg.ErrHeaderSize, dmsg.ErrAuxSize, dmsg.ErrHeaderCRC,
	dmsg.ErrAuxCRC, dmsg.ErrSequence, dmsg.ErrAuxDescr,
}

// strictReader yields data and fails the test if it is read again after
// that: the decoder must have rejected the message from what it had.
type strictReader struct {
	t    *testing.T
	data []byte
}

var errReadTooFar = errors.New("decoder read past the bytes that condemn the message")

func (r *strictReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		r.t.Error(errReadTooFar)
		return 0, errReadTooFar
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// Messages the framing cases start from, each with sequence 0.
func pingWire(t *testing.T) []byte { return encode(t, dmsg.NewMsg(dmsg.LnkPing), 0x12345600) }

func shellWire(t *testing.T, aux string) []byte {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.SetAux([]byte(aux))
	return encode(t, m, 0x12345600)
}

func spanWire(t *testing.T) []byte {
	s := dmsg.Span{Dist: 2, Rnss: 0x1742fe1c, ClLabel: "synthclu", FsLabel: "synthpfs"}
	return encode(t, dmsg.NewSpanMsg(dmsg.FlagCreate, &s), 0x12345600)
}

// edit applies f to a copy of b and reseals the header CRC.
func edit(b []byte, f func(b []byte)) []byte {
	b = bytes.Clone(b)
	f(b)
	reseal(b)
	return b
}

func withCmd(cmd uint32) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint32(b[0x20:], cmd) }
}

func withAuxBytes(n uint32) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint32(b[0x28:], n) }
}

func withSeq(seq byte) func([]byte) { return func(b []byte) { b[0x04] = seq } }

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestFramingErrorsAreFatalAndNamed(t *testing.T) {
	ping := pingWire(t)
	span := spanWire(t)
	shell := shellWire(t, "help\x00") // 64-byte header, 5 aux bytes, 59 of padding
	type tc struct {
		name   string
		stream []byte
		ok     int   // messages that decode before the bad one
		want   error // a framing sentinel
		strict bool  // the decoder must not read past stream
	}
	cases := []tc{
		{name: "magic 00 00", stream: edit(ping, func(b []byte) { b[0], b[1] = 0, 0 }), want: dmsg.ErrBadMagic, strict: true},
		{name: "magic 32 49", stream: edit(ping, func(b []byte) { b[1] = 0x49 }), want: dmsg.ErrBadMagic, strict: true},
		{name: "magic 48 48", stream: edit(ping, func(b []byte) { b[0] = 0x48 }), want: dmsg.ErrBadMagic, strict: true},
		{name: "bad magic after a good message", stream: concat(ping, edit(ping, func(b []byte) { b[0] = 0xff })), ok: 1, want: dmsg.ErrBadMagic},
		{name: "header size 0", stream: edit(ping, withCmd(dmsg.LnkPing&^dmsg.SizeMask)), want: dmsg.ErrHeaderSize, strict: true},
		{name: "header size 33", stream: edit(ping, withCmd(dmsg.LnkPing&^dmsg.SizeMask|33)), want: dmsg.ErrHeaderSize, strict: true},
		{name: "header size 255", stream: edit(ping, withCmd(dmsg.LnkPing|dmsg.SizeMask)), want: dmsg.ErrHeaderSize, strict: true},
		{name: "header size 33 from a big-endian sender", stream: bigEndian(edit(ping, withCmd(dmsg.LnkPing&^dmsg.SizeMask|33)))[:64], want: dmsg.ErrHeaderSize, strict: true},
		{name: "aux_bytes 1 MiB + 1", stream: edit(ping, withAuxBytes(dmsg.MaxAuxSize+1)), want: dmsg.ErrAuxSize, strict: true},
		{name: "aux_bytes 4 GiB - 1", stream: edit(ping, withAuxBytes(0xFFFFFFFF)), want: dmsg.ErrAuxSize, strict: true},
		{name: "aux_bytes 1 MiB + 1 after a 448-byte header", stream: edit(span, withAuxBytes(dmsg.MaxAuxSize+1))[:64], want: dmsg.ErrAuxSize, strict: true},
		{name: "aux_bytes 1 MiB + 1 from a big-endian sender", stream: bigEndian(edit(ping, withAuxBytes(dmsg.MaxAuxSize+1))), want: dmsg.ErrAuxSize, strict: true},
		{name: "nonzero aux_descr", stream: edit(ping, func(b []byte) { b[0x30] = 1 }), want: dmsg.ErrAuxDescr, strict: true},
		{name: "aux_descr high byte set", stream: edit(ping, func(b []byte) { b[0x37] = 0x80 }), want: dmsg.ErrAuxDescr, strict: true},
		{name: "header CRC: a base header byte flipped", stream: flip(ping, 0x08), want: dmsg.ErrHeaderCRC},
		{name: "header CRC: the CRC field flipped", stream: flip(ping, 0x3C), want: dmsg.ErrHeaderCRC},
		{name: "header CRC: an extended header byte flipped", stream: flip(span, 0x130), want: dmsg.ErrHeaderCRC},
		{name: "header CRC: the last padding byte of the extended header flipped", stream: flip(span, 447), want: dmsg.ErrHeaderCRC},
		{name: "header CRC: a big-endian CRC stored little-endian", stream: func() []byte {
			b := bigEndian(span)
			crc := binary.BigEndian.Uint32(b[0x3C:])
			binary.LittleEndian.PutUint32(b[0x3C:], crc)
			return b
		}(), want: dmsg.ErrHeaderCRC},
		{name: "aux CRC: an aux byte flipped", stream: flip(shell, 64), want: dmsg.ErrAuxCRC},
		{name: "aux CRC: a padding byte flipped", stream: flip(shell, 127), want: dmsg.ErrAuxCRC},
		{name: "aux CRC: nonzero padding covered by the sender's CRC", stream: edit(shell, func(b []byte) {
			b[127] = 'x'
			binary.LittleEndian.PutUint32(b[0x24:], dmsg.CRC(b[64:128]))
		}), want: dmsg.ErrAuxCRC},
		{name: "aux CRC: the CRC field off by one", stream: edit(shell, func(b []byte) { b[0x24]++ }), want: dmsg.ErrAuxCRC},
		{name: "aux CRC: over the unpadded aux only", stream: edit(shell, func(b []byte) {
			binary.LittleEndian.PutUint32(b[0x24:], dmsg.CRC(b[64:69]))
		}), want: dmsg.ErrAuxCRC},
		{name: "sequence 1 first", stream: edit(ping, withSeq(1)), want: dmsg.ErrSequence},
		{name: "sequence 255 first", stream: edit(ping, withSeq(255)), want: dmsg.ErrSequence},
		{name: "sequence 0 twice", stream: concat(ping, ping), ok: 1, want: dmsg.ErrSequence},
		{name: "sequence 2 after 0", stream: concat(ping, edit(ping, withSeq(2))), ok: 1, want: dmsg.ErrSequence},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(c.stream)
			if c.strict {
				r = &strictReader{t: t, data: c.stream}
			}
			d := dmsg.NewDecoder(r)
			for i := range c.ok {
				if _, err := d.Decode(); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			m, err := d.Decode()
			if m != nil || !errors.Is(err, c.want) {
				t.Fatalf("Decode = %v, %v; want %v", m, err, c.want)
			}
			for _, other := range append(framingErrors, io.EOF, io.ErrUnexpectedEOF) {
				if other != c.want && errors.Is(err, other) {
					t.Errorf("error %q is also %q", err, other)
				}
			}
		})
	}
}

// flip returns b with one bit of byte i inverted, CRCs left as they were.
func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x04
	return b
}

func TestOversizedAuxIsRejectedBeforeItIsAllocated(t *testing.T) {
	hdr := edit(pingWire(t), withAuxBytes(dmsg.MaxAuxSize+dmsg.Align))
	d := dmsg.NewDecoder(&strictReader{t: t, data: hdr})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := d.Decode()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, dmsg.ErrAuxSize) {
		t.Fatalf("Decode: %v, want %v", err, dmsg.ErrAuxSize)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("Decode allocated %d bytes for a message it rejected", n)
	}
}

func TestStreamEndsAreCleanOnlyAtMessageBoundaries(t *testing.T) {
	ping := pingWire(t)
	span := spanWire(t)
	shell := shellWire(t, "help\x00")
	second := func(b []byte) []byte { return edit(b, withSeq(1)) }
	for _, tc := range []struct {
		name   string
		stream []byte
		ok     int
		want   error
	}{
		{"an empty stream is io.EOF", nil, 0, io.EOF},
		{"the end after a 64-byte message is io.EOF", ping, 1, io.EOF},
		{"the end after a 448-byte header is io.EOF", span, 1, io.EOF},
		{"the end after aux data and its padding is io.EOF", shell, 1, io.EOF},
		{"the end after two messages is io.EOF", concat(span, second(shell)), 2, io.EOF},
		{"one byte of a base header", ping[:1], 0, io.ErrUnexpectedEOF},
		{"63 bytes of a base header", ping[:63], 0, io.ErrUnexpectedEOF},
		{"a base header cut after a whole message", concat(ping, second(ping)[:32]), 1, io.ErrUnexpectedEOF},
		{"the base header of a 448-byte header", span[:64], 0, io.ErrUnexpectedEOF},
		{"65 bytes of a 448-byte header", span[:65], 0, io.ErrUnexpectedEOF},
		{"447 bytes of a 448-byte header", span[:447], 0, io.ErrUnexpectedEOF},
		{"a header announcing aux data and no aux", shell[:64], 0, io.ErrUnexpectedEOF},
		{"part of the aux data", shell[:66], 0, io.ErrUnexpectedEOF},
		{"the aux data without its padding", shell[:69], 0, io.ErrUnexpectedEOF},
		{"all but the last padding byte", shell[:127], 0, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dmsg.NewDecoder(bytes.NewReader(tc.stream))
			for i := range tc.ok {
				if _, err := d.Decode(); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			m, err := d.Decode()
			if m != nil {
				t.Fatalf("Decode returned a message")
			}
			if tc.want == io.EOF && err != io.EOF {
				t.Fatalf("Decode: %v, want io.EOF itself", err)
			}
			if !errors.Is(err, tc.want) || (tc.want != io.EOF && errors.Is(err, io.EOF)) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

// A reader's own error is passed through, not taken for an end of stream.
func TestReadErrorsArePassedThrough(t *testing.T) {
	boom := errors.New("connection reset")
	span := spanWire(t)
	for _, cut := range []int{0, 10, 64, 100, len(span)} {
		r := io.MultiReader(bytes.NewReader(span[:cut]), &errReader{boom})
		d := dmsg.NewDecoder(r)
		if cut == len(span) {
			if _, err := d.Decode(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.Decode(); !errors.Is(err, boom) {
			t.Errorf("cut at %d: Decode: %v, want %v", cut, err, boom)
		}
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func TestEncoderNumbersMessagesFrom0AndWrapsAfter255(t *testing.T) {
	const n = 600
	var buf bytes.Buffer
	enc := dmsg.NewEncoder(&buf)
	for range n {
		if err := enc.Encode(dmsg.NewMsg(dmsg.LnkPing)); err != nil {
			t.Fatal(err)
		}
	}
	wire := buf.Bytes()
	if len(wire) != n*64 {
		t.Fatalf("%d bytes for %d pings", len(wire), n)
	}
	uppers := map[uint32]bool{}
	for i := range n {
		salt := binary.LittleEndian.Uint32(wire[i*64+4:])
		if seq := salt & 0xFF; seq != uint32(i%256) {
			t.Fatalf("message %d has sequence %d, want %d", i, seq, i%256)
		}
		uppers[salt>>8] = true
	}
	// 24 random bits: a repeat among 600 is possible but rare; a counter or
	// a constant would give far fewer distinct values.
	if len(uppers) < n-5 {
		t.Errorf("upper 24 salt bits took only %d distinct values in %d messages", len(uppers), n)
	}
	d := dmsg.NewDecoder(bytes.NewReader(wire))
	for i := range n {
		m, err := d.Decode()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Salt != binary.LittleEndian.Uint32(wire[i*64+4:]) {
			t.Fatalf("message %d: salt %#x", i, m.Salt)
		}
	}
	if _, err := d.Decode(); err != io.EOF {
		t.Fatalf("after %d messages: %v, want io.EOF", n, err)
	}
}

func TestAppendMsgUsesTheMessagesOwnSalt(t *testing.T) {
	m := dmsg.NewMsg(dmsg.LnkPing)
	m.Salt = 0xdeadbe07
	b, err := dmsg.AppendMsg(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(b[4:]); got != m.Salt {
		t.Errorf("salt %#x, want %#x", got, m.Salt)
	}
}

// Two links' encoders draw their salt bits independently.
func TestEncodersDoNotShareSaltBits(t *testing.T) {
	first := func() uint32 {
		var buf bytes.Buffer
		if err := dmsg.NewEncoder(&buf).Encode(dmsg.NewMsg(dmsg.LnkPing)); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(buf.Bytes()[4:])
	}
	seen := map[uint32]bool{}
	for range 8 {
		seen[first()] = true
	}
	if len(seen) < 7 {
		t.Errorf("8 encoders started with only %d distinct salts", len(seen))
	}
}
