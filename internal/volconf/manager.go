package volconf

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// Connect dials t and runs the resulting link. It returns once the link is
// up, with a channel closed when the link goes down, or an error if it
// could not be set up. Cancelling ctx must take the link down.
type Connect func(ctx context.Context, t config.Target) (done <-chan struct{}, err error)

// Options configures a Manager.
type Options struct {
	Connect    Connect
	Logger     *zap.Logger
	MinBackoff time.Duration // DefaultMinBackoff when 0
	MaxBackoff time.Duration // DefaultMaxBackoff when 0
	// StableAfter is how long a link must stay up for the backoff to
	// start over; 30 s when 0.
	StableAfter time.Duration
	// PeerSource reports the sources a peer controls (its LNK_VOLCONF
	// messages), which it can make change at will: the lines about their
	// targets (added, removed, a dial that failed) go to Events, once per
	// kind and window, instead of one line each to Logger. nil: none.
	PeerSource func(source string) bool
	Events     *ratelog.Logger
}

// Kinds of the rate-limited lines about targets of peer sources.
const (
	EventTargetAdded   = "volconf.target_added"
	EventTargetRemoved = "volconf.target_removed"
	EventDialFailed    = "volconf.dial_failed"
)

// Manager keeps one outbound link per wanted target. Sources (the config
// file, each media of VOLCONF messages) set their targets independently; a
// target is wanted while any source wants it.
type Manager struct {
	opts Options
	log  *zap.Logger

	mu      sync.Mutex
	sources map[string][]config.Target // by source, one target per key
	wanted  map[config.Target]int      // by key: how many sources want it
	running map[config.Target]*keeper
	closed  bool
	wg      sync.WaitGroup
}

// keeper is the goroutine that keeps one target's link.
type keeper struct {
	cancel context.CancelFunc
	kick   chan struct{}
	status tracker
	peer   bool // a peer source asked for it first: its lines are rate-limited
}

// New returns a Manager with no targets.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = 30 * time.Second
	}
	return &Manager{opts: opts, log: opts.Logger, sources: make(map[string][]config.Target),
		wanted: make(map[config.Target]int), running: make(map[config.Target]*keeper)}
}

// key drops the name, which says who asked, not where to go.
func key(t config.Target) config.Target {
	t.Name = ""
	return t
}

// Set replaces the targets of source (nil or empty removes the source) and
// starts or stops links to match. Its cost is that of the source's old
// and new targets, whatever the other sources hold.
func (m *Manager) Set(source string, targets []config.Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	old := m.sources[source]
	next := distinct(targets)
	inOld := make(map[config.Target]bool, len(old))
	for _, t := range old {
		inOld[key(t)] = true
	}
	inNext := make(map[config.Target]bool, len(next))
	for _, t := range next {
		inNext[key(t)] = true
	}
	for _, t := range old {
		if !inNext[key(t)] {
			m.release(key(t), source)
		}
	}
	for _, t := range next {
		if !inOld[key(t)] {
			m.want(t, source)
		}
	}
	if len(next) == 0 {
		delete(m.sources, source)
	} else {
		m.sources[source] = next
	}
}

// distinct returns targets with one target per key, the first of each.
func distinct(targets []config.Target) []config.Target {
	out := make([]config.Target, 0, len(targets))
	seen := make(map[config.Target]bool, len(targets))
	for _, t := range targets {
		if !seen[key(t)] {
			seen[key(t)] = true
			out = append(out, t)
		}
	}
	return out
}

// want counts one more source wanting t, starting its keeper for the
// first. Called with m.mu held.
func (m *Manager) want(t config.Target, source string) {
	k := key(t)
	m.wanted[k]++
	if m.wanted[k] == 1 {
		m.start(k, t, source)
	}
}

// release counts one source less wanting the target of key k, stopping
// its keeper with the last. Called with m.mu held.
func (m *Manager) release(k config.Target, source string) {
	m.wanted[k]--
	if m.wanted[k] > 0 {
		return
	}
	delete(m.wanted, k)
	kp := m.running[k]
	if kp == nil {
		return
	}
	kp.cancel()
	delete(m.running, k)
	m.note(kp.peer, EventTargetRemoved, "outbound target removed", zap.String("target", k.String()), zap.String("source", source))
}

// note logs a line about a target: to Events, rate-limited, for a peer's.
func (m *Manager) note(peer bool, kind, msg string, fields ...zap.Field) {
	if peer {
		m.opts.Events.Info(kind, msg, fields...)
		return
	}
	m.log.Info(msg, fields...)
}

// Targets returns the wanted targets, sorted.
func (m *Manager) Targets() []config.Target {
	m.mu.Lock()
	defer m.mu.Unlock()
	ts := slices.Collect(maps.Keys(m.running))
	slices.SortFunc(ts, func(a, b config.Target) int {
		if a.String() < b.String() {
			return -1
		}
		if a.String() > b.String() {
			return 1
		}
		return 0
	})
	return ts
}

func (m *Manager) start(k, t config.Target, source string) {
	ctx, cancel := context.WithCancel(context.Background())
	peer := m.opts.PeerSource != nil && m.opts.PeerSource(source)
	kp := &keeper{cancel: cancel, kick: make(chan struct{}, 1), peer: peer}
	kp.status.st.Target = t
	m.running[k] = kp
	m.note(peer, EventTargetAdded, "outbound target added", zap.String("target", k.String()), zap.String("source", t.Name))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.keep(ctx, t, kp)
	}()
}

// Kick makes a target waiting to redial try now. It reports whether t is a
// managed target.
func (m *Manager) Kick(t config.Target) bool {
	m.mu.Lock()
	kp := m.running[key(t)]
	m.mu.Unlock()
	if kp == nil {
		return false
	}
	select {
	case kp.kick <- struct{}{}:
	default:
	}
	return true
}

// KickAll makes every waiting target try now (after a reload).
func (m *Manager) KickAll() {
	for _, t := range m.Targets() {
		m.Kick(t)
	}
}

// Close stops every link and waits for the keepers to exit.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for k, kp := range m.running {
		kp.cancel()
		delete(m.running, k)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// keep dials t until ctx ends, waiting a backoff between attempts, and
// keeps kp's status up to date.
func (m *Manager) keep(ctx context.Context, t config.Target, kp *keeper) {
	b := Backoff{Min: m.opts.MinBackoff, Max: m.opts.MaxBackoff}
	log := m.log.With(zap.String("target", key(t).String()))
	st, kick := &kp.status, kp.kick
	for ctx.Err() == nil {
		start := time.Now()
		st.dialing()
		done, err := m.opts.Connect(ctx, t)
		st.dialed(err)
		if err == nil {
			select {
			case <-done:
			case <-ctx.Done():
				<-done
				return
			}
			if time.Since(start) >= m.opts.StableAfter {
				b.Reset()
			}
		} else if ctx.Err() == nil && kp.peer {
			m.opts.Events.Warn(EventDialFailed, "outbound link failed", zap.String("target", key(t).String()),
				zap.String("source", t.Name), zap.Error(err))
		} else if ctx.Err() == nil {
			log.Warn("outbound link failed", zap.Error(err))
		}
		delay := b.Next()
		st.waiting(time.Now().Add(delay))
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-kick:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}
