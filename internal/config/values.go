package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a number of bytes. In the config file it is an integer or a
// string with a unit: B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB
// (powers of 1000), as in "16MiB" or "512 KiB".
type ByteSize int64

// Size units, longest suffix first so "KiB" is not read as "B".
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"b", 1},
}

// ParseByteSize parses a size such as "4096", "16MiB" or "1 GB".
// Fractions and negative sizes are rejected.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("size %q: missing number", s)
	}
	for _, c := range t {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("size %q: must be a whole number of bytes with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return ByteSize(n * mult), nil
}

// String formats the size with the largest binary unit that divides it
// exactly, such as "16MiB", or as a plain number of bytes.
func (b ByteSize) String() string {
	switch {
	case b != 0 && b%(1<<30) == 0:
		return strconv.FormatInt(int64(b>>30), 10) + "GiB"
	case b != 0 && b%(1<<20) == 0:
		return strconv.FormatInt(int64(b>>20), 10) + "MiB"
	case b != 0 && b%(1<<10) == 0:
		return strconv.FormatInt(int64(b>>10), 10) + "KiB"
	default:
		return strconv.FormatInt(int64(b), 10)
	}
}

// PeerType is a DMSG peer type (docs/PROTOCOL.md 2.5), 0..MaxPeerType.
type PeerType uint8

// Named peer types.
const (
	PeerNone    PeerType = 0
	PeerRouter  PeerType = 1
	PeerBlock   PeerType = 2
	PeerHammer2 PeerType = 3
	PeerClient  PeerType = 63

	// MaxPeerType is the largest peer type (the width of peer_mask - 1).
	MaxPeerType = 63
)

var peerTypeNames = map[PeerType]string{
	PeerNone:    "none",
	PeerRouter:  "router",
	PeerBlock:   "block",
	PeerHammer2: "hammer2",
	PeerClient:  "client",
}

// String returns the lower-case name of a named type, or its decimal
// number.
func (t PeerType) String() string {
	if n, ok := peerTypeNames[t]; ok {
		return n
	}
	return strconv.Itoa(int(t))
}

// ParsePeerType parses a peer type name (none, router, block, hammer2,
// client; case-insensitive) or a number 0..63.
func ParsePeerType(s string) (PeerType, error) {
	ls := strings.ToLower(strings.TrimSpace(s))
	for t, n := range peerTypeNames {
		if n == ls {
			return t, nil
		}
	}
	n, err := strconv.Atoi(ls)
	if err != nil {
		return 0, fmt.Errorf("peer type %q: must be none, router, block, hammer2, client or a number 0..%d", s, MaxPeerType)
	}
	if n < 0 || n > MaxPeerType {
		return 0, fmt.Errorf("peer type %d: out of range 0..%d", n, MaxPeerType)
	}
	return PeerType(n), nil
}

// PubKeyPrefix starts every textual Ed25519 public key.
const PubKeyPrefix = "ed25519:"

// FormatPubKey returns "ed25519:<standard base64 of the 32 raw bytes>", the
// form `dmsgd keygen` prints and tls.peers[].pubkey expects.
func FormatPubKey(k ed25519.PublicKey) string {
	return PubKeyPrefix + base64.StdEncoding.EncodeToString(k)
}

// ParsePubKey parses "ed25519:<base64 of 32 bytes>" (padded or unpadded
// standard base64).
func ParsePubKey(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(s, PubKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("public key %q: must start with %q", s, PubKeyPrefix)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return nil, errors.New("public key: not valid base64")
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key: %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}
