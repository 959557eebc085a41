package dmsg_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// msgKind builds random messages of one command and decodes their typed
// body, so that one round trip test covers every message type.
type msgKind struct {
	name string
	// build returns a message whose flags the caller sets, and the typed
	// body a receiver should decode from it (nil for untyped commands).
	build func(r *rand.Rand) (m *dmsg.Msg, want any)
	// typed decodes the body of a received message; nil for untyped ones.
	typed func(m *dmsg.Msg) (any, error)
}

var msgKinds = []msgKind{
	{name: "LNK_PAD", build: plain(dmsg.LnkPad)},
	{name: "LNK_PING", build: plain(dmsg.LnkPing)},
	{name: "LNK_AUTH", build: randomExt(dmsg.LnkAuth)},
	{
		name: "LNK_CONN",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			c := randomConn(r)
			return dmsg.NewConnMsg(0, &c, false), c
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.Conn() },
	},
	{
		name: "LNK_CONN(v2)",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			c := randomConn(r)
			// The 0x1106 form carries only these fields.
			want := dmsg.Conn{
				MediaID: c.MediaID, PfsFsid: c.PfsFsid, PeerMask: c.PeerMask,
				PeerType: c.PeerType, ProtoVersion: c.ProtoVersion, Status: c.Status,
				Rnss: c.Rnss, FsLabel: c.FsLabel,
			}
			return dmsg.NewConnMsg(0, &c, true), want
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.Conn() },
	},
	{
		name: "LNK_SPAN",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			s := randomSpan(r)
			return dmsg.NewSpanMsg(0, &s), s
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.Span() },
	},
	{
		name: "LNK_CIRC",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			c := dmsg.Circ{Reserved01: r.Uint64(), Target: r.Uint64()}
			return dmsg.NewCircMsg(0, &c), c
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.Circ() },
	},
	{
		name: "LNK_CREDIT",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			c := dmsg.Credit{Increment: r.Uint64()}
			m := dmsg.NewCreditMsg(1+r.Uint64N(1<<40), r.IntN(2) == 0, c.Increment)
			return m, c
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.Credit() },
	},
	{
		name: "LNK_VOLCONF",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			v := randomVolConf(r)
			return dmsg.NewVolConfMsg(0, &v), v
		},
		typed: func(m *dmsg.Msg) (any, error) { return m.VolConf() },
	},
	{
		name: "LNK_ERROR",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			m := dmsg.NewMsg(dmsg.LnkError)
			m.Error = r.Uint32()
			return m, nil
		},
	},
	{name: "DBG_SHELL", build: plain(dmsg.DbgShell)},
	{
		// A command dmsgd does not know, of any protocol and size: its
		// extended header is carried as opaque bytes.
		name: "unknown",
		build: func(r *rand.Rand) (*dmsg.Msg, any) {
			for {
				cmd := r.Uint32()&(dmsg.ProtoMask|dmsg.CmdMask) | uint32(1+r.IntN(dmsg.MaxHeaderUnits))
				switch cmd {
				case dmsg.LnkPad, dmsg.LnkPing, dmsg.LnkAuth, dmsg.LnkConn, dmsg.LnkConnV2, dmsg.LnkSpan,
					dmsg.LnkCirc, dmsg.LnkCredit, dmsg.LnkVolConf, dmsg.LnkError, dmsg.DbgShell:
					continue
				}
				return randomExt(cmd)(r)
			}
		},
	},
}

func plain(cmd uint32) func(*rand.Rand) (*dmsg.Msg, any) {
	return func(*rand.Rand) (*dmsg.Msg, any) { return dmsg.NewMsg(cmd), nil }
}

func randomExt(cmd uint32) func(*rand.Rand) (*dmsg.Msg, any) {
	return func(r *rand.Rand) (*dmsg.Msg, any) {
		m := dmsg.NewMsg(cmd)
		if m.Ext != nil { // nil for 64-byte headers
			fill(r, m.Ext[dmsg.BaseHeaderSize:])
		}
		return m, nil
	}
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func randomUUID(r *rand.Rand) uuid.UUID {
	var u uuid.UUID
	fill(r, u[:])
	return u
}

// randomLabel returns up to max bytes, none of them NUL.
func randomLabel(r *rand.Rand, max int) string {
	b := make([]byte, r.IntN(max+1))
	for i := range b {
		b[i] = byte(1 + r.IntN(255))
	}
	return string(b)
}

func randomConn(r *rand.Rand) dmsg.Conn {
	return dmsg.Conn{
		MediaID: randomUUID(r), PfsClid: randomUUID(r), PfsFsid: randomUUID(r),
		PeerMask: r.Uint64(), PeerType: uint8(r.Uint32()), PfsType: uint8(r.Uint32()),
		ProtoVersion: uint16(r.Uint32()), Status: r.Uint32(), Rnss: r.Uint32(),
		PfsMask: r.Uint64(), ClLabel: randomLabel(r, 127), FsLabel: randomLabel(r, 127),
		Caps: r.Uint32(), CircWindow: r.Uint32(),
	}
}

func randomSpan(r *rand.Rand) dmsg.Span {
	s := dmsg.Span{
		PfsClid: randomUUID(r), PfsFsid: randomUUID(r),
		PfsType: uint8(r.Uint32()), PeerType: uint8(r.Uint32()),
		ProtoVersion: uint16(r.Uint32()), Status: r.Uint32(), Reserved: r.Uint64(),
		Dist: r.Uint32(), Rnss: r.Uint32(),
		ClLabel: randomLabel(r, 127), FsLabel: randomLabel(r, 127),
	}
	fill(r, s.Media[:])
	return s
}

func randomVolConf(r *rand.Rand) dmsg.VolConf {
	return dmsg.VolConf{
		Copy: dmsg.VolCopy{
			CopyID: uint8(r.Uint32()), InProg: uint8(r.Uint32()), ChainTo: uint8(r.Uint32()),
			ChainFrom: uint8(r.Uint32()), Flags: uint16(r.Uint32()), Error: uint8(r.Uint32()),
			Priority: uint8(r.Uint32()), RemotePfsType: uint8(r.Uint32()), PfsClid: randomUUID(r),
			Label: randomLabel(r, 15), Path: randomLabel(r, 63),
		},
		Index: r.Uint32(), Unused: r.Uint32(), MediaID: randomUUID(r),
	}
}

// randomize gives m random flags and random values in every base header
// field a sender controls, and aux data of size aux.
func randomize(r *rand.Rand, m *dmsg.Msg, aux int) {
	m.Cmd = m.Cmd&dmsg.BaseMask | r.Uint32()&dmsg.FlagsMask
	m.Reserved02 = uint16(r.Uint32())
	m.Salt = r.Uint32()
	m.MsgID = r.Uint64()
	m.Circuit = r.Uint64()
	m.Reserved18 = r.Uint64()
	m.Error = r.Uint32()
	m.Reserved38 = r.Uint32()
	if aux > 0 || r.IntN(2) == 0 {
		b := make([]byte, aux)
		fill(r, b)
		if r.IntN(2) == 0 {
			m.SetAux(b)
		} else {
			m.Aux = b // sealed by the encoder
		}
	}
}

// auxSizes are the aux data sizes every message type is tried with, besides
// random ones.
var auxSizes = []int{0, 1, 63, 64, 65, 4096, dmsg.MaxAuxSize - 1, dmsg.MaxAuxSize}

func TestEveryMessageTypeSurvivesAnEncoderDecoderRoundTrip(t *testing.T) {
	iterations := 600
	if testing.Short() {
		iterations = 100
	}
	for k, kind := range msgKinds {
		t.Run(kind.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(k)))
			var wire bytes.Buffer
			enc := dmsg.NewEncoder(&wire)
			dec := dmsg.NewDecoder(&wire)
			for i := range iterations {
				aux := r.IntN(4 << 10)
				if i < len(auxSizes) {
					aux = auxSizes[i]
				}
				m, want := kind.build(r)
				randomize(r, m, aux)
				before := *m
				if err := enc.Encode(m); err != nil {
					t.Fatalf("message %d: Encode: %v", i, err)
				}
				if before.Header != m.Header || !bytes.Equal(before.Ext, m.Ext) {
					t.Fatalf("message %d: Encode modified the message", i)
				}
				sent := bytes.Clone(wire.Bytes())
				if len(sent) != m.EncodedSize() {
					t.Fatalf("message %d: encoded %d bytes, EncodedSize says %d", i, len(sent), m.EncodedSize())
				}
				got, err := dec.Decode()
				if err != nil {
					t.Fatalf("message %d (%s, %d aux bytes): Decode: %v", i, dmsg.CmdString(m.Cmd), aux, err)
				}
				if seq := got.Salt & 0xFF; seq != uint32(i%256) {
					t.Fatalf("message %d: sequence %d", i, seq)
				}
				expect := *m
				expect.Salt = got.Salt
				expect.HdrCRC = got.HdrCRC
				expect.AuxBytes = uint32(aux)
				expect.AuxCRC = paddedCRC(m.Aux)
				if diff := sameMsg(got, &expect); diff != "" {
					t.Fatalf("message %d: %s", i, diff)
				}
				if kind.typed != nil {
					body, err := kind.typed(got)
					if err != nil {
						t.Fatalf("message %d: typed body: %v", i, err)
					}
					if body != want {
						t.Fatalf("message %d: typed body\n got %+v\nwant %+v", i, body, want)
					}
				}
				// AppendMsg with the same salt is the same encoding.
				if again := encode(t, m, got.Salt); !bytes.Equal(again, sent) {
					t.Fatalf("message %d: AppendMsg differs from Encode at byte %d", i, firstDiff(again, sent))
				}
			}
			if wire.Len() != 0 || dec.Buffered() != 0 {
				t.Errorf("%d bytes left over", wire.Len()+dec.Buffered())
			}
		})
	}
}

// paddedCRC is aux_crc computed the way docs/PROTOCOL.md 1.4 defines it.
func paddedCRC(aux []byte) uint32 {
	if len(aux) == 0 {
		return 0
	}
	return dmsg.CRC(append(bytes.Clone(aux), make([]byte, dmsg.AlignUp(len(aux))-len(aux))...))
}

func TestEncodingRefusesMessagesBeyondTheLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *dmsg.Msg
		want error
	}{
		{"header size 0", &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing &^ dmsg.SizeMask}}, dmsg.ErrHeaderSize},
		{"header size 33", &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing&^dmsg.SizeMask | 33}}, dmsg.ErrHeaderSize},
		{"aux of 1 MiB + 1", &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.DbgShell}, Aux: make([]byte, dmsg.MaxAuxSize+1)}, dmsg.ErrAuxSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := dmsg.NewEncoder(&buf).Encode(tc.m); !errors.Is(err, tc.want) {
				t.Errorf("Encode: %v, want %v", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Encode wrote %d bytes", buf.Len())
			}
			if b, err := dmsg.AppendMsg([]byte("x"), tc.m); !errors.Is(err, tc.want) || string(b) != "x" {
				t.Errorf("AppendMsg: %q, %v, want %v", b, err, tc.want)
			}
		})
	}
}

func TestLabelsAreTruncatedTo127Bytes(t *testing.T) {
	long := strings.Repeat("abcdefgh", 32) // 256 bytes
	for _, tc := range []struct {
		name, label, want string
	}{
		{"empty", "", ""},
		{"one byte", "x", "x"},
		{"127 bytes fit", long[:127], long[:127]},
		{"128 bytes lose the last", long[:128], long[:127]},
		{"256 bytes keep the first 127", long, long[:127]},
		{"a NUL ends the label", "synth\x00pfs", "synth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dmsg.Conn{ClLabel: tc.label, FsLabel: tc.label}
			got, err := dmsg.NewConnMsg(0, &c, false).Conn()
			if err != nil || got.ClLabel != tc.want || got.FsLabel != tc.want {
				t.Errorf("LNK_CONN labels %q, %q (%v), want %q", got.ClLabel, got.FsLabel, err, tc.want)
			}
			got, err = dmsg.NewConnMsg(0, &c, true).Conn()
			if err != nil || got.FsLabel != tc.want {
				t.Errorf("LNK_CONN(v2) label %q (%v), want %q", got.FsLabel, err, tc.want)
			}
			s := dmsg.Span{ClLabel: tc.label, FsLabel: tc.label}
			gs, err := dmsg.NewSpanMsg(0, &s).Span()
			if err != nil || gs.ClLabel != tc.want || gs.FsLabel != tc.want {
				t.Errorf("LNK_SPAN labels %q, %q (%v), want %q", gs.ClLabel, gs.FsLabel, err, tc.want)
			}
		})
	}
	t.Run("the volume copy label keeps 15 bytes and the path 63", func(t *testing.T) {
		v := dmsg.VolConf{Copy: dmsg.VolCopy{Label: long, Path: long}}
		got, err := dmsg.NewVolConfMsg(0, &v).VolConf()
		if err != nil || got.Copy.Label != long[:15] || got.Copy.Path != long[:63] {
			t.Errorf("label %q path %q (%v)", got.Copy.Label, got.Copy.Path, err)
		}
	})
	t.Run("a received label without a NUL is cut at byte 127", func(t *testing.T) {
		m := dmsg.NewMsg(dmsg.LnkSpan)
		for i := 0xB0; i < 0x1B0; i++ {
			m.Ext[i] = 'a' // cl_label and fs_label with no NUL at all
		}
		s, err := m.Span()
		if err != nil || s.ClLabel != strings.Repeat("a", 127) || s.FsLabel != strings.Repeat("a", 127) {
			t.Errorf("labels %q, %q (%v)", s.ClLabel, s.FsLabel, err)
		}
	})
}

func TestUUIDsTravelInDragonFlyByteOrder(t *testing.T) {
	// docs/PROTOCOL.md 1.5.
	wire := []byte{0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x88, 0x77, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00}
	u := uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00")
	for _, tc := range []struct {
		name string
		msg  func() *dmsg.Msg
		offs []int
		read func(*dmsg.Msg) ([]uuid.UUID, error)
	}{
		{
			"LNK_CONN media_id, pfs_clid and pfs_fsid",
			func() *dmsg.Msg { return dmsg.NewConnMsg(0, &dmsg.Conn{MediaID: u, PfsClid: u, PfsFsid: u}, false) },
			[]int{0x40, 0x50, 0x60},
			func(m *dmsg.Msg) ([]uuid.UUID, error) {
				c, err := m.Conn()
				return []uuid.UUID{c.MediaID, c.PfsClid, c.PfsFsid}, err
			},
		},
		{
			"LNK_CONN(v2) media_id and peer_id",
			func() *dmsg.Msg { return dmsg.NewConnMsg(0, &dmsg.Conn{MediaID: u, PfsFsid: u}, true) },
			[]int{0x40, 0x50},
			func(m *dmsg.Msg) ([]uuid.UUID, error) {
				c, err := m.Conn()
				return []uuid.UUID{c.MediaID, c.PfsFsid}, err
			},
		},
		{
			"LNK_SPAN pfs_clid and pfs_fsid",
			func() *dmsg.Msg { return dmsg.NewSpanMsg(0, &dmsg.Span{PfsClid: u, PfsFsid: u}) },
			[]int{0x40, 0x50},
			func(m *dmsg.Msg) ([]uuid.UUID, error) {
				s, err := m.Span()
				return []uuid.UUID{s.PfsClid, s.PfsFsid}, err
			},
		},
		{
			"LNK_VOLCONF copy pfs_clid and mediaid",
			func() *dmsg.Msg {
				return dmsg.NewVolConfMsg(0, &dmsg.VolConf{Copy: dmsg.VolCopy{PfsClid: u}, MediaID: u})
			},
			[]int{0x60, 0xC8},
			func(m *dmsg.Msg) ([]uuid.UUID, error) {
				v, err := m.VolConf()
				return []uuid.UUID{v.Copy.PfsClid, v.MediaID}, err
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg()
			for _, off := range tc.offs {
				if got := m.Ext[off : off+16]; !bytes.Equal(got, wire) {
					t.Errorf("marshalled at %#x: % x, want % x", off, got, wire)
				}
			}
			// And a message carrying the wire bytes reads back as u.
			in := dmsg.NewMsg(m.Cmd)
			copy(in.Ext, m.Ext)
			for _, off := range tc.offs {
				copy(in.Ext[off:], wire)
			}
			ids, err := tc.read(in)
			if err != nil {
				t.Fatal(err)
			}
			for i, id := range ids {
				if id != u || id.String() != "11223344-5566-7788-99aa-bbccddeeff00" {
					t.Errorf("uuid %d reads as %s, want %s", i, id, u)
				}
			}
		})
	}
}

// A message built without a full extended header reads as if the rest were
// zero, and reading it writes nothing: several goroutines may read one
// message (for example a span relayed to several links).
func TestTypedBodiesOnlyReadTheMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  uint32
		read func(*dmsg.Msg) (any, error)
		zero any
	}{
		{"LNK_CONN", dmsg.LnkConn, func(m *dmsg.Msg) (any, error) { return m.Conn() }, dmsg.Conn{}},
		{"LNK_CONN(v2)", dmsg.LnkConnV2, func(m *dmsg.Msg) (any, error) { return m.Conn() }, dmsg.Conn{}},
		{"LNK_SPAN", dmsg.LnkSpan, func(m *dmsg.Msg) (any, error) { return m.Span() }, dmsg.Span{}},
		{"LNK_CIRC", dmsg.LnkCirc, func(m *dmsg.Msg) (any, error) { return m.Circ() }, dmsg.Circ{}},
		{"LNK_CREDIT", dmsg.LnkCredit, func(m *dmsg.Msg) (any, error) { return m.Credit() }, dmsg.Credit{}},
		{"LNK_VOLCONF", dmsg.LnkVolConf, func(m *dmsg.Msg) (any, error) { return m.VolConf() }, dmsg.VolConf{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ext := range [][]byte{nil, make([]byte, 64), make([]byte, 100)} {
				m := &dmsg.Msg{Header: dmsg.Header{Cmd: tc.cmd}, Ext: ext}
				done := make(chan any)
				for range 2 {
					go func() {
						v, err := tc.read(m)
						if err != nil {
							v = err
						}
						done <- v
					}()
				}
				for range 2 {
					if v := <-done; v != tc.zero {
						t.Errorf("Ext of %d bytes reads as %+v, want the zero body", len(ext), v)
					}
				}
				if len(m.Ext) != len(ext) {
					t.Errorf("reading the body changed Ext from %d to %d bytes", len(ext), len(m.Ext))
				}
			}
		})
	}
}
