package dmsg_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// testKey is a deterministic Ed25519 key, so fuzz inputs reproduce.
func testKey(n byte) ed25519.PrivateKey {
	seed := bytes.Repeat([]byte{n + 1}, ed25519.SeedSize)
	return ed25519.NewKeyFromSeed(seed)
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func nodeSpan(label string) dmsg.Span {
	s := dmsg.Span{
		PfsClid: uuid.NewSHA1(uuid.NameSpaceOID, []byte("default")), PfsFsid: uuid.NewSHA1(uuid.NameSpaceOID, []byte(label)),
		PeerType: dmsg.PeerRouter, ProtoVersion: 1, Rnss: 0x1234abcd, ClLabel: "default", FsLabel: label,
	}
	s.Media[3] = 7
	return s
}

// path builds the record a router at the end of a line of keys[0] (the
// origin) .. keys[n] receives: keys[i] sent it to keys[i+1]. It returns
// the record and the span as the last router holds it.
func path(seq uint64, s dmsg.Span, keys ...ed25519.PrivateKey) ([]byte, dmsg.Span) {
	rec := dmsg.SignSpan(keys[0], seq, &s)
	for i := 1; i < len(keys); i++ {
		rec = dmsg.ExtendSignedSpan(rec, pub(keys[i]), keys[i-1])
	}
	s.Dist = uint32(len(keys) - 2)
	s.Rnss += 0x1000 * s.Dist // relays add their rnss; the record does not cover it
	return rec, s
}

func check(rec []byte, s dmsg.Span, me, from ed25519.PrivateKey) error {
	r, err := dmsg.ParseSignedSpan(rec)
	if err != nil {
		return err
	}
	return r.Check(&s, pub(me), pub(from))
}

func TestASignedAdvertisementVerifiesAlongTheWayItCame(t *testing.T) {
	o, a, b, c := testKey(0), testKey(1), testKey(2), testKey(3)
	for n := 1; n <= 3; n++ {
		keys := []ed25519.PrivateKey{o, a, b, c}[:n+1]
		rec, s := path(42, nodeSpan("node-o"), keys...)
		if len(rec) != dmsg.SignedOriginSize+n*dmsg.SignedHopSize {
			t.Fatalf("%d hops: %d bytes", n, len(rec))
		}
		if err := check(rec, s, keys[n], keys[n-1]); err != nil {
			t.Fatalf("%d hops: %v", n, err)
		}
		r, _ := dmsg.ParseSignedSpan(rec)
		if r.Seq != 42 || r.Hops() != n || !r.Origin.Equal(pub(o)) || r.Node.FsLabel != "node-o" || r.Node.Rnss != 0x1234abcd {
			t.Fatalf("%d hops: parsed %+v", n, r)
		}
	}
}

func TestASignedAdvertisementIsRefusedWhen(t *testing.T) {
	o, a, b, x := testKey(0), testKey(1), testKey(2), testKey(9)
	rec, s := path(1, nodeSpan("node-o"), o, a, b) // o -> a -> b, held by b at dist 1
	tests := []struct {
		name string
		rec  []byte
		s    func(s dmsg.Span) dmsg.Span
		me   ed25519.PrivateKey
		from ed25519.PrivateKey
	}{
		{"it is held at another dist than its hops say", rec, func(s dmsg.Span) dmsg.Span { s.Dist = 0; return s }, b, a},
		{"it names another node", rec, func(s dmsg.Span) dmsg.Span { s.FsLabel = "node-x"; return s }, b, a},
		{"it names another node id", rec, func(s dmsg.Span) dmsg.Span { s.PfsFsid = uuid.New(); return s }, b, a},
		{"it names another cluster", rec, func(s dmsg.Span) dmsg.Span { s.ClLabel = "other"; return s }, b, a},
		{"its peer type differs", rec, func(s dmsg.Span) dmsg.Span { s.PeerType = dmsg.PeerHammer2; return s }, b, a},
		{"its media differ", rec, func(s dmsg.Span) dmsg.Span { s.Media[0] = 1; return s }, b, a},
		{"it was sent to another router", rec, same, x, a},
		{"it did not come from the link's peer", rec, same, b, x},
		// x holds it farther away and cuts the path short to look nearer:
		// the hop after a can only be a's to sign.
		{"a router replays it one hop nearer than it is", mustExtend(t, rec[:len(rec)-dmsg.SignedHopSize], x, b),
			func(s dmsg.Span) dmsg.Span { s.Dist = 1; return s }, b, x},
		{"it loops back through a router", mustExtend(t, mustExtend(t, rec, a, b), b, a),
			func(s dmsg.Span) dmsg.Span { s.Dist = 3; return s }, b, a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(tt.rec, tt.s(s), tt.me, tt.from)
			if !errors.Is(err, dmsg.ErrSignedSpan) {
				t.Fatalf("got %v, want a signed advertisement error", err)
			}
		})
	}
	// At dist 0 the origin's rnss is signed too.
	rec0, s0 := path(1, nodeSpan("node-o"), o, a)
	s0.Rnss++
	if err := check(rec0, s0, a, o); err == nil {
		t.Fatal("a changed origin rnss passed")
	}
}

func same(s dmsg.Span) dmsg.Span { return s }

// mustExtend appends a hop to `to`, signed by signer.
func mustExtend(t *testing.T, rec []byte, signer, to ed25519.PrivateKey) []byte {
	t.Helper()
	return dmsg.ExtendSignedSpan(rec, pub(to), signer)
}

func TestEveryByteOfASignedAdvertisementIsCovered(t *testing.T) {
	o, a, b := testKey(0), testKey(1), testKey(2)
	rec, s := path(7, nodeSpan("node-o"), o, a, b)
	for i := range rec {
		mut := bytes.Clone(rec)
		mut[i] ^= 0x01
		if err := check(mut, s, b, a); err == nil {
			t.Fatalf("flipping a bit of byte %#x left the record valid", i)
		}
	}
}

func TestASignedAdvertisementOfTheWrongShapeDoesNotParse(t *testing.T) {
	o, a := testKey(0), testKey(1)
	rec, _ := path(7, nodeSpan("node-o"), o, a)
	long := bytes.Clone(rec)
	for range dmsg.SignedMaxHops {
		long = append(long, make([]byte, dmsg.SignedHopSize)...)
	}
	reserved := bytes.Clone(rec)
	binary.LittleEndian.PutUint32(reserved[4:], 1)
	for name, b := range map[string][]byte{
		"empty":                   nil,
		"an origin without a hop": rec[:dmsg.SignedOriginSize],
		"a partial hop":           rec[:len(rec)-1],
		"more hops than dist 16":  long,
		"another magic":           append([]byte("DSA2"), rec[4:]...),
		"reserved bytes set":      reserved,
	} {
		if _, err := dmsg.ParseSignedSpan(b); !errors.Is(err, dmsg.ErrSignedSpan) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// The byte layout of docs/PROTOCOL.md 11.3, field by field.
func TestTheSignedAdvertisementLayout(t *testing.T) {
	o, a := testKey(0), testKey(1)
	s := nodeSpan("node-o")
	rec := dmsg.ExtendSignedSpan(dmsg.SignSpan(o, 0x0102030405060708, &s), pub(a), o)
	le := binary.LittleEndian
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"magic @0x000", string(rec[0:4]) == "DSA1"},
		{"reserved @0x004", le.Uint32(rec[4:]) == 0},
		{"seq @0x008", le.Uint64(rec[8:]) == 0x0102030405060708},
		{"pfs_clid @0x010 as struct uuid", rec[0x10] == s.PfsClid[3] && rec[0x13] == s.PfsClid[0] && rec[0x18] == s.PfsClid[8]},
		{"pfs_fsid @0x020", rec[0x20] == s.PfsFsid[3]},
		{"pfs_type @0x030", rec[0x30] == s.PfsType},
		{"peer_type @0x031", rec[0x31] == dmsg.PeerRouter},
		{"proto_version @0x032", le.Uint16(rec[0x32:]) == 1},
		{"rnss @0x034", le.Uint32(rec[0x34:]) == 0x1234abcd},
		{"media @0x038", rec[0x38+3] == 7},
		{"cl_label @0x070", string(rec[0x70:0x77]) == "default" && rec[0x77] == 0},
		{"fs_label @0x0F0", string(rec[0xF0:0xF6]) == "node-o" && rec[0xF6] == 0},
		{"origin key @0x170", bytes.Equal(rec[0x170:0x190], pub(o))},
		{"origin signature @0x190", ed25519.Verify(pub(o), append([]byte("dmsgd/signed-span/v1/origin\x00"), rec[:0x190]...), rec[0x190:0x1D0])},
		{"hop 1 to @0x1D0", bytes.Equal(rec[0x1D0:0x1F0], pub(a))},
		{"hop 1 signature @0x1F0", ed25519.Verify(pub(o), append([]byte("dmsgd/signed-span/v1/hop\x00"), rec[:0x1F0]...), rec[0x1F0:0x230])},
		{"size", len(rec) == 0x230},
	} {
		if !f.ok {
			t.Errorf("%s: wrong", f.name)
		}
	}
}

// FuzzSignedSpan feeds arbitrary records to the parser and the verifier,
// which must never panic and never accept what no key signed; and it
// mutates one byte of a valid record, which must then fail to verify.
func FuzzSignedSpan(f *testing.F) {
	o, a, b := testKey(0), testKey(1), testKey(2)
	rec, _ := path(3, nodeSpan("node-o"), o, a, b)
	f.Add(rec, uint8(2), uint16(0), uint8(0))
	f.Add(rec, uint8(1), uint16(0x1D0), uint8(0x80))
	f.Add([]byte("DSA1"), uint8(0), uint16(5), uint8(1))
	f.Add(make([]byte, dmsg.SignedOriginSize+dmsg.SignedHopSize), uint8(0), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, hops uint8, pos uint16, xor uint8) {
		if r, err := dmsg.ParseSignedSpan(data); err == nil {
			s := r.Node
			s.Dist = uint32(r.Hops() - 1)
			me := r.To(r.Hops() - 1)
			// Whatever the bytes, only a record our test keys signed can
			// pass, and random data is not one.
			if err := r.Check(&s, me, r.Signer(r.Hops()-1)); err == nil && !signedByTestKeys(r) {
				t.Fatalf("a record no test key signed verified: % x", data)
			}
		} else if !errors.Is(err, dmsg.ErrSignedSpan) {
			t.Fatalf("parse error %v is not ErrSignedSpan", err)
		}

		n := int(hops%4) + 1
		keys := []ed25519.PrivateKey{o, a, b, testKey(3), testKey(4)}[:n+1]
		good, s := path(uint64(pos), nodeSpan(fmt.Sprintf("n%d", xor)), keys...)
		if err := check(good, s, keys[n], keys[n-1]); err != nil {
			t.Fatalf("a valid record of %d hops failed: %v", n, err)
		}
		if xor != 0 {
			good[int(pos)%len(good)] ^= xor
			if err := check(good, s, keys[n], keys[n-1]); err == nil {
				t.Fatalf("a record with byte %d changed still verified", int(pos)%len(good))
			}
		}
	})
}

// signedByTestKeys reports whether every key on r's path is one of the
// deterministic test keys, the only ones a valid record can come from.
func signedByTestKeys(r *dmsg.SignedSpan) bool {
	known := func(k ed25519.PublicKey) bool {
		for i := range byte(16) {
			if k.Equal(pub(testKey(i))) {
				return true
			}
		}
		return false
	}
	if !known(r.Origin) {
		return false
	}
	for i := range r.Hops() {
		if !known(r.To(i)) {
			return false
		}
	}
	return true
}

// What signing costs a router per relay (one hop signed) and per received
// advertisement (every signature of its path checked), next to decoding
// the LNK_SPAN message that carries it, measured in the same run.
func BenchmarkSignedSpan(b *testing.B) {
	keys := []ed25519.PrivateKey{testKey(0), testKey(1), testKey(2), testKey(3), testKey(4)}
	s := nodeSpan("node-o")
	var stream bytes.Buffer
	enc := dmsg.NewEncoder(&stream)
	const perStream = 1024
	for i := range perStream {
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = uint64(i + 1)
		if err := enc.Encode(m); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("decode LNK_SPAN (baseline)", func(b *testing.B) {
		var d *dmsg.Decoder
		i := 0
		for b.Loop() {
			if i%perStream == 0 {
				d = dmsg.NewDecoder(bytes.NewReader(stream.Bytes()))
			}
			i++
			m, err := d.Decode()
			if err != nil {
				b.Fatal(err)
			}
			m.Span()
			m.Release()
		}
	})
	b.Run("relay: sign one hop", func(b *testing.B) {
		rec, _ := path(1, s, keys[:2]...)
		for b.Loop() {
			dmsg.ExtendSignedSpan(rec, pub(keys[2]), keys[1])
		}
	})
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("receive: check %d hops", n), func(b *testing.B) {
			rec, held := path(1, s, keys[:n+1]...)
			for b.Loop() {
				if err := check(rec, held, keys[n], keys[n-1]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A hop appended now and signed later (off the sender's locks) is the hop
// ExtendSignedSpan makes at once, and the record it leaves verifies; the
// signature is deterministic, so one copied from an earlier signing of the
// same bytes is the same.
func TestAHopAppendedThenSignedIsTheHopExtendMakes(t *testing.T) {
	o, a, b := testKey(0), testKey(1), testKey(2)
	rec, _ := path(7, nodeSpan("node-o"), o, a)
	orig := bytes.Clone(rec)
	want := dmsg.ExtendSignedSpan(rec, pub(b), a)
	_, s := path(7, nodeSpan("node-o"), o, a, b)

	got := dmsg.AppendHop(rec, pub(b))
	if len(got) != len(want) || !bytes.Equal(got[:len(got)-ed25519.SignatureSize], want[:len(want)-ed25519.SignatureSize]) {
		t.Fatal("AppendHop's record differs from ExtendSignedSpan's before the signature")
	}
	if check(got, s, b, a) == nil {
		t.Fatal("a record whose last hop is not signed yet verifies")
	}
	dmsg.SignLastHop(got, a)
	if !bytes.Equal(got, want) {
		t.Fatal("AppendHop then SignLastHop differs from ExtendSignedSpan")
	}
	if err := check(got, s, b, a); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec, orig) {
		t.Fatal("AppendHop modified the record it extends")
	}
}
