package shell

import (
	"fmt"
	"strings"
	"sync"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Prompt ends the output of every command (dmsg.ShellPrompt).
const Prompt = dmsg.ShellPrompt

// chunkSize bounds one output message of a bulk rendering (tree in any
// format): far below the 1 MiB aux limit, large enough to keep message
// counts low.
const chunkSize = 32 << 10

// Env is what a session needs from its router.
type Env interface {
	// Tree returns the router's current view.
	Tree() *Tree
	// Span opens a link to target (span:HOST[:PORT] or HOST[:PORT]) and
	// returns a line saying what happened. It may block.
	Span(target string) string
	// Remote runs line on the router advertising node label, over a
	// circuit, and returns its output. It may block.
	Remote(label, line string) []string
}

// Session is one shell peer's command interpreter. Output goes to out one
// message at a time; the router sends each as a DBG_SHELL|REPLY.
type Session struct {
	env  Env
	out  func(text string)
	ping func() error
	// spawn runs blocking commands (span, @node) off the caller's
	// goroutine, so a link's reader never waits on a dial.
	spawn Spawner
	// authorize judges every command line before it runs (authz.go).
	authorize Authorizer

	mu      sync.Mutex
	pending int  // pings sent by `ping` not yet answered
	busy    bool // a background command of this session is running
}

// Spawner runs f in the background, or returns why it may not now (the
// router runs as many background commands as its limits allow).
type Spawner func(f func()) error

// NewSession returns a session writing to out. ping sends a LNK_PING to
// the shell peer; spawn runs a function in the background (it defaults to
// running it inline). The session runs read-only commands only until
// SetAuthorizer says who may run what.
func NewSession(env Env, out func(string), ping func() error, spawn Spawner) *Session {
	if spawn == nil {
		spawn = func(f func()) error { f(); return nil }
	}
	return &Session{env: env, out: out, ping: ping, spawn: spawn, authorize: readOnly}
}

// SetAuthorizer makes a judge every command line from now on. Call it
// before the first Exec.
func (s *Session) SetAuthorizer(a Authorizer) { s.authorize = a }

// Exec runs one command line and writes its output followed by the prompt
// (for span and @node, once they finish). A line the session's Authorizer
// refuses is answered with the reason and the prompt.
func (s *Session) Exec(line string) {
	line = strings.TrimSpace(strings.TrimRight(line, "\x00"))
	class, name, err := Classify(line)
	if err == nil {
		if err = s.authorize(line, class); err != nil && name != "" {
			err = fmt.Errorf("%s is a %s command; %w", name, class, err)
		}
	}
	if err != nil {
		s.out("refused: " + err.Error() + "\n")
		s.out(Prompt)
		return
	}
	c, word, arg := lookup(line)
	switch {
	case c != nil:
		if c.run(s, arg) {
			return
		}
	case word != "":
		s.out("Unrecognized command: " + word + "\n")
	}
	s.out(Prompt)
}

func (s *Session) lines(ls []string) {
	for _, l := range ls {
		s.out(l)
	}
}

// tree sends the dump in chunks of up to chunkSize bytes, written while
// the tree is walked: a message per line cost a big tree a header and a
// queue entry per line, and a document built whole cost a copy of it.
func (s *Session) tree(format string) {
	t := s.env.Tree()
	w := newChunkWriter(s.out)
	switch format {
	case "", "text":
		eachTextLine(t, func(line []byte) { w.Write(line) })
	case "json":
		writeJSON(w, t)
	case "dot":
		w.Write(DOT(t))
	default:
		s.out("tree: unknown format " + format + " (text, json or dot)\n")
	}
	w.Flush()
}

func (s *Session) sendPing() {
	s.out("sending ping\n")
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	if err := s.ping(); err != nil {
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
		s.out("ping failed: " + err.Error() + "\n")
	}
}

// PingReply is called when the shell peer answers a LNK_PING. Only an
// answer to this shell's own `ping` is printed; keepalive answers are not.
func (s *Session) PingReply() {
	s.mu.Lock()
	print := s.pending > 0
	if print {
		s.pending--
	}
	s.mu.Unlock()
	if print {
		s.out("ping reply\n")
	}
}

// span runs `span <host>`; it reports whether it prints the prompt later.
func (s *Session) span(target string) (async bool) {
	if target == "" {
		s.out("usage: span <host>[:port]\n")
		return false
	}
	s.background(func() { s.out(s.env.Span(target) + "\n") })
	return true
}

// remote runs `@<node> <cmd>`, given "<node> <cmd>"; it reports whether
// it prints the prompt later.
func (s *Session) remote(arg string) (async bool) {
	label, cmd, _ := strings.Cut(arg, " ")
	cmd = strings.TrimSpace(cmd)
	if label == "" || cmd == "" {
		s.out("usage: @<node> <cmd>\n")
		return false
	}
	s.background(func() {
		// The far router's output comes back whole; it goes on in
		// chunks, as tree's does, so that no message outgrows DMSG's aux
		// limit however much the far end sent.
		w := newChunkWriter(s.out)
		for _, l := range s.env.Remote(label, cmd) {
			w.WriteString(l)
		}
		w.Flush()
	})
	return true
}

// background runs work, a command that blocks (span, @node), off the
// caller's goroutine, then prints the prompt. A session runs one such
// command at a time: its clients wait for the prompt before the next
// command, and a peer that does not must not pile up dials, circuits and
// goroutines. A command arriving meanwhile, or one the router has no room
// for, is refused with the reason.
func (s *Session) background(work func()) {
	s.mu.Lock()
	busy := s.busy
	s.busy = true
	s.mu.Unlock()
	if busy {
		s.out("refused: busy: the previous command of this session has not finished\n")
		s.out(Prompt)
		return
	}
	idle := func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}
	err := s.spawn(func() {
		work()
		idle() // before the prompt, after which the client sends its next command
		s.out(Prompt)
	})
	if err != nil {
		idle()
		s.out("refused: busy: " + err.Error() + "\n")
		s.out(Prompt)
	}
}
