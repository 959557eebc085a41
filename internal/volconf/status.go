package volconf

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Status is where one wanted target stands, for metrics and readiness.
type Status struct {
	// Target is the target with the name of the source that asked for it
	// first.
	Target config.Target
	// Dials counts connection attempts since the target was added;
	// Failures those that failed.
	Dials, Failures uint64
	// Connected is true from a successful dial until its link goes down.
	Connected bool
	// LastError is the error of the last failed attempt, "" if none.
	LastError string
	// NextDial is when the next attempt is due while the keeper waits out
	// a backoff; zero while dialling or connected.
	NextDial time.Time
}

// tracker is a keeper's Status, written by its goroutine and read by
// Manager.Status.
type tracker struct {
	mu sync.Mutex
	st Status
}

func (t *tracker) dialing() {
	t.mu.Lock()
	t.st.Dials++
	t.st.NextDial = time.Time{}
	t.mu.Unlock()
}

func (t *tracker) dialed(err error) {
	t.mu.Lock()
	if err != nil {
		t.st.Failures++
		t.st.LastError = err.Error()
	} else {
		t.st.Connected = true
	}
	t.mu.Unlock()
}

// waiting records the backoff after an attempt or after a link went down.
func (t *tracker) waiting(next time.Time) {
	t.mu.Lock()
	t.st.Connected = false
	t.st.NextDial = next
	t.mu.Unlock()
}

func (t *tracker) get() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// Status returns every wanted target's status, sorted by target.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.running))
	for _, kp := range m.running {
		out = append(out, kp.status.get())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Target.String(), b.Target.String()) })
	return out
}
