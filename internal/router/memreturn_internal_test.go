package router

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryIsReturnedOnceAfterTeardownsAddUpToMuchWork(t *testing.T) {
	var released atomic.Int32
	m := &memoryReturn{release: func() { released.Add(1) }}
	m.teardown(memoryReturnWork / 2)
	m.mu.Lock()
	small := m.timer != nil
	m.mu.Unlock()
	if small {
		t.Fatal("a small teardown scheduled a return")
	}
	for range 3 {
		m.teardown(memoryReturnWork / 2) // together with the first, past the threshold
	}
	deadline := time.Now().Add(memoryReturnDelay + 30*time.Second)
	for released.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("memory returned %d times after a burst of teardowns, want once", n)
	}
	m.stop()
	m.teardown(memoryReturnWork)
	m.mu.Lock()
	after := m.timer != nil
	m.mu.Unlock()
	if after {
		t.Error("a teardown after stop scheduled a return")
	}
}
