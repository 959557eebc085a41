package router_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// A `dmsgd tree` or `dmsgd shell` call is a link on the shell socket: at
// the default level it logs nothing, at debug it logs its life as any
// link does. A peer's link still logs at info.
func TestShellSocketClientsLogAtDebugOnly(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	r := testnet.Start(t, "r", zap.New(core))
	eventually(t, "r serving", func() error {
		if ok, why := r.Ready(); !ok {
			return errors.New(why)
		}
		return nil
	})
	logs.TakeAll() // startup

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := endpoint.DialShell(ctx, "unix", r.Socket, "dmsgd-tree")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Shell(ctx, "tree"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	eventually(t, "the shell link logged down", func() error {
		if logs.FilterMessage("link down").Len() == 0 {
			return errNotYet
		}
		return nil
	})
	all := logs.TakeAll()
	for _, e := range all {
		if e.Level > zapcore.DebugLevel {
			t.Errorf("a shell call logged at %s: %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
	for _, msg := range []string{"link up", "peer connected", "span: conn up", "shell command", "span: conn down", "link down"} {
		if len(filter(all, msg)) != 1 {
			t.Errorf("%q logged %d times at debug during one shell call, want once", msg, len(filter(all, msg)))
		}
	}

	l := dialLeaf(t, "tcp://"+r.Addr(), leafConfig{Label: "peer"})
	l.waitAcked()
	eventually(t, "a peer's link logged at info", func() error {
		for _, e := range logs.FilterMessage("peer connected").All() {
			if e.Level == zapcore.InfoLevel {
				return nil
			}
		}
		return errNotYet
	})
}

var errNotYet = errors.New("not yet")

func filter(es []observer.LoggedEntry, msg string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range es {
		if e.Message == msg {
			out = append(out, e)
		}
	}
	return out
}
