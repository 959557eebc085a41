package dmsg_test

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// intAt is one multi-byte integer of a header, at its message offset.
type intAt struct{ off, size int }

// baseInts are the integers of the base header after the magic
// (docs/PROTOCOL.md 1.1); hdr_crc is written separately.
var baseInts = []intAt{
	{0x02, 2}, {0x04, 4}, {0x08, 8}, {0x10, 8}, {0x18, 8}, {0x20, 4},
	{0x24, 4}, {0x28, 4}, {0x2C, 4}, {0x30, 8}, {0x38, 4},
}

// extIntsOf lists the integers of each extended header, from the tables of
// docs/PROTOCOL.md sections 2.1 to 2.4, 10, 11.1 and 11.2. UUIDs, labels, u8 fields and the
// opaque span media are byte arrays.
var extIntsOf = map[uint32][]intAt{
	dmsg.LnkConn:    {{0x70, 8}, {0x7A, 2}, {0x7C, 4}, {0x80, 4}, {0x84, 4}, {0x88, 4}, {0xC0, 8}},
	dmsg.LnkConnV2:  {{0x70, 8}, {0x7A, 2}, {0x7C, 4}, {0x80, 4}},
	dmsg.LnkSpan:    {{0x62, 2}, {0x64, 4}, {0x68, 8}, {0x70, 4}, {0x74, 4}},
	dmsg.LnkCirc:    {{0x40, 8}, {0x48, 8}},
	dmsg.LnkCredit:  {{0x40, 8}},
	dmsg.LnkVolConf: {{0x40 + 0x04, 2}, {0xC0, 4}, {0xC4, 4}},
}

func swapAt(b []byte, f intAt) {
	p := b[f.off : f.off+f.size]
	switch f.size {
	case 2:
		binary.LittleEndian.PutUint16(p, bits.ReverseBytes16(binary.LittleEndian.Uint16(p)))
	case 4:
		binary.LittleEndian.PutUint32(p, bits.ReverseBytes32(binary.LittleEndian.Uint32(p)))
	case 8:
		binary.LittleEndian.PutUint64(p, bits.ReverseBytes64(binary.LittleEndian.Uint64(p)))
	}
}

// bigEndian rewrites one little-endian message as a big-endian sender would
// have sent it: magic bytes 48 32, every integer of the base and extended
// headers byte-swapped, and hdr_crc computed over the bytes as sent and
// stored big-endian (docs/PROTOCOL.md 1.2). Aux data is not touched.
func bigEndian(le []byte) []byte {
	b := bytes.Clone(le)
	cmd := binary.LittleEndian.Uint32(b[0x20:])
	b[0], b[1] = 0x48, 0x32
	for _, f := range baseInts {
		swapAt(b, f)
	}
	for _, f := range extIntsOf[dmsg.Base(cmd)] {
		swapAt(b, f)
	}
	n := dmsg.HeaderBytes(cmd)
	if n == 0 || n > len(b) { // a broken header, for the framing tests
		n = dmsg.BaseHeaderSize
	}
	clear(b[0x3C:0x40])
	binary.BigEndian.PutUint32(b[0x3C:], dmsg.CRC(b[:n]))
	return b
}

func TestOppositeEndianMessagesDecodeLikeLittleEndianOnes(t *testing.T) {
	for k, kind := range msgKinds {
		t.Run(kind.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(2, uint64(k)))
			var leStream, beStream bytes.Buffer
			var sent []*dmsg.Msg
			for i := range 300 {
				aux := r.IntN(300)
				if i < len(auxSizes) {
					aux = auxSizes[i]
				}
				m, _ := kind.build(r)
				randomize(r, m, aux)
				le := encode(t, m, r.Uint32()&^0xFF|uint32(i%256))
				be := bigEndian(le)
				if be[0] != 0x48 || be[1] != 0x32 || binary.LittleEndian.Uint16(be) != dmsg.MagicSwapped {
					t.Fatalf("magic bytes % x", be[:2])
				}
				leStream.Write(le)
				beStream.Write(be)
				sent = append(sent, m)
			}
			leDec, beDec := dmsg.NewDecoder(&leStream), dmsg.NewDecoder(&beStream)
			for i, m := range sent {
				want, err := leDec.Decode()
				if err != nil {
					t.Fatalf("message %d little-endian: %v", i, err)
				}
				got, err := beDec.Decode()
				if err != nil {
					t.Fatalf("message %d (%s) big-endian: %v", i, dmsg.CmdString(m.Cmd), err)
				}
				// hdr_crc is the one field that differs: each is the CRC of
				// the bytes its sender sent.
				want.HdrCRC = got.HdrCRC
				if diff := sameMsg(got, want); diff != "" {
					t.Fatalf("message %d: big-endian decodes differently: %s", i, diff)
				}
				if kind.typed != nil {
					wb, werr := kind.typed(want)
					gb, gerr := kind.typed(got)
					if werr != nil || gerr != nil || gb != wb {
						t.Fatalf("message %d: typed body\n got %+v (%v)\nwant %+v (%v)", i, gb, gerr, wb, werr)
					}
				}
			}
			if _, err := beDec.Decode(); err == nil {
				t.Error("big-endian stream did not end")
			}
		})
	}
}

// A LNK_SPAN laid out field by field as a big-endian sender builds it,
// without the encoder.
func TestABigEndianSpanBuiltByHandDecodes(t *testing.T) {
	be := binary.BigEndian
	b := make([]byte, 448+64)
	b[0], b[1] = 0x48, 0x32
	be.PutUint32(b[0x04:], 0xabcdef00)         // salt, sequence 0
	be.PutUint64(b[0x08:], 0x00007f08cc001a60) // msgid
	be.PutUint64(b[0x10:], 0x1122334455667788) // circuit
	be.PutUint32(b[0x20:], dmsg.FlagCreate|dmsg.LnkSpan)
	aux := []byte("hello, big-endian world\x00")
	copy(b[448:], aux)
	be.PutUint32(b[0x24:], dmsg.CRC(b[448:]))
	be.PutUint32(b[0x28:], uint32(len(aux)))
	be.PutUint32(b[0x2C:], dmsg.ErrParam)
	clid := []byte{0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x88, 0x77, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00}
	fsid := []byte{0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}
	copy(b[0x40:], clid)
	copy(b[0x50:], fsid)
	b[0x60] = 1                               // pfs_type
	b[0x61] = dmsg.PeerHammer2                // peer_type
	be.PutUint16(b[0x62:], 1)                 // proto_version
	be.PutUint32(b[0x64:], 0x01020304)        // status
	be.PutUint32(b[0x70:], 2)                 // dist
	be.PutUint32(b[0x74:], 0x1742fe1c)        // rnss
	copy(b[0x78:], "\x01\x02\x03\x04")        // media, opaque
	copy(b[0xB0:], "synthclu")                // cl_label
	copy(b[0x130:], "synthpfs")               // fs_label
	be.PutUint32(b[0x3C:], dmsg.CRC(b[:448])) // over the bytes as sent

	m, err := dmsg.NewDecoder(bytes.NewReader(b)).Decode()
	if err != nil {
		t.Fatal(err)
	}
	wantHdr := dmsg.Header{
		Salt: 0xabcdef00, MsgID: 0x00007f08cc001a60, Circuit: 0x1122334455667788,
		Cmd: dmsg.FlagCreate | dmsg.LnkSpan, AuxCRC: dmsg.CRC(b[448:]), AuxBytes: uint32(len(aux)),
		Error: dmsg.ErrParam, HdrCRC: be.Uint32(b[0x3C:]),
	}
	if m.Header != wantHdr {
		t.Errorf("header\n got %+v\nwant %+v", m.Header, wantHdr)
	}
	if !bytes.Equal(m.Aux, aux) {
		t.Errorf("aux %q", m.Aux)
	}
	s, err := m.Span()
	if err != nil {
		t.Fatal(err)
	}
	want := dmsg.Span{
		PfsClid: uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00"),
		PfsFsid: uuid.MustParse("01020304-0506-0708-090a-0b0c0d0e0f10"),
		PfsType: 1, PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Status: 0x01020304,
		Dist: 2, Rnss: 0x1742fe1c, Media: [56]byte{1, 2, 3, 4},
		ClLabel: "synthclu", FsLabel: "synthpfs",
	}
	if s != want {
		t.Errorf("span\n got %+v\nwant %+v", s, want)
	}
	// Re-encoded, it is the same message in our byte order.
	le := encode(t, m, m.Salt)
	if le[0] != 0x32 || le[1] != 0x48 {
		t.Errorf("re-encoded magic % x", le[:2])
	}
	if !bytes.Equal(bigEndian(le), b) {
		t.Errorf("re-encoded message swapped back differs at byte %d", firstDiff(bigEndian(le), b))
	}
}
