package router

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Lifecycle, in net/http's shape. Serve accepts until something stops
// it and says what did; Shutdown stops the router gracefully within the
// caller's context, Close at once. Both may be called from any goroutine,
// any number of times, before, during or after Serve.
//
// Stopping runs in three steps:
//
//  1. beginStop, once: the router refuses new links, cancels r.ctx (which
//     ends TLS handshakes, waits for a turn under the accept rate, the
//     shell's dials and `@node` circuits), closes the listeners, the
//     metrics endpoint and the outbound targets;
//  2. drain, per call: every link DELETEs our LNK_CONN and the spans we
//     relayed on it, and is closed once what it queued is written, or
//     when the caller's context ends, whichever comes first;
//  3. finish, once: wait for every goroutine the router started.
//
// Step 3 is prompt once step 2 closed the links: every goroutine it waits
// for ends with its link's socket or with r.ctx.

// ErrRouterClosed is returned by Serve after a call to Shutdown or Close,
// as net/http's ErrServerClosed is.
var ErrRouterClosed = errors.New("router closed")

// Serve accepts links on every bound listener and keeps the configured
// outbound links. It returns what stopped it, never nil:
//
//   - ErrRouterClosed once Shutdown or Close is called; the caller then
//     waits for that call to return, which is when the router is down;
//   - the error of a listener whose accept loop gave up for good (not a
//     passing shortage of descriptors, which is retried), naming it.
//     Serve then stops accepting on every listener, since a daemon that
//     no longer accepts where it was told to is broken in a way only a
//     restart cures; the links already up stay until the caller calls
//     Shutdown or Close, as it must;
//   - ctx's error when ctx ends first: the router is then stopped as
//     Close stops it, at once, before Serve returns. A caller that wants
//     a graceful stop calls Shutdown instead of cancelling ctx.
//
// Serve may be called once.
func (r *Router) Serve(ctx context.Context) error {
	ls, err := r.startServing()
	if err != nil {
		return err
	}
	for _, l := range ls {
		r.log.Info("listening", zap.String("addr", l.addr), zap.Bool("shell", l.shell))
		go r.acceptLoop(l)
	}
	r.mu.Lock()
	r.serving = !r.closing // readiness: accepting on every listener
	r.mu.Unlock()
	r.media.Set("config", r.Config().Targets())
	select {
	case <-r.ctx.Done():
		return ErrRouterClosed
	case err := <-r.failed:
		r.log.Error("a listener failed; no longer accepting on any", zap.Error(err))
		r.stopAccepting()
		return err
	case <-ctx.Done():
		r.Close()
		return ctx.Err()
	}
}

// startServing counts the accept loops about to start, unless the router
// is stopping already or Serve was called before.
func (r *Router) startServing() ([]*listener, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closing:
		return nil, ErrRouterClosed
	case r.served:
		return nil, errors.New("serve: called twice")
	case len(r.listeners) == 0:
		return nil, errors.New("serve: no listeners bound")
	}
	r.served = true
	r.wg.Add(len(r.listeners)) // under r.mu: beginStop waits for these only once closing is set
	return r.listeners, nil
}

// stopAccepting closes every listener: their accept loops end.
func (r *Router) stopAccepting() {
	r.mu.Lock()
	r.serving = false
	ls := r.listeners
	r.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
}

// Shutdown stops the router gracefully: it stops accepting, withdraws
// our LNK_CONN (and with it every span we relayed) on every link, and
// closes each link once what it queued has been written. When ctx ends
// first, the links still open are closed at once and Shutdown returns
// ctx's error; either way everything the router started has ended when
// it returns. Serve returns ErrRouterClosed as soon as Shutdown begins.
func (r *Router) Shutdown(ctx context.Context) error {
	links := r.beginStop(ctx)
	err := r.drain(ctx, links)
	r.finish()
	return err
}

// Close stops the router at once: as Shutdown does, but without waiting
// for anything queued to be written. It returns once everything the
// router started has ended.
func (r *Router) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Shutdown(ctx)
	return nil
}

// beginStop takes the first step of stopping, once, and returns the links
// open when it did; later calls return the links still open.
func (r *Router) beginStop(ctx context.Context) []*link {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.closing = true // startLink refuses new links from now on
		r.serving = false
		ls := r.listeners
		r.mu.Unlock()
		r.cancel()
		r.memory.stop()
		for _, l := range ls {
			l.Close()
		}
		r.stopMetrics(ctx)
		r.media.Close()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.linkList()
}

// drain shuts every link down within ctx (link.shutdown) and reports
// ctx's error if any of them had not drained when it ended.
func (r *Router) drain(ctx context.Context, links []*link) error {
	var wg sync.WaitGroup
	var late atomic.Bool
	for _, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.shutdown(ctx) != nil {
				late.Store(true)
			}
		}()
	}
	wg.Wait()
	if late.Load() {
		return ctx.Err()
	}
	return nil
}

// finish waits for every goroutine the router started, once; concurrent
// callers wait for the first.
func (r *Router) finish() {
	r.finalOnce.Do(func() {
		r.wg.Wait()
		r.events.Close()
		r.log.Info("shutdown complete")
	})
}
