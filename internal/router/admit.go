package router

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Link admission: who may hold a link, checked when a connection is
// accepted, before anything is read from it or allocated for it.
//
// Links come in three classes. Network links (accepted on a listener, or
// dialled because a peer's VOLCONF asked for it) share limits.max_links.
// Links accepted on the shell socket have limits.max_shell_links of their
// own, and links to configured targets (and the shell's `span`) always get
// in: a flood of network connections can take neither the operator's
// shell nor the router's own uplinks.
//
// Among network links:
//   - one source address (an IPv4 address, an IPv6 /64: what one host
//     controls) holds at most limits.max_links_per_source of them;
//   - at most limits.max_pending_links may be pending, from accept until
//     the peer's LNK_CONN arrives, so connections that never get that far
//     cannot crowd out established peers; the pool is shared fairly among
//     sources (pending.go), so that neither can a flood from a few
//     sources crowd out new ones; a pending link that does not complete
//     its TLS handshake within limits.handshake_timeout or send its
//     LNK_CONN within limits.conn_timeout is closed;
//   - a source opens at most limits.accept_rate_per_source new links a
//     second, in bursts of max_links_per_source. A connection beyond the
//     rate is not refused but waits for its turn (pending, within the
//     handshake timeout), so a peer that reconnects in a loop is slowed
//     to the rate while a burst of legitimate connections gets in.
//
// Every refusal is counted (LimitHit) and logged through the rate-limited
// event log, so a connection flood writes a few lines, not one per
// connection.

// linkClass says which admission limits a link is counted against.
type linkClass uint8

const (
	classNetwork  linkClass = iota // limits.max_links and the per-source limits
	classShell                     // limits.max_shell_links
	classReserved                  // configured targets: always admitted
)

// admission is one link's place in the admission counts, from accept (or
// dial) until its link is down.
type admission struct {
	class   linkClass
	source  string // per-source key; "" when exempt (unix peers, reserved links)
	pending bool   // its LNK_CONN has not arrived yet (network links only)
	done    bool   // released
	// slotFreed: its link slot is given back (released, or displaced
	// from the pending pool, pending.go)
	slotFreed bool
	wait      *pendingLink // its place in the pending pool, once it had one

}

// admitter holds the admission counts of a router.
type admitter struct {
	mu      sync.Mutex
	links   int // network links, pending included
	pending int // network links without their LNK_CONN yet
	shell   int
	sources map[string]*source

	pendingBy map[string][]*admission // pending links by source key, oldest first (pending.go)
}

// source is what one source address holds, and its accept-rate bucket.
type source struct {
	links  int
	tokens float64 // new links it may open now; negative: turns handed out ahead
	last   time.Time
}

// refusal names the limit that refused a connection.
type refusal struct{ limit string }

// sourceOf returns the per-source key of a connection: its IPv4 address
// or its IPv6 /64, or "" for peers without an address (unix sockets),
// which the socket's permissions admit.
func sourceOf(nc net.Conn) string {
	addr, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip4 := addr.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return addr.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// admit counts a new connection of class from src against the limits, or
// returns the limit that refuses it. On success the caller owns the
// admission and must release it, and must close the link displaced from
// the pending pool to make room for it, if any (evict).
func (ad *admitter) admit(lim *config.Limits, class linkClass, src string, now time.Time) (a, displaced *admission, why *refusal) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	a = &admission{class: class}
	switch class {
	case classShell:
		if ad.shell >= lim.MaxShellLinks {
			return nil, nil, &refusal{"max_shell_links"}
		}
		ad.shell++
	case classNetwork:
		var s *source
		if src != "" {
			s = ad.sourceLocked(src, lim, now)
		}
		if s != nil && s.links >= lim.MaxLinksPerSource {
			return nil, nil, &refusal{"max_links_per_source"}
		}
		// With every link slot taken, a pending link may still give up
		// its slot, as it would its pending one (pending.go).
		full := ad.links >= lim.MaxLinks
		var ok bool
		if displaced, ok = ad.pendingLocked(a, src, lim.MaxPendingLinks, full, now); !ok {
			if full {
				return nil, nil, &refusal{"max_links"}
			}
			return nil, nil, &refusal{"max_pending_links"}
		}
		ad.links++
		if s != nil {
			s.links++
			a.source = src
		}
	}
	return a, displaced, nil
}

// sourceLocked returns src's record, creating it with a full bucket.
func (ad *admitter) sourceLocked(src string, lim *config.Limits, now time.Time) *source {
	s := ad.sources[src]
	if s == nil {
		if ad.sources == nil {
			ad.sources = make(map[string]*source)
		}
		ad.sweepLocked(lim, now)
		s = &source{tokens: float64(lim.MaxLinksPerSource), last: now}
		ad.sources[src] = s
	}
	return s
}

// sweepLocked forgets, now and then, the sources that hold no link and
// whose bucket is full again: they are indistinguishable from new ones.
// The map is bounded by the links held plus the sources that opened a
// link in the last burst/rate seconds.
func (ad *admitter) sweepLocked(lim *config.Limits, now time.Time) {
	if len(ad.sources) < 2*(lim.MaxLinks+lim.MaxPendingLinks) {
		return
	}
	for k, s := range ad.sources {
		if s.links == 0 && s.refill(lim, now) >= float64(lim.MaxLinksPerSource) {
			delete(ad.sources, k)
		}
	}
}

// refill brings the source's bucket up to now and returns its tokens.
func (s *source) refill(lim *config.Limits, now time.Time) float64 {
	burst := float64(lim.MaxLinksPerSource)
	s.tokens = min(burst, s.tokens+now.Sub(s.last).Seconds()*float64(lim.AcceptRatePerSource))
	s.last = now
	return s.tokens
}

// turn hands a's connection its turn under the source's accept rate and
// returns how long it must wait for it; a turn more than patience away is
// refused.
func (ad *admitter) turn(a *admission, lim *config.Limits, patience time.Duration, now time.Time) (time.Duration, *refusal) {
	if a.source == "" {
		return 0, nil
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	s := ad.sources[a.source]
	if s.refill(lim, now) >= 1 {
		s.tokens--
		return 0, nil
	}
	wait := time.Duration((1 - s.tokens) / float64(lim.AcceptRatePerSource) * float64(time.Second))
	if wait > patience {
		return 0, &refusal{"accept_rate_per_source"}
	}
	s.tokens--
	return wait, nil
}

// connected moves a link out of the pending count: its peer's LNK_CONN
// arrived.
func (ad *admitter) connected(a *admission) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if !a.done {
		ad.leavePendingLocked(a)
	}
}

// release gives back what a counted; releasing twice does nothing.
func (ad *admitter) release(a *admission) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if a == nil || a.done {
		return
	}
	a.done = true
	switch a.class {
	case classShell:
		ad.shell--
	case classNetwork:
		ad.leavePendingLocked(a)
		ad.leaveLinksLocked(a)
	}
}

// leaveLinksLocked gives back a's link slot and its source's, once.
func (ad *admitter) leaveLinksLocked(a *admission) {
	if a.slotFreed {
		return
	}
	a.slotFreed = true
	ad.links--
	if s := ad.sources[a.source]; s != nil {
		s.links--
	}
}

// refuseConn closes a connection the admission limits refused, with a
// rate-limited line and a count.
func (r *Router) refuseConn(nc net.Conn, via string, why *refusal) {
	r.metrics.LimitHit(why.limit)
	r.events.Warn("link_refused:"+why.limit, "link refused: limits."+why.limit+" reached",
		zap.String("peer", peerAddr(nc)), zap.String("via", via))
	nc.Close()
}

// displace closes a pending link whose slots a connection from the source
// by took (pending.go), with a rate-limited line and a count under the
// limit that was reached.
func (r *Router) displace(a *admission, by string) {
	limit := a.wait.limit
	r.metrics.LimitHit(limit)
	r.events.Warn("link_displaced:"+limit,
		"pending link closed: limits."+limit+" reached and its source holds the most pending links",
		zap.String("source", a.wait.key), zap.String("for", by))
	r.admit.evict(a)
}

// peerAddr names a connection's peer for logs.
func peerAddr(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "?"
}

// accepted admits a connection accepted on listener l and sets its link
// up: at once, or from a goroutine of its own when it must wait for its
// turn under the accept rate or complete a TLS handshake, so the accept
// loop never waits for one peer.
func (r *Router) accepted(nc net.Conn, l *listener) {
	lim := r.Config().Limits
	class := classNetwork
	if l.shell {
		class = classShell
	}
	now := time.Now()
	src := sourceOf(nc)
	a, displaced, why := r.admit.admit(&lim, class, src, now)
	if why != nil {
		r.refuseConn(nc, l.addr, why)
		return
	}
	if displaced != nil {
		r.displace(displaced, src)
	}
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		raw = tc.NetConn() // closing it aborts a handshake at once
	}
	r.admit.onEvict(a, func() { raw.Close() })
	wait, why := r.admit.turn(a, &lim, lim.HandshakeTimeout, now)
	if why != nil {
		r.admit.release(a)
		r.refuseConn(nc, l.addr, why)
		return
	}
	opts := linkOptions{shellSocket: l.shell, via: l.addr, adm: a}
	tc, isTLS := nc.(*tls.Conn)
	if wait == 0 && !isTLS {
		r.startLink(nc, opts)
		return
	}
	// The wait for a turn counts toward the handshake's deadline: a
	// pending connection is bounded either way.
	deadline := now.Add(lim.HandshakeTimeout)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if !r.waitTurn(wait) {
			r.admit.release(a)
			nc.Close()
			return
		}
		if isTLS {
			if err := r.handshake(tc, deadline); err != nil {
				r.admit.release(a)
				return
			}
			opts.tlsPeer = peerName(r.Config().TLS, tc.ConnectionState())
			opts.tlsKey = peerKey(tc.ConnectionState())
		}
		r.startLink(nc, opts)
	}()
}

// waitTurn waits d, or reports false if the router shuts down first.
func (r *Router) waitTurn(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}
