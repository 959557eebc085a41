package dmsg_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The relay path of a router reads a message's header with Next and takes
// the rest as bytes with Frame, then sends those bytes on another link
// with a new circuit (SetFrameCircuit) and that link's sequence
// (SealFrames). These tests hold it to the same rules as Decode and
// Encode.

// allCaptures returns every message of every capture with its wire form.
func allCaptures(tb testing.TB) []wireMsg {
	var out []wireMsg
	for _, name := range captureFiles(tb) {
		out = append(out, splitStream(tb, readCapture(tb, name))...)
	}
	return out
}

func TestFrameReturnsEveryCapturedMessageAsReceived(t *testing.T) {
	for _, name := range captureFiles(t) {
		data := readCapture(t, name)
		want := splitStream(t, data)
		d := dmsg.NewDecoder(bytes.NewReader(data))
		for i, wm := range want {
			h, err := d.Next()
			if err != nil {
				t.Fatalf("%s: message %d: Next: %v", name, i+1, err)
			}
			if *h != wm.msg.Header {
				t.Fatalf("%s: message %d: Next read %s, Decode %s", name, i+1, fmtHeader(*h), fmtHeader(wm.msg.Header))
			}
			frame, ok, err := d.Frame(1 << 20)
			if err != nil || !ok {
				t.Fatalf("%s: message %d: Frame = ok %v, %v", name, i+1, ok, err)
			}
			if !bytes.Equal(frame, wm.wire) {
				t.Fatalf("%s: message %d: frame differs from the wire at byte %d", name, i+1, firstDiff(frame, wm.wire))
			}
		}
		if _, err := d.Next(); err != io.EOF {
			t.Fatalf("%s: after the last message Next = %v, want EOF", name, err)
		}
	}
}

func TestFrameLeavesLargeAndOppositeEndianMessagesToMsg(t *testing.T) {
	small := dmsg.NewMsg(dmsg.DbgShell)
	small.SetAux(bytes.Repeat([]byte("a"), 100))
	large := dmsg.NewMsg(dmsg.DbgShell)
	large.SetAux(bytes.Repeat([]byte("b"), 5000))
	span := dmsg.NewSpanMsg(dmsg.FlagCreate, &dmsg.Span{FsLabel: "swapped", Dist: 3})
	stream := append(encode(t, small, 0), encode(t, large, 1)...)
	stream = append(stream, bigEndian(encode(t, span, 2))...)

	tests := []struct {
		name   string
		max    int
		wantOK bool
		want   *dmsg.Msg
	}{
		{"a message within the limit is a frame", 4096, true, small},
		{"a message over the limit is decoded", 4096, false, large},
		{"an opposite-endian message is decoded", 1 << 20, false, span},
	}
	d := dmsg.NewDecoder(bytes.NewReader(stream))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.Next(); err != nil {
				t.Fatal(err)
			}
			_, ok, err := d.Frame(tt.max)
			if err != nil || ok != tt.wantOK {
				t.Fatalf("Frame = ok %v, %v; want ok %v", ok, err, tt.wantOK)
			}
			if ok {
				return
			}
			m, err := d.Msg()
			if err != nil {
				t.Fatalf("Msg after a refused Frame: %v", err)
			}
			want := *tt.want
			want.Salt = m.Salt
			want.HdrCRC = m.HdrCRC
			if diff := sameMsg(m, &want); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

func TestNextSkipsTheRestOfAnUnreadMessageButStillChecksIt(t *testing.T) {
	first := dmsg.NewMsg(dmsg.DbgShell)
	first.SetAux([]byte("skipped"))
	second := dmsg.NewMsg(dmsg.LnkPing)
	good := append(encode(t, first, 0), encode(t, second, 1)...)

	d := dmsg.NewDecoder(bytes.NewReader(good))
	if _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	h, err := d.Next()
	if err != nil || h.Cmd != dmsg.LnkPing {
		t.Fatalf("second Next = %v, %v; want the LNK_PING", h, err)
	}

	bad := bytes.Clone(good)
	bad[dmsg.BaseHeaderSize] ^= 1 // first message's aux data
	d = dmsg.NewDecoder(bytes.NewReader(bad))
	if _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(); !errors.Is(err, dmsg.ErrAuxCRC) {
		t.Fatalf("Next past damaged aux data = %v, want %v", err, dmsg.ErrAuxCRC)
	}
}

func TestFrameChecksTheAuxData(t *testing.T) {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.SetAux([]byte("checked"))
	tests := []struct {
		name   string
		damage func(b []byte)
	}{
		{"damaged aux data", func(b []byte) { b[dmsg.BaseHeaderSize] ^= 0x80 }},
		{"nonzero padding covered by the CRC", func(b []byte) {
			b[len(b)-1] = 1
			le32(b[0x24:], dmsg.CRC(b[dmsg.BaseHeaderSize:]))
			reseal(b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encode(t, m, 0)
			tt.damage(b)
			d := dmsg.NewDecoder(bytes.NewReader(b))
			if _, err := d.Next(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.Frame(1 << 20); !errors.Is(err, dmsg.ErrAuxCRC) {
				t.Fatalf("Frame = %v, want %v", err, dmsg.ErrAuxCRC)
			}
		})
	}
}

func TestMsgAndFrameNeedNext(t *testing.T) {
	d := dmsg.NewDecoder(bytes.NewReader(nil))
	if _, err := d.Msg(); err == nil {
		t.Error("Msg without Next succeeded")
	}
	if _, _, err := d.Frame(1 << 20); err == nil {
		t.Error("Frame without Next succeeded")
	}
}

// TestRelayedFramesDecodeAsTheSameMessagesOnANewCircuit sends every
// captured message through the relay path, onto circuit 0x1234 with
// REVCIRC flipped, and decodes the result on a fresh stream.
func TestRelayedFramesDecodeAsTheSameMessagesOnANewCircuit(t *testing.T) {
	msgs := allCaptures(t)
	var frames []byte
	var want []*dmsg.Msg
	for _, wm := range msgs {
		if wm.wire[0] != 0x32 { // Frame hands out little-endian messages only
			continue
		}
		f := bytes.Clone(wm.wire)
		rev := wm.msg.Cmd&dmsg.FlagRevCirc == 0
		dmsg.SetFrameCircuit(f, 0x1234, rev)
		frames = append(frames, f...)
		w := *wm.msg
		w.Circuit = 0x1234
		w.Cmd ^= dmsg.FlagRevCirc
		want = append(want, &w)
	}
	var out bytes.Buffer
	enc := dmsg.NewEncoder(&out)
	// Start mid-sequence, as on a busy link.
	for range 300 {
		if err := enc.Encode(dmsg.NewMsg(dmsg.LnkPad)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := enc.SealFrames(frames)
	if err != nil || n != len(want) {
		t.Fatalf("SealFrames = %d, %v; want %d frames", n, err, len(want))
	}
	out.Write(frames)
	d := dmsg.NewDecoder(&out)
	for range 300 {
		if _, err := d.Decode(); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		m, err := d.Decode()
		if err != nil {
			t.Fatalf("relayed message %d (%s): %v", i+1, dmsg.CmdString(w.Cmd), err)
		}
		w.Salt, w.HdrCRC = m.Salt, m.HdrCRC
		if diff := sameMsg(m, w); diff != "" {
			t.Fatalf("relayed message %d: %s", i+1, diff)
		}
	}
}

func TestSealFramesRefusesACutFrameAndChangesNothing(t *testing.T) {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.SetAux(make([]byte, 100))
	whole := encode(t, m, 0)
	two := append(bytes.Clone(whole), whole...)
	for _, cut := range []int{10, len(whole) + dmsg.BaseHeaderSize, len(two) - 1} {
		b := bytes.Clone(two[:cut])
		if _, err := dmsg.NewEncoder(io.Discard).SealFrames(b); err == nil {
			t.Errorf("SealFrames of %d of %d bytes succeeded", cut, len(two))
		}
		if !bytes.Equal(b, two[:cut]) {
			t.Errorf("SealFrames of %d cut bytes changed them", cut)
		}
	}
}

func le32(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
