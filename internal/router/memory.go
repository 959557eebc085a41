package router

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// returnMemoryEvery bounds how often a link going down makes the router
// hand freed memory back to the operating system.
const returnMemoryEvery = 30 * time.Second

// memoryReturned is when the router last did (unix nanoseconds).
var memoryReturned atomic.Int64

// linkFreed is told that a link went down holding queued bytes. A link
// closed over its budget (a slow consumer) may leave hundreds of MiB of
// small queued messages as garbage; on a quiet router the runtime would
// collect it and give the pages back only at its next forced collection,
// minutes later, so the daemon would look as big as the attack made it
// long after the attacker is gone. Collecting now costs one collection,
// at most once per returnMemoryEvery, on the goroutine that reaps the
// link.
func (r *Router) linkFreed(queued int) {
	if queued <= int(r.Config().Limits.QueueBytesPerLink) {
		return
	}
	now := time.Now().UnixNano()
	last := memoryReturned.Load()
	if now-last < int64(returnMemoryEvery) || !memoryReturned.CompareAndSwap(last, now) {
		return
	}
	debug.FreeOSMemory()
}
