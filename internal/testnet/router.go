package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/router"
)

// Option adjusts a test router's configuration before it starts.
type Option func(*config.Config)

// Router is one router serving on loopback for the length of a test.
type Router struct {
	*router.Router
	TB     testing.TB
	Label  string
	Cfg    *config.Config
	Port   int    // its tcp listener's port
	Socket string // its shell socket

	served   chan struct{}
	serveErr error
	stopErr  error
	stopOnce sync.Once
}

// Start starts a router labelled label: a tcp listener on a free loopback
// port, a shell socket in a temporary directory, short keepalives, then
// opts. The test's cleanup stops it, checks Serve returned and that its
// links recovered from no panic.
func Start(tb testing.TB, label string, log *zap.Logger, opts ...Option) *Router {
	tb.Helper()
	cfg := Config(tb, label, opts...)
	r := &Router{Router: router.New(cfg, log), TB: tb, Label: label, Cfg: cfg,
		Socket: cfg.Shell.Socket, served: make(chan struct{})}
	if err := r.Listen(nil); err != nil {
		tb.Fatalf("router %s: Listen: %v", label, err)
	}
	for _, a := range r.Addrs() {
		if ta, ok := a.(*net.TCPAddr); ok {
			r.Port = ta.Port
		}
	}
	if r.Port == 0 {
		tb.Fatalf("router %s: no tcp listener among %v", label, r.Addrs())
	}
	go func() {
		defer close(r.served)
		r.serveErr = r.Serve(context.Background())
	}()
	panics := iocom.Panics()
	tb.Cleanup(func() {
		r.Stop()
		if n := iocom.Panics() - panics; n != 0 {
			tb.Errorf("router %s: link code recovered from %d panic(s)", label, n)
		}
	})
	return r
}

// Config is the configuration Start gives a router labelled label: a tcp
// listener on a free loopback port, a shell socket in a temporary
// directory, short keepalives, then opts.
func Config(tb testing.TB, label string, opts ...Option) *config.Config {
	tb.Helper()
	cfg := config.Defaults()
	cfg.Listen = []string{"tcp://127.0.0.1:0"}
	cfg.Shell.Socket = filepath.Join(ShortTempDir(tb), "shell.sock")
	cfg.Node.Label = label
	cfg.Node.ID = config.NodeIDFor(label)
	cfg.Node.ClusterID = config.NodeIDFor(cfg.Node.ClusterLabel)
	cfg.Keepalive.Interval = 100 * time.Millisecond
	cfg.Keepalive.Timeout = 10 * time.Second // room for a loaded machine: no test relies on it
	for _, o := range opts {
		o(cfg)
	}
	for _, l := range cfg.Listen {
		pl, err := config.ParseListen(l)
		if err != nil {
			tb.Fatalf("listen %s: %v", l, err)
		}
		cfg.Listeners = append(cfg.Listeners, pl)
	}
	return cfg
}

// Stop shuts the router down gracefully (Shutdown, within Timeout),
// waits for Serve to return and reports what went wrong: the error Serve
// stopped with if not ErrRouterClosed (a listener that failed), else
// Shutdown's. Calling it again returns the same result.
func (r *Router) Stop() error {
	r.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		r.stopErr = r.Shutdown(ctx)
		select {
		case <-r.served:
			if !errors.Is(r.serveErr, router.ErrRouterClosed) {
				r.stopErr = r.serveErr
			}
		case <-time.After(Timeout):
			r.TB.Errorf("router %s: Serve did not return within %v of Shutdown", r.Label, Timeout)
		}
	})
	return r.stopErr
}

// Addr is the router's tcp listener, host:port.
func (r *Router) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// LinkTo returns the id of the router's one open link whose peer announced
// label.
func (r *Router) LinkTo(label string) (string, error) {
	var ids []string
	for _, l := range r.Tree().Links {
		if l.PeerLabel == label && l.State == "up" {
			ids = append(ids, l.ID)
		}
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("%s: links to %q: %v", r.Label, label, ids)
	}
	return ids[0], nil
}

// Holds reports an error unless the router holds a node labelled label.
func (r *Router) Holds(label string) error {
	for _, c := range r.Tree().Clusters {
		for _, n := range c.Nodes {
			if n.Label == label && len(n.Adverts) > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("%s does not hold node %s", r.Label, label)
}

// SpanTo links r to the router (or proxy) listening at addr, as the
// shell's `span <host>` does, and fails the test if r does not connect.
func (r *Router) SpanTo(addr string) {
	r.TB.Helper()
	if out := r.Span(addr); !strings.HasPrefix(out, "Connected to ") {
		r.TB.Fatalf("%s: span %s: %q", r.Label, addr, out)
	}
}
