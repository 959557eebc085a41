package dmsg_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// capturesDir holds the golden wire captures of a real C peer.
const capturesDir = "../../testdata/dmsg-c-peer"

// captureFiles returns the names of every capture file, sorted.
func captureFiles(tb testing.TB) []string {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(capturesDir, "*.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(paths) == 0 {
		tb.Fatalf("no capture files in %s", capturesDir)
	}
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = filepath.Base(p)
	}
	return names
}

func readCapture(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(capturesDir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// wireMsg is one message of a stream together with where it sat.
type wireMsg struct {
	off  int
	wire []byte
	msg  *dmsg.Msg
}

// splitStream decodes every message of data, which must be a complete,
// valid stream starting at sequence 0, and reports where each one was. It
// checks that the decoder consumed exactly the bytes each message occupies.
func splitStream(tb testing.TB, data []byte) []wireMsg {
	tb.Helper()
	r := bytes.NewReader(data)
	d := dmsg.NewDecoder(r)
	var out []wireMsg
	off := 0
	for {
		m, err := d.Decode()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("message %d at offset %d: %v", len(out)+1, off, err)
		}
		n := m.EncodedSize()
		consumed := len(data) - r.Len() - d.Buffered()
		if consumed != off+n {
			tb.Fatalf("message %d at offset %d: decoder consumed up to %d, message ends at %d",
				len(out)+1, off, consumed, off+n)
		}
		out = append(out, wireMsg{off: off, wire: data[off : off+n], msg: m})
		off += n
	}
	if off != len(data) {
		tb.Fatalf("clean EOF after %d of %d bytes", off, len(data))
	}
	return out
}

// encode returns the wire form of m with the given salt.
func encode(tb testing.TB, m *dmsg.Msg, salt uint32) []byte {
	tb.Helper()
	c := *m
	c.Salt = salt
	b, err := dmsg.AppendMsg(nil, &c)
	if err != nil {
		tb.Fatalf("AppendMsg(%s): %v", dmsg.CmdString(m.Cmd), err)
	}
	return b
}

// reseal recomputes the hdr_crc of the message at the start of b, in the
// byte order its magic declares, after a test has edited the header.
func reseal(b []byte) {
	var o binary.ByteOrder = binary.LittleEndian
	if binary.LittleEndian.Uint16(b) == dmsg.MagicSwapped {
		o = binary.BigEndian
	}
	n := dmsg.HeaderBytes(o.Uint32(b[0x20:]))
	if n == 0 || n > len(b) {
		n = dmsg.BaseHeaderSize
	}
	clear(b[0x3C:0x40])
	o.PutUint32(b[0x3C:], dmsg.CRC(b[:n]))
}

// sameMsg reports how got differs from want in the fields a decoded message
// carries: the base header, the extended header past the base header and
// the aux data. It returns "" when they agree.
func sameMsg(got, want *dmsg.Msg) string {
	if got.Header != want.Header {
		return "header " + fmtHeader(got.Header) + ", want " + fmtHeader(want.Header)
	}
	n := dmsg.HeaderBytes(want.Cmd)
	if !bytes.Equal(extOf(got, n), extOf(want, n)) {
		return "extended headers differ"
	}
	if !bytes.Equal(got.Aux, want.Aux) {
		return "aux data differs"
	}
	return ""
}

// extOf returns the command's own part of m's extended header, zero
// extended to n bytes as the encoder would send it.
func extOf(m *dmsg.Msg, n int) []byte {
	e := make([]byte, n)
	if len(m.Ext) > dmsg.BaseHeaderSize {
		copy(e[dmsg.BaseHeaderSize:], m.Ext[dmsg.BaseHeaderSize:min(len(m.Ext), n)])
	}
	return e[dmsg.BaseHeaderSize:]
}

func fmtHeader(h dmsg.Header) string {
	return fmt.Sprintf("%s%+v", dmsg.CmdString(h.Cmd), h)
}

// isFramingError reports whether err is one of the errors a Decoder may
// return for bad input.
func isFramingError(err error) bool {
	for _, e := range []error{
		io.EOF, io.ErrUnexpectedEOF,
		dmsg.ErrBadMagic, dmsg.ErrHeaderSize, dmsg.ErrAuxSize, dmsg.ErrHeaderCRC,
		dmsg.ErrAuxCRC, dmsg.ErrSequence, dmsg.ErrAuxDescr,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
