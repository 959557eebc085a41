package endpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// The client side of the debug shell (docs/PROTOCOL.md section 7): a
// command goes out as one DBG_SHELL, its output comes back as DBG_SHELL
// replies of any size up to one carrying exactly dmsg.ShellPrompt. On
// the link itself that is how `dmsgd tree` and `dmsgd shell` talk to a
// router's shell socket; inside a circuit it is `@node`.

// ErrOutputLimit reports shell output over the limit set with
// SetShellLimit. Inside a circuit, the circuit was aborted with IO.
var ErrOutputLimit = errors.New("shell output over the limit")

// ErrCircuitClosed reports a circuit that ended before a command's output
// did, without an error of its own.
var ErrCircuitClosed = errors.New("circuit closed")

// DialShell connects to a router's shell socket as a shell client does:
// a LNK_CONN of a client labelled label that asks for no spans, the
// router's LNK_CONN refused with NOSUPP, and the first prompt waited for.
func DialShell(ctx context.Context, network, address, label string) (*Endpoint, error) {
	e, err := Dial(ctx, network, address, Config{
		Conn:             dmsg.Conn{PeerType: dmsg.PeerClient, ProtoVersion: 1, FsLabel: label},
		RefuseRouterConn: true,
		Link:             iocom.Config{ID: "shell"},
	})
	if err != nil {
		return nil, err
	}
	// The router serves the shell once it has sent its LNK_CONN: ask for
	// the first prompt then.
	if _, err = e.WaitRouter(ctx); err == nil {
		_, err = e.Shell(ctx, "")
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("shell %s: %w", address, err)
	}
	return e, nil
}

// Shell runs one command line on the router's shell over the link and
// returns its output without the prompt. "" asks for a prompt alone. A
// command that fails (over the limit, ctx ended) leaves its remaining
// output to be dropped, up to its prompt, so that the next command gets
// its own.
func (e *Endpoint) Shell(ctx context.Context, line string) (string, error) {
	e.shellMu.Lock()
	defer e.shellMu.Unlock()
	e.shell.begin()
	if err := e.link.SendOneWay(shellMsg(line)); err != nil {
		if errors.Is(err, iocom.ErrClosed) {
			err = ErrLinkClosed
		}
		return "", err
	}
	return e.shell.collect(ctx, e.link.Done(), func() error { return ErrLinkClosed })
}

// ShellAsync returns shell output that arrived after a command's prompt
// (such as `ping reply`), without waiting.
func (e *Endpoint) ShellAsync() string { return e.shell.drain() }

// SetShellLimit bounds the shell output held for one command on the link
// to n bytes (0: no bound). Past it the command fails with ErrOutputLimit.
func (e *Endpoint) SetShellLimit(n int) { e.shell.setLimit(n) }

// Shell runs one command line on the shell of the router the circuit
// leads to, and returns its output without the prompt. Once a circuit
// has run a command, the shell's replies on it are the shell's: they no
// longer reach the circuit's handler.
func (c *Circuit) Shell(ctx context.Context, line string) (string, error) {
	c.shellMu.Lock()
	defer c.shellMu.Unlock()
	c.shell.begin()
	if err := c.scope.SendOneWay(shellMsg(line)); err != nil {
		if !errors.Is(err, iocom.ErrClosed) {
			return "", err
		}
		// The circuit ended before the command went in: say why.
		select {
		case <-c.done:
			return "", c.closedErr()
		case <-ctx.Done():
			return "", err
		}
	}
	return c.shell.collect(ctx, c.done, c.closedErr)
}

// SetShellLimit bounds the shell output held for one command in the
// circuit to n bytes (0: no bound). Past it the circuit is aborted with IO
// and the command fails with ErrOutputLimit.
func (c *Circuit) SetShellLimit(n int) { c.shell.setLimit(n) }

func (c *Circuit) closedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrCircuitClosed
}

func shellMsg(line string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell)
	if line != "" {
		m.SetAux(append([]byte(line), 0))
	}
	return m
}

// shellOutput is the shell output received and not yet taken. The
// link's reader fills it; Shell calls take from it. The zero value is
// ready to use.
type shellOutput struct {
	mu      sync.Mutex
	texts   []string // received, not yet taken
	bytes   int      // received since the command began
	limit   int      // 0: none
	over    bool     // bytes went over limit: the rest of the output is dropped
	abort   bool     // over, and the owner has not been told yet
	owed    int      // prompts of abandoned commands still to come: drop up to them
	failed  error    // the output can no longer come (a broken circuit)
	started bool     // a command was sent
	ready   chan struct{}
}

func (s *shellOutput) readyLocked() chan struct{} {
	if s.ready == nil {
		s.ready = make(chan struct{}, 1)
	}
	return s.ready
}

func (s *shellOutput) wake() {
	s.mu.Lock()
	ch := s.readyLocked()
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *shellOutput) setLimit(n int) {
	s.mu.Lock()
	s.limit = n
	s.mu.Unlock()
}

// begin starts a command: its output counts toward the limit afresh.
func (s *shellOutput) begin() {
	s.mu.Lock()
	s.bytes, s.over, s.abort, s.started = 0, false, false, true
	s.mu.Unlock()
}

func (s *shellOutput) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// fail ends every wait for output with err.
func (s *shellOutput) fail(err error) {
	s.mu.Lock()
	s.failed = err
	s.mu.Unlock()
	s.wake()
}

// take keeps m if it is shell output and reports whether it was.
func (s *shellOutput) take(m *dmsg.Msg) bool {
	if dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply == 0 {
		return false
	}
	text := strings.TrimRight(string(m.Aux), "\x00")
	prompt := text == dmsg.ShellPrompt
	s.mu.Lock()
	switch {
	case s.owed > 0:
		// Output of a command its caller gave up on.
		if prompt {
			s.owed--
		}
	case prompt:
		s.texts = append(s.texts, text)
	case s.over:
	case s.limit > 0 && s.bytes+len(text) > s.limit:
		s.over, s.abort = true, true
	default:
		s.texts = append(s.texts, text)
		s.bytes += len(text)
	}
	s.mu.Unlock()
	s.wake()
	return true
}

// overLimit reports, once, that the output went over the limit.
func (s *shellOutput) overLimit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.abort
	s.abort = false
	return was
}

// abandon gives up on the command being collected: what is left of its
// output, up to and including its prompt, is dropped, now or as it comes.
// Called with s.mu held.
func (s *shellOutput) abandonLocked() {
	for i, t := range s.texts {
		if t == dmsg.ShellPrompt {
			s.texts = s.texts[i+1:]
			return
		}
	}
	s.texts = nil
	s.owed++
}

// collect gathers output up to the next prompt. It gives up when ctx
// ends, when the output went over the limit or can no longer come, or
// when done is closed and nothing is left, with closed().
func (s *shellOutput) collect(ctx context.Context, done <-chan struct{}, closed func() error) (string, error) {
	var b strings.Builder
	for {
		s.mu.Lock()
		for len(s.texts) > 0 {
			t := s.texts[0]
			s.texts = s.texts[1:]
			if t == dmsg.ShellPrompt {
				s.mu.Unlock()
				return b.String(), nil
			}
			b.WriteString(t)
		}
		var err error
		switch {
		case s.failed != nil:
			err = s.failed
		case s.over:
			err = fmt.Errorf("%w of %d bytes", ErrOutputLimit, s.limit)
			s.abandonLocked()
		}
		ch := s.readyLocked()
		s.mu.Unlock()
		if err != nil {
			return b.String(), err
		}
		select {
		case <-ch:
		case <-done:
			if s.pending() {
				continue
			}
			return b.String(), closed()
		case <-ctx.Done():
			s.mu.Lock()
			s.abandonLocked()
			s.mu.Unlock()
			return b.String(), ctx.Err()
		}
	}
}

func (s *shellOutput) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.texts) > 0
}

// drain returns everything received and not yet taken.
func (s *shellOutput) drain() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := strings.Join(s.texts, "")
	s.texts = nil
	return out
}
