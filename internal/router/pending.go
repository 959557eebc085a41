package router

import "time"

// The pending pool: limits.max_pending_links shared fairly among sources.
//
// A pending link costs the router little, but the pool is small on
// purpose, and first come, first served would let a few sources that open
// connections and never send their LNK_CONN keep it full: every new peer,
// however honest, would be refused until the flood stops. So the pool is
// shared max-min fairly. When it is full (or every link slot of
// limits.max_links is taken), a connection from a source that holds fewer
// pending links than the largest holder takes the slots of that holder's
// oldest pending link, which is closed; a connection from a source that
// already holds as many as any other is refused. A new source
// always gets in, a flood only ever displaces itself once it holds the
// most, and the link displaced is the one that has had the longest to
// send its LNK_CONN and has not (an honest peer sends it within a round
// trip). Unix peers and links the router dialled for VOLCONF have no
// source address; they share one key, "".

// pendingLink is a link's place in the pending pool.
type pendingLink struct {
	key   string    // its source's key in the pool
	since time.Time // when it was admitted
	// evict closes the link when another source takes its slot; set by
	// its owner (onEvict), nil until then.
	evict   func()
	evicted bool   // it lost its slot; evict has been or will be called
	limit   string // the limit that made it lose it, once evicted
}

// pendingLocked makes room in the pending pool for a link from key and
// adds a to it, or reports false if room is needed (the pool is full, or
// linksFull: every link slot is taken) and key holds as many pending
// links as any other source. A link that had to leave to make room gives
// up its pending slot and its link slot at once, and is returned; the
// caller calls its evict, after unlocking.
func (ad *admitter) pendingLocked(a *admission, key string, max int, linksFull bool, now time.Time) (displaced *admission, ok bool) {
	if linksFull || ad.pending >= max {
		v := ad.largestPendingLocked()
		if len(ad.pendingBy[v]) <= len(ad.pendingBy[key]) {
			return nil, false
		}
		displaced = ad.pendingBy[v][0]
		displaced.wait.limit = "max_pending_links"
		if ad.pending < max {
			displaced.wait.limit = "max_links"
		}
		ad.leavePendingLocked(displaced)
		ad.leaveLinksLocked(displaced)
		displaced.wait.evicted = true
	}
	if ad.pendingBy == nil {
		ad.pendingBy = make(map[string][]*admission)
	}
	a.pending = true
	a.wait = &pendingLink{key: key, since: now}
	ad.pendingBy[key] = append(ad.pendingBy[key], a)
	ad.pending++
	return displaced, true
}

// largestPendingLocked returns the key of the source holding the most
// pending links; among equals, the one whose oldest pending link is
// oldest. The pool holds at most max_pending_links sources.
func (ad *admitter) largestPendingLocked() string {
	var best string
	var bestN int
	var bestSince time.Time
	for k, q := range ad.pendingBy {
		n := len(q)
		if n > bestN || n == bestN && q[0].wait.since.Before(bestSince) {
			best, bestN, bestSince = k, n, q[0].wait.since
		}
	}
	return best
}

// leavePendingLocked takes a out of the pending pool.
func (ad *admitter) leavePendingLocked(a *admission) {
	if !a.pending {
		return
	}
	a.pending = false
	ad.pending--
	q := ad.pendingBy[a.wait.key]
	for i, b := range q {
		if b == a {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(ad.pendingBy, a.wait.key)
	} else {
		ad.pendingBy[a.wait.key] = q
	}
}

// onEvict sets how a's link is closed should another source take its
// pending slot; if one already has, evict is called at once. A later call
// replaces an earlier one (the connection's close, then its link's).
func (ad *admitter) onEvict(a *admission, evict func()) {
	ad.mu.Lock()
	if a == nil || a.wait == nil {
		ad.mu.Unlock()
		return
	}
	evicted := a.wait.evicted
	a.wait.evict = evict
	ad.mu.Unlock()
	if evicted {
		evict()
	}
}

// evict closes a link displaced from the pending pool, if its owner has
// said how yet (otherwise onEvict will).
func (ad *admitter) evict(a *admission) {
	ad.mu.Lock()
	evict := a.wait.evict
	ad.mu.Unlock()
	if evict != nil {
		evict()
	}
}
