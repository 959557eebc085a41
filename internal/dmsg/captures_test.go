package dmsg_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// captureCounts is the number of messages in each capture file, as the
// README's section headings state them.
var captureCounts = map[string]int{
	"shell-basic.c2s.bin":          9,
	"shell-basic.s2c.bin":          17,
	"span-origin.c2s.bin":          4,
	"span-origin.s2c.bin":          4,
	"span-shell.c2s.bin":           8,
	"span-shell.s2c.bin":           13,
	"twosvc-link.c2s.bin":          4,
	"twosvc-link.s2c.bin":          4,
	"twosvc-shellA.c2s.bin":        9,
	"twosvc-shellA.s2c.bin":        16,
	"twosvc-shellB.c2s.bin":        8,
	"twosvc-shellB.s2c.bin":        13,
	"twosvc-span-origin.c2s.bin":   4,
	"twosvc-span-origin.s2c.bin":   4,
	"circuit-assert-shell.c2s.bin": 6,
	"circuit-assert-shell.s2c.bin": 10,
}

// The README says 133 messages in 16 files were checked.
const (
	captureFileCount    = 16
	captureMessageCount = 133
)

func TestEveryCaptureDecodesAndReencodesByteForByte(t *testing.T) {
	files := captureFiles(t)
	if len(files) != captureFileCount {
		t.Errorf("found %d capture files, want %d", len(files), captureFileCount)
	}
	total := 0
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			data := readCapture(t, name)
			msgs := splitStream(t, data) // checks CRCs, sequence and clean EOF
			want, ok := captureCounts[name]
			if !ok {
				t.Fatalf("capture %s is not in the README", name)
			}
			if len(msgs) != want {
				t.Errorf("decoded %d messages, want %d", len(msgs), want)
			}
			total += len(msgs)
			for i, wm := range msgs {
				if got := wm.msg.Salt & 0xFF; got != uint32(i%256) {
					t.Errorf("message %d: sequence %d, want %d", i+1, got, i%256)
				}
				re, err := dmsg.AppendMsg(nil, wm.msg)
				if err != nil {
					t.Fatalf("message %d at offset %d: AppendMsg: %v", i+1, wm.off, err)
				}
				if !bytes.Equal(re, wm.wire) {
					t.Errorf("message %d at offset %d (%s): re-encoding differs at byte %d of %d",
						i+1, wm.off, dmsg.CmdString(wm.msg.Cmd), firstDiff(re, wm.wire), len(wm.wire))
				}
			}
		})
	}
	if total != captureMessageCount {
		t.Errorf("decoded %d messages in all captures, want %d", total, captureMessageCount)
	}
}

func TestCaptureMessagesMatchTheReadmeDecodeTable(t *testing.T) {
	readme := loadReadme(t)
	if len(readme) != captureFileCount {
		t.Errorf("README describes %d files, want %d", len(readme), captureFileCount)
	}
	rows := 0
	for _, name := range captureFiles(t) {
		t.Run(name, func(t *testing.T) {
			f, ok := readme[name]
			if !ok {
				t.Fatalf("README has no decode table for %s", name)
			}
			data := readCapture(t, name)
			if len(data) != f.size {
				t.Errorf("file is %d bytes, README says %d", len(data), f.size)
			}
			if f.count != captureCounts[name] || len(f.rows) != f.count {
				t.Fatalf("README says %d messages and lists %d rows, want %d",
					f.count, len(f.rows), captureCounts[name])
			}
			msgs := splitStream(t, data)
			if len(msgs) != len(f.rows) {
				t.Fatalf("decoded %d messages, README lists %d", len(msgs), len(f.rows))
			}
			for i, row := range f.rows {
				rows++
				checkReadmeRow(t, i+1, row, msgs[i])
			}
		})
	}
	if rows != captureMessageCount {
		t.Errorf("checked %d README rows, want %d", rows, captureMessageCount)
	}
}

func checkReadmeRow(t *testing.T, n int, row readmeRow, wm wireMsg) {
	t.Helper()
	m := wm.msg
	if row.index != n {
		t.Errorf("README row %d is numbered %d", n, row.index)
	}
	if wm.off != row.off {
		t.Errorf("message %d at offset %d, README says %d", n, wm.off, row.off)
	}
	if got := dmsg.Magic; row.magic != uint64(got) {
		t.Errorf("message %d: README magic %#x", n, row.magic)
	}
	if wm.wire[0] != 0x32 || wm.wire[1] != 0x48 {
		t.Errorf("message %d: wire magic % x, want 32 48", n, wm.wire[:2])
	}
	for _, c := range []struct {
		field     string
		got, want uint64
	}{
		{"salt", uint64(m.Salt), row.salt},
		{"sequence", uint64(m.Salt & 0xFF), row.seq},
		{"msgid", m.MsgID, row.msgid},
		{"circuit", m.Circuit, row.circuit},
		{"cmd", uint64(m.Cmd), row.cmd},
		{"aux_bytes", uint64(m.AuxBytes), row.auxBytes},
		{"error", uint64(m.Error), row.errCode},
		{"hdr_crc", uint64(m.HdrCRC), row.hdrCRC},
		{"aux_crc", uint64(m.AuxCRC), row.auxCRC},
		{"reserved02", uint64(m.Reserved02), 0},
		{"link_verifier", m.Reserved18, 0},
		{"aux_descr", m.AuxDescr, 0},
		{"reserved38", uint64(m.Reserved38), 0},
		{"hdr size", uint64(dmsg.HeaderBytes(m.Cmd)), row.hdrSize},
	} {
		if c.got != c.want {
			t.Errorf("message %d (%s): %s %#x, README says %#x", n, dmsg.CmdString(m.Cmd), c.field, c.got, c.want)
		}
	}
	if got := strings.ReplaceAll(dmsg.CmdString(m.Cmd), "(v2)", ""); got != row.name {
		t.Errorf("message %d: CmdString %q, README says %q", n, got, row.name)
	}
	if uint64(len(m.Aux)) != row.auxBytes {
		t.Errorf("message %d: %d aux bytes, header says %d", n, len(m.Aux), row.auxBytes)
	}
	switch {
	case strings.HasPrefix(row.ext, "aux="):
		want, err := pyBytes(strings.TrimPrefix(row.ext, "aux="))
		if err != nil {
			t.Fatalf("message %d: README aux %q: %v", n, row.ext, err)
		}
		if !bytes.Equal(m.Aux, want) {
			t.Errorf("message %d: aux %q, README says %q", n, m.Aux, want)
		}
	case strings.HasPrefix(row.ext, "CONN "):
		want := readmeConn(t, row.ext)
		got, err := m.Conn()
		if err != nil {
			t.Fatalf("message %d: Conn: %v", n, err)
		}
		if got != want {
			t.Errorf("message %d: Conn\n got %+v\nwant %+v", n, got, want)
		}
	case strings.HasPrefix(row.ext, "SPAN "):
		want, wire := readmeSpan(t, row.ext)
		got, err := m.Span()
		if err != nil {
			t.Fatalf("message %d: Span: %v", n, err)
		}
		if got != want {
			t.Errorf("message %d: Span\n got %+v\nwant %+v", n, got, want)
		}
		if !bytes.Equal(wm.wire[0x40:0x60], wire) {
			t.Errorf("message %d: span ids on the wire % x, README says % x", n, wm.wire[0x40:0x60], wire)
		}
	case row.ext == "":
		if len(m.Aux) != 0 {
			t.Errorf("message %d: aux %q, README shows none", n, m.Aux)
		}
	default:
		t.Fatalf("message %d: README ext/aux column %q not understood", n, row.ext)
	}
}

func TestCaptureBodiesMatchKnownFacts(t *testing.T) {
	clid := uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00")
	fsid := uuid.MustParse("01020304-0506-0708-090a-0b0c0d0e0f10")
	ones := ^uint64(0)
	for _, tc := range []struct {
		file  string
		index int // 1-based, as in the README
		cmd   uint32
		check func(t *testing.T, m *dmsg.Msg)
	}{
		{"twosvc-shellB.s2c.bin", 6, dmsg.FlagCreate | dmsg.LnkSpan, wantSpan(dmsg.Span{
			PfsClid: clid, PfsFsid: fsid, PfsType: 1, PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
			Dist: 2, Rnss: 0x1742fe1c, ClLabel: "synthclu", FsLabel: "synthpfs",
		})},
		{"twosvc-shellA.s2c.bin", 8, dmsg.FlagCreate | dmsg.LnkSpan, wantSpan(dmsg.Span{
			PfsClid: clid, PfsFsid: fsid, PfsType: 1, PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
			Dist: 1, Rnss: 0x13a17f0e, ClLabel: "synthclu", FsLabel: "synthpfs",
		})},
		{"span-origin.c2s.bin", 3, dmsg.FlagCreate | dmsg.LnkSpan, wantSpan(dmsg.Span{
			PfsClid: clid, PfsFsid: fsid, PfsType: 1, PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
			Dist: 0, Rnss: 0x10000000, ClLabel: "synthclu", FsLabel: "synthpfs",
		})},
		{"span-origin.c2s.bin", 1, dmsg.FlagCreate | dmsg.LnkConnV2, wantConn(dmsg.Conn{
			PeerMask: ones, PeerType: dmsg.PeerRouter, FsLabel: "synthpeer",
		})},
		{"shell-basic.s2c.bin", 1, dmsg.FlagCreate | dmsg.LnkConnV2, wantConn(dmsg.Conn{
			PeerMask: ones, PeerType: dmsg.PeerRouter,
		})},
		{"shell-basic.c2s.bin", 3, dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans | dmsg.LnkError,
			wantError(dmsg.ErrNoSupp)},
		{"shell-basic.c2s.bin", 2, dmsg.DbgShell, wantAux("")},
		{"shell-basic.c2s.bin", 5, dmsg.DbgShell, wantAux("help\x00")},
		{"shell-basic.c2s.bin", 8, dmsg.FlagReply | dmsg.LnkPing, wantAux("")},
		{"shell-basic.s2c.bin", 3, dmsg.FlagReply | dmsg.DbgShell, wantAux("debug> \x00")},
		{"shell-basic.s2c.bin", 13, dmsg.LnkPing, wantAux("")},
		{"circuit-assert-shell.c2s.bin", 6, dmsg.FlagRevTrans | dmsg.DbgShell, wantAux("help\x00")},
	} {
		t.Run(fmt.Sprintf("%s message %d is %s", tc.file, tc.index, dmsg.CmdString(tc.cmd)), func(t *testing.T) {
			msgs := splitStream(t, readCapture(t, tc.file))
			if tc.index > len(msgs) {
				t.Fatalf("only %d messages", len(msgs))
			}
			m := msgs[tc.index-1].msg
			if m.Cmd != tc.cmd {
				t.Fatalf("cmd %#08x (%s), want %#08x", m.Cmd, dmsg.CmdString(m.Cmd), tc.cmd)
			}
			tc.check(t, m)
		})
	}
}

func wantSpan(want dmsg.Span) func(*testing.T, *dmsg.Msg) {
	return func(t *testing.T, m *dmsg.Msg) {
		got, err := m.Span()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Span\n got %+v\nwant %+v", got, want)
		}
		if got.PfsClid.String() != "11223344-5566-7788-99aa-bbccddeeff00" {
			t.Errorf("PfsClid prints as %s", got.PfsClid)
		}
		if _, err := m.Conn(); err == nil {
			t.Error("Conn() of a LNK_SPAN did not fail")
		}
	}
}

func wantConn(want dmsg.Conn) func(*testing.T, *dmsg.Msg) {
	return func(t *testing.T, m *dmsg.Msg) {
		got, err := m.Conn()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Conn\n got %+v\nwant %+v", got, want)
		}
		if _, err := m.Span(); err == nil {
			t.Error("Span() of a LNK_CONN did not fail")
		}
	}
}

func wantAux(want string) func(*testing.T, *dmsg.Msg) {
	return func(t *testing.T, m *dmsg.Msg) {
		if string(m.Aux) != want || m.AuxBytes != uint32(len(want)) {
			t.Errorf("aux %q (aux_bytes %d), want %q", m.Aux, m.AuxBytes, want)
		}
		if m.MsgID != 0 && !dmsg.Has(m.Cmd, dmsg.FlagRevTrans) {
			t.Errorf("one-way message has msgid %#x", m.MsgID)
		}
	}
}

func wantError(code uint32) func(*testing.T, *dmsg.Msg) {
	return func(t *testing.T, m *dmsg.Msg) {
		if m.Error != code {
			t.Errorf("error %s, want %s", dmsg.ErrorString(m.Error), dmsg.ErrorString(code))
		}
	}
}

func TestCaptureBodiesRemarshalToTheSameBytes(t *testing.T) {
	bodies := 0
	for _, name := range captureFiles(t) {
		for i, wm := range splitStream(t, readCapture(t, name)) {
			m := wm.msg
			n := dmsg.HeaderBytes(m.Cmd)
			fresh := make([]byte, n)
			switch dmsg.Base(m.Cmd) {
			case dmsg.LnkConn:
				c, err := m.Conn()
				if err != nil {
					t.Fatal(err)
				}
				c.MarshalTo(fresh)
			case dmsg.LnkConnV2:
				c, err := m.Conn()
				if err != nil {
					t.Fatal(err)
				}
				c.MarshalV2To(fresh)
			case dmsg.LnkSpan:
				s, err := m.Span()
				if err != nil {
					t.Fatal(err)
				}
				s.MarshalTo(fresh)
			default:
				continue
			}
			bodies++
			if !bytes.Equal(fresh[0x40:], wm.wire[0x40:n]) {
				t.Errorf("%s message %d (%s): re-marshalled body differs at offset %#x",
					name, i+1, dmsg.CmdString(m.Cmd), 0x40+firstDiff(fresh[0x40:], wm.wire[0x40:n]))
			}
		}
	}
	// 16 LNK_CONN (one per file) and 7 LNK_SPAN.
	if bodies != 23 {
		t.Errorf("re-marshalled %d typed bodies, want 23", bodies)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The README's message-by-message decode tables.

type readmeFile struct {
	size, count int
	rows        []readmeRow
}

type readmeRow struct {
	index, off                                     int
	magic, salt, seq, msgid, circuit, cmd, hdrSize uint64
	auxBytes, errCode, hdrCRC, auxCRC              uint64
	name, ext                                      string
}

var (
	readmeSection = regexp.MustCompile(`^### (\S+\.bin) \((\d+) bytes, (\d+) messages\)$`)
	readmeSalt    = regexp.MustCompile(`^(0x[0-9a-f]+) \((\d+)\)$`)
	readmeDecoded = regexp.MustCompile(`^(\S+), (\d+)B hdr$`)
)

// loadReadme parses the decode tables of the captures' README.
func loadReadme(t *testing.T) map[string]*readmeFile {
	t.Helper()
	f, err := os.Open(filepath.Join(capturesDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]*readmeFile{}
	var cur *readmeFile
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if m := readmeSection.FindStringSubmatch(text); m != nil {
			cur = &readmeFile{size: atoi(t, m[2]), count: atoi(t, m[3])}
			files[m[1]] = cur
			continue
		}
		if strings.HasPrefix(text, "### ") {
			cur = nil
		}
		if cur == nil || !strings.HasPrefix(text, "| ") {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(text, `\|`, "\x00"), "|")
		if len(cells) != 15 {
			t.Fatalf("README line %d: %d cells", line, len(cells))
		}
		cells = cells[1:14]
		for i := range cells {
			cells[i] = strings.TrimSpace(strings.ReplaceAll(cells[i], "\x00", "|"))
		}
		if _, err := strconv.Atoi(cells[0]); err != nil {
			continue // the column header
		}
		row := readmeRow{index: atoi(t, cells[0]), off: atoi(t, cells[1]), magic: num(t, cells[2])}
		sm := readmeSalt.FindStringSubmatch(cells[3])
		dm := readmeDecoded.FindStringSubmatch(cells[7])
		if sm == nil || dm == nil {
			t.Fatalf("README line %d: salt %q or decoded %q not understood", line, cells[3], cells[7])
		}
		row.salt, row.seq = num(t, sm[1]), num(t, sm[2])
		row.name, row.hdrSize = dm[1], num(t, dm[2])
		row.msgid, row.circuit, row.cmd = num(t, cells[4]), num(t, cells[5]), num(t, cells[6])
		row.auxBytes, row.errCode = num(t, cells[8]), num(t, cells[9])
		row.hdrCRC, row.auxCRC = num(t, strings.TrimSuffix(cells[10], " ok")), num(t, strings.TrimSuffix(cells[11], " ok"))
		row.ext = cells[12]
		cur.rows = append(cur.rows, row)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return files
}

// readmeConn builds the Conn a README "CONN k=v ..." cell describes. The
// README says every other field of the C peer's LNK_CONN is zero.
func readmeConn(t *testing.T, cell string) dmsg.Conn {
	t.Helper()
	kv := fields(t, strings.TrimPrefix(cell, "CONN "))
	if kv["media_id/peer_id"] != "zero" {
		t.Fatalf("CONN cell %q: media_id/peer_id not zero", cell)
	}
	return dmsg.Conn{
		PeerType: uint8(num(t, kv["peer_type"])),
		PeerMask: num(t, kv["peer_mask"]),
		Rnss:     uint32(num(t, kv["rnss"])),
		FsLabel:  kv["label"],
	}
}

// readmeSpan builds the Span a README "SPAN k=v ..." cell describes, and
// returns the wire bytes of its two ids. The README says status, reserved
// and media are zero in every span.
func readmeSpan(t *testing.T, cell string) (dmsg.Span, []byte) {
	t.Helper()
	kv := fields(t, strings.TrimPrefix(cell, "SPAN "))
	clid, err1 := hex.DecodeString(kv["peer_id"])
	fsid, err2 := hex.DecodeString(kv["pfs_id"])
	if err1 != nil || err2 != nil || len(clid) != 16 || len(fsid) != 16 {
		t.Fatalf("SPAN cell %q: bad ids", cell)
	}
	return dmsg.Span{
		PfsClid:      wireUUID(clid),
		PfsFsid:      wireUUID(fsid),
		PfsType:      uint8(num(t, kv["pfs_type"])),
		PeerType:     uint8(num(t, kv["peer_type"])),
		ProtoVersion: uint16(num(t, kv["proto_version"])),
		Dist:         uint32(num(t, kv["dist"])),
		Rnss:         uint32(num(t, kv["rnss"])),
		ClLabel:      kv["peer_label"],
		FsLabel:      kv["pfs_label"],
	}, append(clid, fsid...)
}

// wireUUID converts DragonFly's struct uuid bytes to a uuid.UUID
// (docs/PROTOCOL.md 1.5: the first three fields are little-endian on the wire).
func wireUUID(b []byte) uuid.UUID {
	var u uuid.UUID
	copy(u[:], b)
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5], u[6], u[7] = b[5], b[4], b[7], b[6]
	return u
}

// fields splits `k=v k='quoted v' ...`, dropping a "(NAME)" after numbers.
func fields(t *testing.T, s string) map[string]string {
	t.Helper()
	kv := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			t.Fatalf("no '=' in %q", s)
		}
		var v string
		if strings.HasPrefix(rest, "'") {
			end := strings.Index(rest[1:], "'")
			if end < 0 {
				t.Fatalf("unterminated quote in %q", rest)
			}
			v, rest = rest[1:1+end], rest[2+end:]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
			if i := strings.IndexByte(v, '('); i > 0 {
				v = v[:i]
			}
		}
		kv[k] = v
		s = strings.TrimSpace(rest)
	}
	return kv
}

// pyBytes decodes the Python bytes literal b'...' the README uses.
func pyBytes(lit string) ([]byte, error) {
	if !strings.HasPrefix(lit, "b'") || !strings.HasSuffix(lit, "'") {
		return nil, fmt.Errorf("not a b'' literal")
	}
	s := lit[2 : len(lit)-1]
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i++; i == len(s) {
			return nil, fmt.Errorf("trailing backslash")
		}
		switch s[i] {
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'r':
			out = append(out, '\r')
		case '\\', '\'', '"':
			out = append(out, s[i])
		case 'x':
			if i+3 > len(s) {
				return nil, fmt.Errorf("short \\x escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, err
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("escape \\%c", s[i])
		}
	}
	return out, nil
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("README: %v", err)
	}
	return n
}

func num(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		t.Fatalf("README: %v", err)
	}
	return n
}
