package router

import (
	"crypto/ed25519"
	"crypto/sha256"
	"sync"
	"sync/atomic"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// A relay of a signed advertisement carries our hop to the link's peer
// (docs/PROTOCOL.md 11.3): an Ed25519 signature, by our key, of the record and
// the peer's key. It is made by the link's writer as the relay leaves
// (signRelay, iocom's OpenFinished), never under the span engine's mutex:
// a link coming up is sent every record held at once, and signing them
// there (tens of microseconds each) held up every other span event for as
// long. Ed25519 signatures are deterministic, so the signer keeps the ones
// it made: a link that comes up again to the same peer (a flap, a restart
// of the peer) is sent the same records again, and gets the same hops
// copied instead of signed anew.

// hopCacheGeneration bounds the hop signatures kept: the newest
// generation and the one before, at most twice this many, about 210 bytes
// each in a map (14 MiB when full): enough for a table of 8192
// advertisements relayed to four peers that flap, small beside the
// records of max_spans advertisements themselves.
const hopCacheGeneration = 1 << 15

// hopKey names one hop: the SHA-256 of what its signature covers, the
// record it extends and the key it is sent to. A hash an attacker cannot
// collide, so that no record it makes us relay is ever sent with the hop
// of another. It need not name the signing key: the router's is fixed
// for its life (tls.key changes need a restart).
type hopKey [sha256.Size]byte

// hopCache keeps hop signatures by record and receiver, in two
// generations: a hit in the older one moves the entry to the newer, and
// when the newer is full it becomes the older, dropping what was not used
// for a generation. The zero value is empty and usable.
type hopCache struct {
	generation int // entries per generation; hopCacheGeneration if 0

	mu       sync.Mutex
	cur, old map[hopKey][ed25519.SignatureSize]byte
}

func (c *hopCache) get(k hopKey) (sig [ed25519.SignatureSize]byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sig, ok = c.cur[k]; ok {
		return sig, true
	}
	if sig, ok = c.old[k]; ok {
		delete(c.old, k)
		c.putLocked(k, sig)
	}
	return sig, ok
}

func (c *hopCache) put(k hopKey, sig [ed25519.SignatureSize]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, sig)
}

func (c *hopCache) putLocked(k hopKey, sig [ed25519.SignatureSize]byte) {
	gen := c.generation
	if gen <= 0 {
		gen = hopCacheGeneration
	}
	if len(c.cur) >= gen {
		c.old, c.cur = c.cur, nil
	}
	if c.cur == nil {
		c.cur = make(map[hopKey][ed25519.SignatureSize]byte, min(gen, 1024))
	}
	c.cur[k] = sig
}

// len returns how many signatures the cache holds.
func (c *hopCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// hopStats count the hops the signer made and those it copied.
type hopStats struct {
	signed, reused atomic.Uint64
}

// signHop is the finish of a relay's LNK_SPAN (signRelay): it signs the
// last hop of the record in its aux data, or copies the signature made
// before for the same record and receiver. It runs on the link's writer,
// outside every lock but the cache's.
func (s *signer) signHop(m *dmsg.Msg) {
	b := m.Aux
	k := hopKey(sha256.Sum256(b[:len(b)-ed25519.SignatureSize]))
	if sig, ok := s.hops.get(k); ok {
		copy(dmsg.LastHopSig(b), sig[:])
		s.hopStats.reused.Add(1)
		return
	}
	if f := s.onSign.Load(); f != nil {
		(*f)()
	}
	dmsg.SignLastHop(b, s.id.Priv)
	s.hops.put(k, [ed25519.SignatureSize]byte(dmsg.LastHopSig(b)))
	s.hopStats.signed.Add(1)
}
