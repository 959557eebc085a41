package shell

import (
	"fmt"
	"strings"
)

// command is one shell command, declared once: Exec dispatches through
// it, Classify judges lines by it and `help` is written from it, so no
// command can run without a class, nor be missing from help.
type command struct {
	name string // the word that runs it; for a prefix command, what the word starts with
	args string // argument synopsis, for help
	help string // what it does, for help

	// prefix: the command is the first word's prefix, and the rest of the
	// line (the word's remainder included) is its argument: `@<node> <cmd>`.
	prefix bool

	// class decides who may run the command (authz.go). A command that
	// runs another one on its caller's behalf (`@node cmd`) has classify
	// instead, which judges the rest of the line; depth counts such
	// commands around it.
	class    Class
	classify func(arg string, depth int) (Class, string, error)

	// run runs the command; it returns true when it prints the prompt
	// itself, later (span, @node).
	run func(s *Session, arg string) (async bool)
}

// commands are the shell's commands, in the order help lists them;
// byName indexes the word commands, prefixed the prefix ones.
var (
	commands []*command
	byName   map[string]*command
	prefixed []*command
)

func init() {
	register(
		&command{name: "help", help: "Command help", class: ReadOnly,
			run: func(s *Session, _ string) bool { s.lines(helpLines()); return false }},
		&command{name: "span", args: "<host>", help: "Span to target host", class: Privileged,
			run: func(s *Session, arg string) bool { return s.span(arg) }},
		&command{name: "tree", args: "[json|dot]", help: "Dump spanning tree", class: ReadOnly,
			run: func(s *Session, arg string) bool { s.tree(arg); return false }},
		&command{name: "ping", help: "Ping the shell peer", class: ReadOnly,
			run: func(s *Session, _ string) bool { s.sendPing(); return false }},
		&command{name: "links", help: "List connected peers", class: ReadOnly,
			run: func(s *Session, _ string) bool { s.lines(LinkLines(s.env.Tree())); return false }},
		&command{name: "circuits", help: "List virtual circuits", class: ReadOnly,
			run: func(s *Session, _ string) bool { s.lines(CircuitLines(s.env.Tree())); return false }},
		&command{name: "@", prefix: true, args: "<node> <cmd>", help: "Run cmd on a remote router via circuit",
			classify: classifyRemote,
			run:      func(s *Session, arg string) bool { return s.remote(arg) }},
	)
}

// register adds commands to the registry, refusing a name taken twice or
// a command without a way to classify it.
func register(cs ...*command) {
	if byName == nil {
		byName = make(map[string]*command)
	}
	for _, c := range cs {
		if c.run == nil || c.help == "" {
			panic("shell: command " + c.name + " without handler or help")
		}
		if c.prefix {
			if c.classify == nil {
				panic("shell: prefix command " + c.name + " without classify")
			}
			prefixed = append(prefixed, c)
		} else {
			if _, dup := byName[c.name]; dup {
				panic("shell: command " + c.name + " registered twice")
			}
			byName[c.name] = c
		}
		commands = append(commands, c)
	}
}

// lookup finds the command a line runs and its argument. word is the
// line's first word, for messages about unknown commands; c is nil when
// no command is registered for it. line is trimmed already.
func lookup(line string) (c *command, word, arg string) {
	word, rest, _ := strings.Cut(line, " ")
	for _, p := range prefixed {
		if strings.HasPrefix(word, p.name) {
			return p, word, line[len(p.name):]
		}
	}
	return byName[word], word, strings.TrimSpace(rest)
}

// synopsis is how help shows the command's name and arguments.
func (c *command) synopsis() string {
	switch {
	case c.args == "":
		return c.name
	case c.prefix:
		return c.name + c.args
	}
	return c.name + " " + c.args
}

// helpLines is the output of `help`: one line, and message, per command.
func helpLines() []string {
	out := make([]string, 0, len(commands))
	for _, c := range commands {
		out = append(out, fmt.Sprintf("%-15s %s\n", c.synopsis(), c.help))
	}
	return out
}

// MaxRemoteHops bounds the `@node` prefixes of one command line: each one
// makes a router open a circuit and wait for it.
const MaxRemoteHops = 8

// Classify returns the class of a command line: that of its command, and
// for `@node cmd` that of cmd, which the far router runs on this router's
// behalf. name is the command word that decided it, for messages. A line
// with more than MaxRemoteHops `@` prefixes is an error.
func Classify(line string) (class Class, name string, err error) {
	return classify(strings.TrimSpace(strings.TrimRight(line, "\x00")), 0)
}

// classify classifies a trimmed line run on behalf of depth commands
// around it.
func classify(line string, depth int) (Class, string, error) {
	c, word, arg := lookup(line)
	switch {
	case c != nil && c.classify != nil:
		return c.classify(arg, depth)
	case c != nil:
		return c.class, word, nil
	case depth > 0 && word != "":
		return Privileged, word, nil // the far router may know it
	}
	return ReadOnly, word, nil // it only prints that it is unknown
}

// classifyRemote gives `@node cmd` the class of cmd.
func classifyRemote(arg string, depth int) (Class, string, error) {
	if depth+1 > MaxRemoteHops {
		return Privileged, "@", fmt.Errorf("at most %d @node hops in one command", MaxRemoteHops)
	}
	_, rest, _ := strings.Cut(arg, " ")
	return classify(strings.TrimSpace(rest), depth+1)
}
