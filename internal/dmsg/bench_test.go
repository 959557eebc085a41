package dmsg_test

import (
	"io"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// benchMsgs are the messages the benchmarks encode and decode.
var benchMsgs = []struct {
	name string
	msg  func() *dmsg.Msg
}{
	{"PING", func() *dmsg.Msg { return dmsg.NewMsg(dmsg.LnkPing) }},
	{"CONN", func() *dmsg.Msg {
		c := dmsg.Conn{
			PfsFsid: uuid.MustParse("01020304-0506-0708-090a-0b0c0d0e0f10"), PeerMask: ^uint64(0),
			PeerType: dmsg.PeerRouter, ProtoVersion: 1, Rnss: 0x13a17f0e, FsLabel: "router-a",
		}
		m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
		m.MsgID = 0x00007f2210000ed0
		return m
	}},
	{"SPAN", func() *dmsg.Msg {
		s := dmsg.Span{
			PfsClid: uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00"),
			PfsFsid: uuid.MustParse("01020304-0506-0708-090a-0b0c0d0e0f10"),
			PfsType: 1, PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Dist: 2, Rnss: 0x1742fe1c,
			ClLabel: "synthclu", FsLabel: "synthpfs",
		}
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 0x00007f08cc001a60
		return m
	}},
	{"DBG_SHELL_aux_64B", shellMsg(64)},
	{"DBG_SHELL_aux_4KiB", shellMsg(4 << 10)},
	{"DBG_SHELL_aux_64KiB", shellMsg(64 << 10)},
	{"DBG_SHELL_aux_1MiB", shellMsg(1 << 20)},
}

// shellMsg returns a builder of a DBG_SHELL|REPLY with n bytes of text.
// The aux CRC is left to the encoder, as for a freshly built message.
func shellMsg(n int) func() *dmsg.Msg {
	return func() *dmsg.Msg {
		m := dmsg.NewMsg(dmsg.FlagReply | dmsg.DbgShell)
		m.Aux = make([]byte, n)
		for i := range m.Aux {
			m.Aux[i] = "0123456789abcdef\n"[i%17]
		}
		return m
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			m := bm.msg()
			enc := dmsg.NewEncoder(io.Discard)
			b.SetBytes(int64(m.EncodedSize()))
			b.ReportAllocs()
			for b.Loop() {
				if err := enc.Encode(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			m := bm.msg()
			r := newSeqCycler(b, m)
			dec := dmsg.NewDecoder(r)
			b.SetBytes(int64(m.EncodedSize()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// seqCycler is an endless stream of one message sent with sequence numbers
// 0, 1, ... 255, 0, ...: it holds the 256 headers, which differ, and the
// padded aux data once, which they share.
type seqCycler struct {
	hdrs [256][]byte
	aux  []byte
	seq  uint8
	off  int // within hdrs[seq], then within aux
}

func newSeqCycler(tb testing.TB, m *dmsg.Msg) *seqCycler {
	c := &seqCycler{}
	n := dmsg.HeaderBytes(m.Cmd)
	m.SetAux(m.Aux) // sealed: aux_bytes and aux_crc no longer follow m.Aux
	c.aux = encode(tb, m, 0)[n:]
	hdr := *m
	hdr.Aux = nil // the header alone, still announcing m's aux data
	for i := range c.hdrs {
		c.hdrs[i] = encode(tb, &hdr, 0x5a5a5a00|uint32(i))
		if len(c.hdrs[i]) != n {
			tb.Fatalf("header of %d bytes, want %d", len(c.hdrs[i]), n)
		}
	}
	return c
}

func (c *seqCycler) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		hdr := c.hdrs[c.seq]
		var src []byte
		if c.off < len(hdr) {
			src = hdr[c.off:]
		} else {
			src = c.aux[c.off-len(hdr):]
		}
		n := copy(p, src)
		p = p[n:]
		total += n
		c.off += n
		if c.off == len(hdr)+len(c.aux) {
			c.off = 0
			c.seq++
		}
	}
	return total, nil
}
