package dmsg

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// A signed router advertisement (docs/PROTOCOL.md 11.3) is the aux data of
// a LNK_SPAN CREATE on a link where both LNK_CONNs set CapSignedSpans. It
// is an origin block, signed once by the node's own Ed25519 key, followed
// by one hop per link the advertisement crossed: the key of the router it
// was sent to, signed by the key that sent it over everything before. A
// receiver can therefore check who made the advertisement and that the
// path it came by is one the routers on it really sent, hop by hop, up to
// the link it arrived on.
//
// The record is always little-endian, whatever the message's magic says:
// it is signed bytes, relayed unchanged except for the hop each router
// appends.

// Sizes of a signed advertisement record.
const (
	SignedOriginSize = 0x1D0 // the origin block
	SignedHopSize    = 96    // one hop: the receiver's key and the sender's signature
	// SignedMaxHops bounds a record: a span is relayed only below dist 16
	// and a span held at dist d has crossed d+1 links.
	SignedMaxHops = 17
	// SignedMaxSize is the largest valid record.
	SignedMaxSize = SignedOriginSize + SignedMaxHops*SignedHopSize
)

// signedMagic starts every record: "DSA1", dmsgd signed advertisement,
// version 1.
var signedMagic = [4]byte{'D', 'S', 'A', '1'}

// Record offsets (docs/PROTOCOL.md 11.3).
const (
	sigMagic     = 0x000
	sigReserved  = 0x004
	sigSeq       = 0x008
	sigPfsClid   = 0x010
	sigPfsFsid   = 0x020
	sigPfsType   = 0x030
	sigPeerType  = 0x031
	sigProtoVer  = 0x032
	sigRnss      = 0x034
	sigMedia     = 0x038
	sigClLabel   = 0x070
	sigFsLabel   = 0x0F0
	sigOriginKey = 0x170
	sigOriginSig = 0x190
	hopTo        = 0x00
	hopSig       = 0x20
)

// Domain separation: a signature made for one purpose never verifies for
// another, nor for anything else signed with the node's TLS key.
var (
	originDomain = []byte("dmsgd/signed-span/v1/origin\x00")
	hopDomain    = []byte("dmsgd/signed-span/v1/hop\x00")
)

// ErrSignedSpan is wrapped by every error about a signed advertisement.
var ErrSignedSpan = errors.New("signed advertisement")

func sigErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSignedSpan, fmt.Sprintf(format, args...))
}

// SignSpan returns the origin block of a signed advertisement of s, the
// node's own span as it sends it (dist 0, its rnss), signed with priv.
// seq must grow every time the node signs its advertisement anew, so that
// receivers can tell a replay of an older one.
func SignSpan(priv ed25519.PrivateKey, seq uint64, s *Span) []byte {
	b := make([]byte, SignedOriginSize, SignedOriginSize+SignedHopSize)
	copy(b[sigMagic:], signedMagic[:])
	le.PutUint64(b[sigSeq:], seq)
	putUUID(b[sigPfsClid:], s.PfsClid)
	putUUID(b[sigPfsFsid:], s.PfsFsid)
	b[sigPfsType] = s.PfsType
	b[sigPeerType] = s.PeerType
	le.PutUint16(b[sigProtoVer:], s.ProtoVersion)
	le.PutUint32(b[sigRnss:], s.Rnss)
	copy(b[sigMedia:sigMedia+len(s.Media)], s.Media[:])
	putLabel(b[sigClLabel:sigClLabel+LabelSize], s.ClLabel)
	putLabel(b[sigFsLabel:sigFsLabel+LabelSize], s.FsLabel)
	copy(b[sigOriginKey:], priv.Public().(ed25519.PublicKey))
	copy(b[sigOriginSig:], ed25519.Sign(priv, signedMessage(originDomain, b[:sigOriginSig])))
	return b
}

// ExtendSignedSpan returns rec with one more hop: sent to the router whose
// key is to, signed with priv, the key of the router sending it. rec is
// not modified.
func ExtendSignedSpan(rec []byte, to ed25519.PublicKey, priv ed25519.PrivateKey) []byte {
	b := AppendHop(rec, to)
	SignLastHop(b, priv)
	return b
}

// AppendHop returns rec with one more hop, sent to the router whose key is
// to, whose signature is not made yet (zeros): SignLastHop makes it. The
// two halves of ExtendSignedSpan let a sender size and queue the record
// at once and sign it later, off its locks. rec is not modified.
func AppendHop(rec []byte, to ed25519.PublicKey) []byte {
	n := len(rec)
	b := make([]byte, n+SignedHopSize)
	copy(b, rec)
	copy(b[n+hopTo:], to)
	return b
}

// SignLastHop signs, with priv, the last hop of b, a record AppendHop
// made, in place.
func SignLastHop(b []byte, priv ed25519.PrivateKey) {
	copy(LastHopSig(b), ed25519.Sign(priv, signedMessage(hopDomain, b[:len(b)-ed25519.SignatureSize])))
}

// LastHopSig returns the signature bytes of the last hop of record b,
// which must hold at least one hop. Ed25519 signatures are deterministic,
// so a sender may keep the one it made for a record and a receiver key
// and copy it here instead of signing the same bytes again.
func LastHopSig(b []byte) []byte { return b[len(b)-ed25519.SignatureSize:] }

// signedMessage is what a signature covers: the domain, then the bytes.
func signedMessage(domain, b []byte) []byte {
	m := make([]byte, 0, len(domain)+len(b))
	return append(append(m, domain...), b...)
}

// SignedSpan is a parsed signed advertisement. Parsing checks only its
// shape; Check verifies it.
type SignedSpan struct {
	raw []byte
	// Seq is the origin's sequence number.
	Seq uint64
	// Node holds the advertised node's fields: everything of its span but
	// dist, status and the reserved bytes; Rnss is the origin's.
	Node Span
	// Origin is the key the node signed with.
	Origin ed25519.PublicKey
}

// ParseSignedSpan parses a record, checking its size, magic and reserved
// bytes. It keeps b; the caller must not modify it afterwards.
func ParseSignedSpan(b []byte) (*SignedSpan, error) {
	switch {
	case len(b) < SignedOriginSize+SignedHopSize:
		return nil, sigErr("%d bytes, too short for an origin and one hop", len(b))
	case len(b) > SignedMaxSize:
		return nil, sigErr("%d bytes, more than %d hops", len(b), SignedMaxHops)
	case (len(b)-SignedOriginSize)%SignedHopSize != 0:
		return nil, sigErr("%d bytes is not an origin and whole hops", len(b))
	case !bytes.Equal(b[sigMagic:sigMagic+4], signedMagic[:]):
		return nil, sigErr("bad magic % x", b[sigMagic:sigMagic+4])
	case le.Uint32(b[sigReserved:]) != 0:
		return nil, sigErr("reserved bytes are not zero")
	}
	r := &SignedSpan{raw: b, Seq: le.Uint64(b[sigSeq:]), Origin: ed25519.PublicKey(b[sigOriginKey : sigOriginKey+ed25519.PublicKeySize])}
	n := &r.Node
	n.PfsClid = getUUID(b[sigPfsClid:])
	n.PfsFsid = getUUID(b[sigPfsFsid:])
	n.PfsType = b[sigPfsType]
	n.PeerType = b[sigPeerType]
	n.ProtoVersion = le.Uint16(b[sigProtoVer:])
	n.Rnss = le.Uint32(b[sigRnss:])
	copy(n.Media[:], b[sigMedia:])
	n.ClLabel = getLabel(b[sigClLabel : sigClLabel+LabelSize])
	n.FsLabel = getLabel(b[sigFsLabel : sigFsLabel+LabelSize])
	return r, nil
}

// Bytes returns the record as received.
func (r *SignedSpan) Bytes() []byte { return r.raw }

// Hops returns the number of hops: the links the advertisement crossed.
func (r *SignedSpan) Hops() int { return (len(r.raw) - SignedOriginSize) / SignedHopSize }

func (r *SignedSpan) hop(i int) []byte {
	off := SignedOriginSize + i*SignedHopSize
	return r.raw[off : off+SignedHopSize]
}

// To returns the key of the router hop i was sent to.
func (r *SignedSpan) To(i int) ed25519.PublicKey {
	return ed25519.PublicKey(r.hop(i)[hopTo : hopTo+ed25519.PublicKeySize])
}

// Signer returns the key that signed hop i: the origin's for the first,
// the previous hop's receiver for the others.
func (r *SignedSpan) Signer(i int) ed25519.PublicKey {
	if i == 0 {
		return r.Origin
	}
	return r.To(i - 1)
}

// Check verifies r as the advertisement s received on a link from the
// router whose key is from, by the router whose key is me: r describes the
// node s advertises, it crossed exactly s.Dist+1 links, its last hop was
// sent to me by from, no key appears twice on its path, and every
// signature holds. It says nothing about whether the origin key may speak
// for the node: that is the receiver's trust to judge.
func (r *SignedSpan) Check(s *Span, me, from ed25519.PublicKey) error {
	hops := r.Hops()
	if uint64(hops) != uint64(s.Dist)+1 {
		return sigErr("%d hops for an advertisement at dist %d", hops, s.Dist)
	}
	if err := r.matches(s); err != nil {
		return err
	}
	if !r.To(hops - 1).Equal(me) {
		return sigErr("its last hop was not sent to this router")
	}
	if !r.Signer(hops - 1).Equal(from) {
		return sigErr("its last hop was not signed by the link's peer")
	}
	if err := r.distinctKeys(); err != nil {
		return err
	}
	if !ed25519.Verify(r.Origin, signedMessage(originDomain, r.raw[:sigOriginSig]), r.raw[sigOriginSig:SignedOriginSize]) {
		return sigErr("bad origin signature")
	}
	for i := range hops {
		end := SignedOriginSize + i*SignedHopSize + hopSig
		if !ed25519.Verify(r.Signer(i), signedMessage(hopDomain, r.raw[:end]), r.raw[end:end+ed25519.SignatureSize]) {
			return sigErr("bad signature on hop %d", i+1)
		}
	}
	return nil
}

// matches compares the signed node with the span's fields that a relay
// copies unchanged; at dist 0 the rnss too.
func (r *SignedSpan) matches(s *Span) error {
	n := &r.Node
	switch {
	case n.PfsClid != s.PfsClid || n.PfsFsid != s.PfsFsid || n.ClLabel != s.ClLabel || n.FsLabel != s.FsLabel:
		return sigErr("signed for another node")
	case n.PfsType != s.PfsType || n.PeerType != s.PeerType || n.ProtoVersion != s.ProtoVersion || n.Media != s.Media:
		return sigErr("the span's fields differ from the signed ones")
	case s.Dist == 0 && n.Rnss != s.Rnss:
		return sigErr("the origin's rnss differs from the signed one")
	}
	return nil
}

// distinctKeys refuses a path that visits a key twice: a loop, or a
// record spliced from two.
func (r *SignedSpan) distinctKeys() error {
	keys := make([]ed25519.PublicKey, 0, r.Hops()+1)
	keys = append(keys, r.Origin)
	for i := range r.Hops() {
		to := r.To(i)
		for _, k := range keys {
			if k.Equal(to) {
				return sigErr("a key appears twice on its path")
			}
		}
		keys = append(keys, to)
	}
	return nil
}
