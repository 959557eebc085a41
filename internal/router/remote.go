package router

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/endpoint"
)

// The near half of `@node cmd`: a circuit to the far router, opened on
// one of our links as any endpoint opens one, one DBG_SHELL inside it,
// and the far shell's output collected up to its prompt. The far router
// is a peer like any other: what it may make us hold is bounded by
// limits.remote_output_bytes, and a call over it is aborted and says so
// instead of growing, or dropping output unnoticed.

// runRemote opens a circuit on via toward the span spanID, sends line as
// a DBG_SHELL inside it and returns the output up to the prompt.
func (r *Router) runRemote(ctx context.Context, via *link, spanID uint64, line string) ([]string, error) {
	limit := int(r.Config().Limits.RemoteOutputBytes)
	c, err := endpoint.OpenCircuit(via.conn, spanID, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetShellLimit(limit)
	text, err := c.Shell(ctx, line)
	var out []string
	if text != "" {
		out = []string{text}
	}
	switch {
	case errors.Is(err, endpoint.ErrOutputLimit):
		r.metrics.LimitHit("remote_output_bytes")
		r.events.Warn("shell.remote_output_bytes", "@node aborted: the far router's output went over limits.remote_output_bytes",
			zap.String("link", via.id), zap.String("peer", via.conn.RemoteAddr()), zap.Int("remote_output_bytes", limit))
		err = fmt.Errorf("output over %d bytes (limits.remote_output_bytes); circuit aborted", limit)
	case errors.Is(err, context.DeadlineExceeded):
		err = errors.New("no answer in time")
	}
	return out, err
}
