package volconf

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
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
}

// Manager keeps one outbound link per wanted target. Sources (the config
// file, each media of VOLCONF messages) set their targets independently; a
// target is wanted while any source wants it.
type Manager struct {
	opts Options
	log  *zap.Logger

	mu      sync.Mutex
	sources map[string][]config.Target
	running map[config.Target]*keeper
	closed  bool
	wg      sync.WaitGroup
}

// keeper is the goroutine that keeps one target's link.
type keeper struct {
	cancel context.CancelFunc
	kick   chan struct{}
	status tracker
}

// New returns a Manager with no targets.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = 30 * time.Second
	}
	return &Manager{opts: opts, log: opts.Logger,
		sources: make(map[string][]config.Target), running: make(map[config.Target]*keeper)}
}

// key drops the name, which says who asked, not where to go.
func key(t config.Target) config.Target {
	t.Name = ""
	return t
}

// Set replaces the targets of source (nil or empty removes the source) and
// starts or stops links to match.
func (m *Manager) Set(source string, targets []config.Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if len(targets) == 0 {
		delete(m.sources, source)
	} else {
		m.sources[source] = slices.Clone(targets)
	}
	m.reconcileLocked()
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

func (m *Manager) reconcileLocked() {
	want := make(map[config.Target]config.Target)
	for _, ts := range m.sources {
		for _, t := range ts {
			if _, ok := want[key(t)]; !ok {
				want[key(t)] = t
			}
		}
	}
	for k, kp := range m.running {
		if _, ok := want[k]; !ok {
			kp.cancel()
			delete(m.running, k)
			m.log.Info("outbound target removed", zap.String("target", k.String()))
		}
	}
	for k, t := range want {
		if _, ok := m.running[k]; !ok {
			m.start(k, t)
		}
	}
}

func (m *Manager) start(k, t config.Target) {
	ctx, cancel := context.WithCancel(context.Background())
	kp := &keeper{cancel: cancel, kick: make(chan struct{}, 1)}
	kp.status.st.Target = t
	m.running[k] = kp
	m.log.Info("outbound target added", zap.String("target", k.String()), zap.String("source", t.Name))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.keep(ctx, t, kp.kick, &kp.status)
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
// keeps st up to date.
func (m *Manager) keep(ctx context.Context, t config.Target, kick <-chan struct{}, st *tracker) {
	b := Backoff{Min: m.opts.MinBackoff, Max: m.opts.MaxBackoff}
	log := m.log.With(zap.String("target", key(t).String()))
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
