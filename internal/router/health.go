package router

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
)

// healthTimeout bounds how long the router's loops may take to answer a
// health probe before /healthz reports them stuck.
const healthTimeout = 5 * time.Second

// prober runs health probes, one at a time: concurrent checks wait for
// the one in flight, so a deadlock piles up no goroutines. Its own mutex
// is the only lock a check takes before the probe answers.
type prober struct {
	mu  sync.Mutex
	cur *probe
}

// probe is one health probe: a goroutine that takes, in turn, every lock
// the router's loops serve under.
type probe struct {
	started time.Time
	step    atomic.Pointer[string] // what it is waiting for now
	done    chan struct{}
}

// listenerStopped records an accept loop that gave up: the daemon no
// longer accepts there, which only a restart cures. /healthz says so
// and Serve stops with the first such error.
func (r *Router) listenerStopped(l *listener, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return
	}
	r.stopped = append(r.stopped, fmt.Sprintf("listener %s stopped: %v", l.addr, err))
	select {
	case r.failed <- fmt.Errorf("listener %s: %w", l.addr, err):
	default: // Serve is already stopping with an earlier one
	}
}

// Health reports whether the daemon is alive: its accept loops run and
// the span engine, the circuit relay, the outbound targets and the link
// table each answer within healthTimeout. The text is a one-line reason.
func (r *Router) Health() (bool, string) {
	if err := r.loopsAnswer(healthTimeout); err != nil {
		return false, "unhealthy: " + err.Error()
	}
	r.mu.Lock()
	stopped := strings.Join(r.stopped, "; ")
	r.mu.Unlock()
	if stopped != "" {
		return false, "unhealthy: " + stopped
	}
	return true, "ok: span engine, circuits, targets and links answer"
}

// loopsAnswer runs the probe, or joins the one in flight, and waits at
// most timeout from its start.
func (r *Router) loopsAnswer(timeout time.Duration) error {
	r.health.mu.Lock()
	p := r.health.cur
	if p == nil {
		p = &probe{started: time.Now(), done: make(chan struct{})}
		first := "link table"
		p.step.Store(&first)
		r.health.cur = p
		go r.runProbe(p)
	}
	r.health.mu.Unlock()
	t := time.NewTimer(time.Until(p.started.Add(timeout)))
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("the %s has not answered for %v", *p.step.Load(), time.Since(p.started).Round(time.Second))
	}
}

func (r *Router) runProbe(p *probe) {
	steps := []struct {
		name string
		do   func()
	}{
		{"link table", func() { r.mu.Lock(); _ = len(r.links); r.mu.Unlock() }},
		{"span engine", func() { r.engine.Stats() }},
		{"circuit relay", func() { r.circuits.Len() }},
		{"outbound target manager", func() { r.media.Status() }},
	}
	for _, s := range steps {
		p.step.Store(&s.name)
		s.do()
	}
	r.health.mu.Lock()
	r.health.cur = nil
	r.health.mu.Unlock()
	close(p.done)
}

// Ready reports whether the daemon is ready for traffic, with a one-line
// reason: it is serving on every listener, alive (Health), not shutting
// down, and, when metrics.ready_targets asks for it, that many of the
// configured outbound targets have a link up (the peer's LNK_CONN
// arrived).
func (r *Router) Ready() (bool, string) {
	r.mu.Lock()
	serving, closing, listeners := r.serving, r.closing, len(r.listeners)
	r.mu.Unlock()
	switch {
	case closing:
		return false, "not ready: shutting down"
	case !serving:
		return false, "not ready: listeners not accepting yet"
	}
	if ok, why := r.Health(); !ok {
		return false, "not ready: " + why
	}
	cfg := r.Config()
	targets := cfg.Targets()
	r.mu.Lock()
	up := targetsUp(r.linkList())
	r.mu.Unlock()
	n := 0
	var firstDown config.Target
	for _, t := range targets {
		if up[targetKey(t)] {
			n++
		} else if firstDown.Host == "" {
			firstDown = t
		}
	}
	if want := cfg.Metrics.ReadyTargets; n < want {
		return false, fmt.Sprintf("not ready: %d of %d configured targets up, metrics.ready_targets wants %d (%s: %s)",
			n, len(targets), want, firstDown, r.targetTrouble(firstDown))
	}
	return true, fmt.Sprintf("ready: %d listeners, configuration %s, %d of %d configured targets up",
		listeners, configSource(cfg), n, len(targets))
}

// configSource names where the configuration in force came from.
func configSource(cfg *config.Config) string {
	if cfg.File == "" {
		return "from defaults"
	}
	return cfg.File
}

// targetKey drops the name, which says who asked for a target, not where
// it goes.
func targetKey(t config.Target) config.Target {
	t.Name = ""
	return t
}

// targetsUp returns the outbound targets among links whose link is up:
// dialled, and the peer's LNK_CONN received.
func targetsUp(links []*link) map[config.Target]bool {
	up := make(map[config.Target]bool)
	for _, l := range links {
		l.mu.Lock()
		ok := l.opts.outbound && l.peer != nil
		l.mu.Unlock()
		if ok {
			up[targetKey(l.opts.target)] = true
		}
	}
	return up
}

// targetTrouble says why a target is not up, from its dial status.
func (r *Router) targetTrouble(t config.Target) string {
	for _, st := range r.media.Status() {
		if targetKey(st.Target) != targetKey(t) {
			continue
		}
		switch {
		case st.Connected:
			return "connected, waiting for the peer's LNK_CONN"
		case st.LastError != "":
			return st.LastError
		}
		return "dialling"
	}
	return "not dialled yet"
}
