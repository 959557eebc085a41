package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// The near half of `@node cmd`: a circuit to the far router, one DBG_SHELL
// inside it, and the far shell's output collected up to its prompt. The
// far router is a peer like any other: what it may make us hold is
// bounded by limits.remote_output_bytes, and a call over it is aborted
// and says so instead of growing, or dropping output unnoticed.

// remoteCall is one `@node` exchange on our side of a circuit. Its
// handlers run on the link's reader goroutine; runRemote waits for done.
type remoteCall struct {
	limit int // limits.remote_output_bytes when the call started

	mu    sync.Mutex
	tx    *iocom.Tx    // the circuit's LNK_CIRC
	scope *iocom.Scope // set once the circuit's msgid is known
	out   []string     // output so far, prompt excluded
	bytes int          // the aux bytes of out
	err   error        // why the call ended; nil with the prompt
	ended bool
	done  chan struct{} // closed once ended
	over  bool          // ended for the output limit
}

// errCircuitClosed reports a circuit that ended before the output did.
var errCircuitClosed = errors.New("circuit closed")

// endLocked records the first reason the call ended and wakes
// runRemote; output arriving afterwards is dropped. Called with rc.mu
// held.
func (rc *remoteCall) endLocked(err error) {
	if rc.ended {
		return
	}
	rc.ended, rc.err = true, err
	close(rc.done)
}

// end is endLocked for callers without rc.mu.
func (rc *remoteCall) end(err error) {
	rc.mu.Lock()
	rc.endLocked(err)
	rc.mu.Unlock()
}

// result returns the output collected, why the call ended and whether
// that was the output limit.
func (rc *remoteCall) result() (out []string, err error, over bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.out, rc.err, rc.over
}

// circMsg handles the LNK_CIRC's answers: its end ends the call (with the
// error it carries) before the scope is closed, so that a command sent
// into the closed scope finds the reason waiting.
func (rc *remoteCall) circMsg(tx *iocom.Tx, m *dmsg.Msg) {
	if m.Cmd&dmsg.FlagDelete == 0 {
		return
	}
	err := errCircuitClosed
	if m.Error != 0 {
		err = errors.New("circuit failed: " + dmsg.ErrorString(m.Error))
	}
	rc.mu.Lock()
	rc.endLocked(err)
	s := rc.scope
	rc.mu.Unlock()
	if s != nil {
		s.Close(dmsg.ErrLostLink)
	}
	tx.Close()
}

func (rc *remoteCall) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }

// OneWay collects the far shell's output up to its prompt, and aborts the
// circuit with IO once it would hold more than the limit.
func (rc *remoteCall) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply == 0 {
		return
	}
	text := strings.TrimRight(string(m.Aux), "\x00")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case rc.ended:
		return
	case text == shell.Prompt:
		rc.endLocked(nil)
		return
	case rc.bytes+len(text) > rc.limit:
		rc.over = true
		rc.endLocked(fmt.Errorf("output over %d bytes (limits.remote_output_bytes); circuit aborted", rc.limit))
		rc.tx.Abort(dmsg.ErrIO)
		// On the reader goroutine, as Close wants: whatever the far
		// end still sends on the circuit is dropped from now on.
		rc.scope.Close(dmsg.ErrIO)
		return
	}
	rc.out = append(rc.out, text)
	rc.bytes += len(text)
}

// ScopeFailed ends a call whose far end broke the protocol inside the
// circuit; the deferred Close in runRemote then closes the circuit.
func (rc *remoteCall) ScopeFailed(_ *iocom.Scope, err error) { rc.end(err) }

// runRemote opens a circuit on via toward the span spanID, sends line as
// a DBG_SHELL inside it and collects the output up to the prompt.
func (r *Router) runRemote(ctx context.Context, via *link, spanID uint64, line string) ([]string, error) {
	conn := via.conn
	rc := &remoteCall{limit: int(r.Config().Limits.RemoteOutputBytes), done: make(chan struct{})}
	cmd := dmsg.NewMsg(dmsg.DbgShell)
	cmd.SetAux(append([]byte(line), 0))
	// Hold rc.mu until the command is queued in the circuit: the far end
	// may refuse the circuit at once, and its answer, handled on the
	// link's reader, must find the scope to close and must not close it
	// before the command is in. A circuit may carry data before it is
	// accepted (docs/PROTOCOL.md section 5); on a refused one it is dropped.
	rc.mu.Lock()
	tx, err := conn.Open(dmsg.NewCircMsg(0, &dmsg.Circ{Target: spanID}), rc.circMsg)
	if err != nil {
		rc.mu.Unlock()
		return nil, err
	}
	defer tx.Close()
	rc.tx = tx
	scope, err := conn.OpenScope(tx.MsgID(), true, rc)
	if err == nil {
		rc.scope = scope
		err = scope.SendOneWay(cmd)
	}
	rc.mu.Unlock()
	if err != nil {
		return nil, r.remoteSendFailed(ctx, rc, err)
	}
	select {
	case <-rc.done:
	case <-ctx.Done():
		rc.end(errors.New("no answer in time"))
	}
	out, err, over := rc.result()
	if over {
		r.metrics.LimitHit("remote_output_bytes")
		r.events.Warn("shell.remote_output_bytes", "@node aborted: the far router's output went over limits.remote_output_bytes",
			zap.String("link", via.id), zap.String("peer", conn.RemoteAddr()), zap.Int("remote_output_bytes", rc.limit))
	}
	return out, err
}

// remoteSendFailed returns why the command could not be sent: the reason
// the circuit ended if there is one (a refusal handled already, or the
// link's loss, which ends the LNK_CIRC once the reader has stopped),
// rather than the bare "link closed" of the send.
func (r *Router) remoteSendFailed(ctx context.Context, rc *remoteCall, err error) error {
	if !errors.Is(err, iocom.ErrClosed) {
		return err
	}
	select {
	case <-rc.done:
		_, why, _ := rc.result()
		return why
	case <-ctx.Done():
		return err
	}
}
