package router

import (
	"runtime/debug"
	"sync"
	"time"
)

// The Go runtime gives freed memory back to the system at its scavenger's
// pace, which after a flood can leave a router's RSS hundreds of MiB above
// what it holds for minutes. When neighbors that held much of the span
// tree go down, the router returns the memory at once instead, a few
// seconds after the last teardown, so that a burst of them costs one
// collection.

// memoryReturnWork is the span engine work (units: a node selection, a
// relay opened or closed) of the teardowns worth returning memory for.
const memoryReturnWork = 16384

// memoryReturnDelay is the quiet time after the last large teardown.
const memoryReturnDelay = 5 * time.Second

// memoryReturn schedules the return of freed memory to the system. The
// zero value is ready; release is debug.FreeOSMemory unless a test sets it.
type memoryReturn struct {
	mu      sync.Mutex
	work    int // teardown work since the last return
	timer   *time.Timer
	stopped bool
	release func()
}

// teardown notes a neighbor's teardown that did work units of engine
// work; once the teardowns since the last return add up to
// memoryReturnWork, a return follows the last of them.
func (m *memoryReturn) teardown(work int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.work += work
	switch {
	case m.stopped, m.work < memoryReturnWork:
	case m.timer == nil:
		m.timer = time.AfterFunc(memoryReturnDelay, m.fire)
	default:
		m.timer.Reset(memoryReturnDelay)
	}
}

func (m *memoryReturn) fire() {
	m.mu.Lock()
	m.timer, m.work = nil, 0
	stopped, release := m.stopped, m.release
	m.mu.Unlock()
	if stopped {
		return
	}
	if release == nil {
		release = debug.FreeOSMemory
	}
	release()
}

// stop cancels a pending return; the router is shutting down.
func (m *memoryReturn) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}
