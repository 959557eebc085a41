package dmsg_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// TestAPatchedHeaderCRCIsTheCRCOfTheHeader: a relayed base header's
// hdr_crc, patched for a new circuit, REVCIRC and salt instead of
// recomputed, is what a full CRC of the header gives.
func TestAPatchedHeaderCRCIsTheCRCOfTheHeader(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var out bytes.Buffer
	enc := dmsg.NewEncoder(&out)
	for i := range 2000 {
		m := dmsg.NewMsg(dmsg.DbgShell | uint32(rnd.Uint32()&dmsg.FlagsMask))
		m.MsgID, m.Circuit, m.Error, m.Salt = rnd.Uint64(), rnd.Uint64(), rnd.Uint32(), rnd.Uint32()
		if i%3 == 0 {
			m.SetAux(make([]byte, rnd.IntN(300)))
		}
		frame, err := dmsg.AppendMsg(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		dmsg.SetFrameCircuit(frame, rnd.Uint64(), rnd.IntN(2) == 0)
		if _, err := enc.SealFrames(frame); err != nil {
			t.Fatal(err)
		}
		hdr := bytes.Clone(frame[:dmsg.BaseHeaderSize])
		got := binary.LittleEndian.Uint32(hdr[0x3C:])
		clear(hdr[0x3C:])
		if want := dmsg.CRC(hdr); got != want {
			t.Fatalf("frame %d: patched hdr_crc %08x, the header's CRC is %08x", i, got, want)
		}
	}
}
