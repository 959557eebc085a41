package volconf

import (
	"math/rand/v2"
	"time"
)

// Backoff is an exponential redial delay with jitter. The zero value
// uses DefaultMinBackoff and DefaultMaxBackoff.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Default redial bounds (docs/PROTOCOL.md section 6).
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

func (b *Backoff) bounds() (time.Duration, time.Duration) {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi < lo {
		hi = max(DefaultMaxBackoff, lo)
	}
	return lo, hi
}

// Next returns the delay before the next attempt: it doubles up to Max,
// and each value is spread by ±20% so that routers restarted together do
// not redial in lockstep.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	if b.next < lo {
		b.next = lo
	}
	d := b.next
	b.next = min(b.next*2, hi)
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return max(d+jitter, time.Millisecond)
}

// Reset starts the sequence over, after a link has proved stable.
func (b *Backoff) Reset() { b.next = 0 }
