package router

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/span"
)

// Signed router advertisements (docs/PROTOCOL.md 11.3) on the router's
// side: the extension is offered on TLS links when the router has a key,
// in force where both LNK_CONNs name it; our own advertisement is signed
// once, every relay appends the hop to the link's peer, and every received
// advertisement is checked before the engine sees it.

// signer is the router's signing identity; the zero value (no tls.key)
// signs nothing.
type signer struct {
	id *config.Identity

	mu      sync.Mutex
	lastSeq uint64

	hops     hopCache // the hop signatures of relays (hopsign.go)
	hopStats hopStats
	onSign   atomic.Pointer[func()] // a test's, called before each hop is signed
}

// loadSigner reads the router's key pair: from the configuration when it
// was loaded with its TLS files, else from them now. Without a key pair
// nothing is signed; a key pair that cannot be read is logged (tls://
// listeners and span+tls: targets fail on it anyway).
func loadSigner(cfg *config.Config, log *zap.Logger) *signer {
	s := &signer{id: cfg.TLS.Identity}
	if s.id == nil && cfg.TLS.Cert != "" && cfg.TLS.Key != "" {
		id, err := config.ReadIdentity(cfg.TLS)
		if err != nil {
			log.Error("TLS key pair unreadable: advertisements will not be signed", zap.Error(err))
		}
		s.id = id
	}
	return s
}

// nextSeq returns a sequence number above every one signed before, even
// by an earlier run of this router: the wall clock in nanoseconds.
func (s *signer) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSeq = max(s.lastSeq+1, uint64(time.Now().UnixNano()))
	return s.lastSeq
}

// signSelf is the engine's Config.SignSelf: our own advertisement, as it
// is sent, signed anew whenever it changes.
func (s *signer) signSelf(sp dmsg.Span) span.Proof {
	seq := s.nextSeq()
	return span.Proof{Verified: true, Seq: seq, Record: dmsg.SignSpan(s.id.Priv, seq, &sp)}
}

// ourCaps are the capability bits this router sets in its LNK_CONN on l:
// signed advertisements where it has a key and the peer presented a
// pinned one.
func (l *link) ourCaps() uint32 {
	if l.r.signer.id != nil && l.trust.tlsKey != nil {
		return dmsg.CapSignedSpans
	}
	return 0
}

// noteConn records, before the engine relays anything to the peer,
// whether signed advertisements are in force on l: our LNK_CONN in the
// dmsgd form set the bit (ourCaps) and so did the peer's.
func (l *link) noteConn(info *dmsg.Conn, peerV2 bool) {
	l.mu.Lock()
	l.trust.signed = !peerV2 && !l.ourV2 && l.ourCaps()&info.Caps&dmsg.CapSignedSpans != 0
	l.mu.Unlock()
}

// signedSpans reports whether signed advertisements are in force on l.
func (l *link) signedSpans() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.trust.signed
}

// signRelay attaches to a relay we are about to send on l the record of
// the advertisement it carries, with our hop to the link's peer appended,
// and returns the function that signs that hop, or nil when the relay
// carries no record. It runs under the engine's mutex (from OpenSpan), so
// it only copies: the signature (tens of microseconds, and every record
// held is relayed at once to a link coming up) is made by the link's
// writer just before the message leaves (iocom's OpenFinished), off the
// engine's mutex, or copied from the signer's cache.
func (l *link) signRelay(m *dmsg.Msg, rel *span.Relay) (finish func(*dmsg.Msg)) {
	if rel == nil || !l.signedSpans() {
		return nil
	}
	rec := rel.Proof().Record
	if rec == nil {
		return nil
	}
	m.Aux = dmsg.AppendHop(rec, l.trust.tlsKey) // not sealed: its CRC is taken once signed
	return l.r.signer.signHop
}

// errForged wraps every reason a signed advertisement is refused;
// errBroken those that no correct router produces (a record that does
// not parse or whose signatures or path do not check), as opposed to a
// good signature by a key not pinned for the node.
var (
	errForged = errors.New("forged advertisement")
	errBroken = errors.New("broken record")
)

// sigCheckCost is what checking one signature of a record costs the
// sender under limits.link_rate, where handling a message costs one unit:
// an Ed25519 check takes about 45 µs, a hundred times decoding the
// LNK_SPAN that carries it, and a record of 17 hops needs 18 of them.
// Charged so, a peer sending the longest valid records is held to about
// 70 a second at the default rate, a few percent of a core.
const sigCheckCost = 16

// maxBrokenRecords is how many broken records a link may send before it
// is closed: each one can cost the router up to 18 signature checks.
const maxBrokenRecords = 16

// judgeSpan decides what a LNK_SPAN received on l may be: refused (an
// error: a claim its sender may not make, or a forged signature), held
// verified, or held unverified. It runs on l's reader before the engine
// sees the span.
func (l *link) judgeSpan(m *dmsg.Msg, s *dmsg.Span) (span.Proof, error) {
	if err := l.checkClaim(s); err != nil {
		return span.Proof{}, err
	}
	if len(m.Aux) == 0 || !l.signedSpans() {
		return span.Proof{}, nil
	}
	if len(m.Aux) > dmsg.SignedMaxSize {
		return span.Proof{}, fmt.Errorf("%w, %w: %d bytes of aux data", errForged, errBroken, len(m.Aux))
	}
	rec, err := dmsg.ParseSignedSpan(bytes.Clone(m.Aux))
	if err == nil {
		l.conn.Spend(sigCheckCost * (rec.Hops() + 1)) // limits.link_rate
		err = rec.Check(s, l.r.signer.id.Pub, l.trust.tlsKey)
	}
	if err != nil {
		return span.Proof{}, fmt.Errorf("%w, %w: %w", errForged, errBroken, err)
	}
	cfg := l.r.Config()
	p, ok := trustRecord(&cfg.TLS, rec, s)
	if !ok {
		return span.Proof{}, fmt.Errorf("%w: signed by %s, which tls.peers does not let speak for node %q",
			errForged, config.FormatPubKey(rec.Origin), s.FsLabel)
	}
	return p, nil
}

// trustRecord judges a record whose signatures hold against the pinned
// keys: verified when its origin key speaks for the node, unverified when
// no pinned key does (nobody here can vouch for it either way), and not
// ok when the node is keyed and this is not its key.
func trustRecord(c *config.TLS, rec *dmsg.SignedSpan, s *dmsg.Span) (span.Proof, bool) {
	p := span.Proof{Seq: rec.Seq, Record: rec.Bytes()}
	if e := c.PeerByKey(rec.Origin); e != nil && e.EffectiveClaims().Allow(s.FsLabel, s.PfsFsid) {
		p.Verified = true
		return p, true
	}
	return p, !keyed(c, s.FsLabel, s.PfsFsid)
}

// rejudge is the engine's Reverify judge after tls.peers changed: the
// signatures of a held record were checked on arrival; only whether its
// key speaks for the node may have changed. One that now fails is held
// unverified.
func (r *Router) rejudge(s dmsg.Span, old span.Proof) span.Proof {
	if old.Record == nil {
		return old
	}
	rec, err := dmsg.ParseSignedSpan(old.Record)
	if err != nil {
		return span.Proof{}
	}
	cfg := r.Config()
	p, _ := trustRecord(&cfg.TLS, rec, &s)
	return p
}

// spanRefusedForTrust logs and counts a LNK_SPAN judgeSpan refused, and
// closes a link that keeps sending broken records.
func (l *link) spanRefusedForTrust(s *dmsg.Span, err error) {
	fields := append(l.trustFields(), zap.String("fs_label", s.FsLabel), zap.Uint32("dist", s.Dist), zap.Error(err))
	if errors.Is(err, errForged) {
		l.r.metrics.TrustRefused(metrics.TrustSpanSignature)
		l.r.events.Warn(eventSpanForged, "LNK_SPAN refused: its signature does not verify", fields...)
		if errors.Is(err, errBroken) && l.trust.broken.Add(1) == maxBrokenRecords {
			l.conn.Logger().Warn("link closed: it keeps sending broken signed advertisements",
				append(l.trustFields(), zap.Int("broken", maxBrokenRecords))...)
			l.conn.Close()
		}
		return
	}
	l.r.metrics.TrustRefused(metrics.TrustSpanClaim)
	l.r.events.Warn(eventSpanClaim, "LNK_SPAN refused: the peer may not advertise that node as its origin", fields...)
}
