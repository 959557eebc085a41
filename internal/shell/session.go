package shell

import (
	"strings"
	"sync"
)

// Prompt ends the output of every command.
const Prompt = "debug> "

// chunkSize bounds one output message of a bulk rendering (JSON, DOT):
// far below the 1 MiB aux limit, large enough to keep message counts low.
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
	spawn func(func())

	mu      sync.Mutex
	pending int // pings sent by `ping` not yet answered
}

// NewSession returns a session writing to out. ping sends a LNK_PING to
// the shell peer; spawn runs a function in the background (it defaults to
// running it inline).
func NewSession(env Env, out func(string), ping func() error, spawn func(func())) *Session {
	if spawn == nil {
		spawn = func(f func()) { f() }
	}
	return &Session{env: env, out: out, ping: ping, spawn: spawn}
}

var helpLines = []string{
	"help            Command help\n",
	"span <host>     Span to target host\n",
	"tree [json|dot] Dump spanning tree\n",
	"ping            Ping the shell peer\n",
	"links           List connected peers\n",
	"circuits        List virtual circuits\n",
	"@<node> <cmd>   Run cmd on a remote router via circuit\n",
}

// Exec runs one command line and writes its output followed by the prompt
// (for span and @node, once they finish).
func (s *Session) Exec(line string) {
	line = strings.TrimSpace(strings.TrimRight(line, "\x00"))
	if strings.HasPrefix(line, "@") {
		s.remote(line)
		return
	}
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch cmd {
	case "":
	case "help":
		s.lines(helpLines)
	case "tree":
		s.tree(arg)
	case "ping":
		s.sendPing()
	case "links":
		s.lines(LinkLines(s.env.Tree()))
	case "circuits":
		s.lines(CircuitLines(s.env.Tree()))
	case "span":
		s.span(arg)
		return
	default:
		s.out("Unrecognized command: " + cmd + "\n")
	}
	s.out(Prompt)
}

func (s *Session) lines(ls []string) {
	for _, l := range ls {
		s.out(l)
	}
}

func (s *Session) tree(format string) {
	t := s.env.Tree()
	switch format {
	case "", "text":
		s.lines(TextLines(t))
	case "json":
		s.chunks(JSON(t))
	case "dot":
		s.chunks(DOT(t))
	default:
		s.out("tree: unknown format " + format + " (text, json or dot)\n")
	}
}

// chunks sends b in pieces of at most chunkSize bytes, cut after a
// newline when one is near.
func (s *Session) chunks(b []byte) {
	for len(b) > 0 {
		n := min(len(b), chunkSize)
		if n < len(b) {
			if i := strings.LastIndexByte(string(b[:n]), '\n'); i > 0 {
				n = i + 1
			}
		}
		s.out(string(b[:n]))
		b = b[n:]
	}
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

func (s *Session) span(target string) {
	if target == "" {
		s.out("usage: span <host>[:port]\n")
		s.out(Prompt)
		return
	}
	s.spawn(func() {
		s.out(s.env.Span(target) + "\n")
		s.out(Prompt)
	})
}

func (s *Session) remote(line string) {
	label, cmd, _ := strings.Cut(line[1:], " ")
	cmd = strings.TrimSpace(cmd)
	if label == "" || cmd == "" {
		s.out("usage: @<node> <cmd>\n")
		s.out(Prompt)
		return
	}
	s.spawn(func() {
		s.lines(s.env.Remote(label, cmd))
		s.out(Prompt)
	})
}
