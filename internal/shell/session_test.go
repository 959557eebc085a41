package shell

import (
	"errors"
	"strings"
	"testing"
)

type fakeEnv struct{ spanned, remote string }

func (f *fakeEnv) Tree() *Tree { return sampleTree() }
func (f *fakeEnv) Span(target string) string {
	f.spanned = target
	return "Connected to " + target
}
func (f *fakeEnv) Remote(label, line string) []string {
	f.remote = label + " " + line
	return []string{"remote output\n"}
}

// run executes lines in a session that may run everything, as the shell
// socket's may, and returns every output message.
func run(env Env, pingErr error, lines ...string) []string {
	var out []string
	s := NewSession(env, func(t string) { out = append(out, t) }, func() error { return pingErr }, nil)
	s.SetAuthorizer(AllowAll)
	for _, l := range lines {
		s.Exec(l)
	}
	return out
}

func TestSessionCommands(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []string
	}{
		{"an empty line asks only for the prompt", "", []string{Prompt}},
		{"a NUL-terminated empty line too", "\x00", []string{Prompt}},
		{"help lists one command per message", "help", []string{
			"help            Command help\n",
			"span <host>     Span to target host\n",
			"tree [json|dot] Dump spanning tree\n",
			"ping            Ping the shell peer\n",
			"links           List connected peers\n",
			"circuits        List virtual circuits\n",
			"@<node> <cmd>   Run cmd on a remote router via circuit\n",
			Prompt}},
		{"an unknown command is named", "bogus", []string{"Unrecognized command: bogus\n", Prompt}},
		{"ping says it is sending", "ping", []string{"sending ping\n", Prompt}},
		{"span connects and reports", "span 127.0.0.1:9", []string{"Connected to 127.0.0.1:9\n", Prompt}},
		{"span needs a host", "span", []string{"usage: span <host>[:port]\n", Prompt}},
		{"@node runs remotely", "@r4 tree", []string{"remote output\n", Prompt}},
		{"@node needs a command", "@r4", []string{"usage: @<node> <cmd>\n", Prompt}},
		{"tree rejects unknown formats", "tree yaml", []string{"tree: unknown format yaml (text, json or dot)\n", Prompt}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(&fakeEnv{}, nil, tt.line)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestTreeTextOfASmallTreeIsOneMessageThenThePrompt(t *testing.T) {
	got := run(&fakeEnv{}, nil, "tree")
	want := []string{strings.Join(TextLines(sampleTree()), ""), Prompt}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
}

func TestTreeTextOfABigTreeIsChunkedAtLineEnds(t *testing.T) {
	tr := generatedTree(3, 400, 3)
	got := run(&bigEnv{tr}, nil, "tree")
	if got[len(got)-1] != Prompt || len(got) < 3 {
		t.Fatalf("want several chunks then the prompt, got %d messages", len(got))
	}
	for _, c := range got[:len(got)-1] {
		if len(c) > chunkSize || len(c) < chunkSize/2 && c != got[len(got)-2] || !strings.HasSuffix(c, "\n") {
			t.Fatalf("chunk of %d bytes, ending %q", len(c), c[max(0, len(c)-8):])
		}
	}
	if strings.Join(got[:len(got)-1], "") != strings.Join(TextLines(tr), "") {
		t.Fatal("chunks do not reassemble to the dump")
	}
}

func TestTreeJSONIsChunkedAndReassembles(t *testing.T) {
	tr := sampleTree()
	for i := 0; i < 2000; i++ { // make the document larger than one chunk
		tr.Links = append(tr.Links, tr.Links[0])
	}
	env := &bigEnv{tr}
	got := run(env, nil, "tree json")
	if got[len(got)-1] != Prompt || len(got) < 3 {
		t.Fatalf("want several chunks then the prompt, got %d messages", len(got))
	}
	for _, c := range got[:len(got)-1] {
		if len(c) > chunkSize {
			t.Fatalf("chunk of %d bytes", len(c))
		}
	}
	if strings.Join(got[:len(got)-1], "") != string(JSON(tr)) {
		t.Fatal("chunks do not reassemble to the document")
	}
}

type bigEnv struct{ t *Tree }

func (b *bigEnv) Tree() *Tree                    { return b.t }
func (b *bigEnv) Span(string) string             { return "" }
func (b *bigEnv) Remote(string, string) []string { return nil }

func TestPingReplyIsPrintedOnlyForTheShellsOwnPing(t *testing.T) {
	var out []string
	s := NewSession(&fakeEnv{}, func(t string) { out = append(out, t) }, func() error { return nil }, nil)
	s.PingReply() // a keepalive answer: nothing printed
	if len(out) != 0 {
		t.Fatalf("keepalive answer printed %q", out)
	}
	s.Exec("ping")
	s.PingReply()
	s.PingReply()
	if strings.Join(out, "") != "sending ping\n"+Prompt+"ping reply\n" {
		t.Fatalf("got %q", out)
	}
}

func TestAFailedPingSaysSo(t *testing.T) {
	got := run(&fakeEnv{}, errors.New("link closed"), "ping")
	if strings.Join(got, "") != "sending ping\nping failed: link closed\n"+Prompt {
		t.Fatalf("got %q", got)
	}
}

// blockingEnv's Remote waits until release is closed.
type blockingEnv struct {
	fakeEnv
	release chan struct{}
}

func (b *blockingEnv) Remote(label, line string) []string {
	<-b.release
	return []string{"remote output\n"}
}

// A session runs one background command at a time, and is free again
// before that command's prompt goes out; a command the spawner has no
// room for is refused with its reason.
func TestASessionRunsOneBackgroundCommandAtATime(t *testing.T) {
	env := &blockingEnv{release: make(chan struct{})}
	outs := make(chan string, 16)
	spawned := make(chan struct{}, 4)
	spawn := func(f func()) error {
		go func() { f(); spawned <- struct{}{} }()
		return nil
	}
	s := NewSession(env, func(t string) { outs <- t }, func() error { return nil }, spawn)
	s.SetAuthorizer(AllowAll)
	s.Exec("@r4 tree")
	s.Exec("@r4 tree")
	if got := <-outs; !strings.HasPrefix(got, "refused: busy: ") {
		t.Fatalf("a second background command answered %q", got)
	}
	<-outs // its prompt
	close(env.release)
	if got := <-outs; got != "remote output\n" {
		t.Fatalf("got %q", got)
	}
	if got := <-outs; got != Prompt {
		t.Fatalf("got %q", got)
	}
	s.Exec("@r4 tree") // sent on seeing the prompt: not busy any more
	if got := <-outs; got != "remote output\n" {
		t.Fatalf("after the prompt, got %q", got)
	}
	<-outs
	<-spawned
	<-spawned

	full := NewSession(&fakeEnv{}, func(t string) { outs <- t }, func() error { return nil },
		func(func()) error {
			return errors.New("limits.max_shell_tasks (2) commands run on this router already")
		})
	full.SetAuthorizer(AllowAll)
	full.Exec("@r4 tree")
	if got := <-outs; got != "refused: busy: limits.max_shell_tasks (2) commands run on this router already\n" {
		t.Fatalf("a command the router has no room for answered %q", got)
	}
	<-outs
	full.Exec("@r4 tree") // the refusal left the session free
	if got := <-outs; !strings.HasPrefix(got, "refused: busy: limits") {
		t.Fatalf("got %q", got)
	}
}

// Every command the shell dispatches is in `help`, and every command help
// lists is dispatched: a command added beside the registry, or a help
// line without a command, fails here.
func TestHelpListsExactlyTheCommandsTheShellRuns(t *testing.T) {
	help := run(&fakeEnv{}, nil, "help")
	help = help[:len(help)-1] // the prompt
	listed := make(map[string]bool)
	for _, line := range help {
		word, _, _ := strings.Cut(line, " ")
		listed[word] = true
		if c, _, _ := lookup(word); c == nil {
			t.Errorf("help lists %q, which the shell does not run", word)
		}
		if out := run(&fakeEnv{}, nil, word); strings.HasPrefix(out[0], "Unrecognized command") {
			t.Errorf("help lists %q, which Exec answers with %q", word, out[0])
		}
	}
	dispatched := make([]string, 0, len(byName)+len(prefixed))
	for name := range byName {
		dispatched = append(dispatched, name)
	}
	for _, c := range prefixed { // help shows "@<node>": the prefix and its first argument
		word, _, _ := strings.Cut(c.synopsis(), " ")
		dispatched = append(dispatched, word)
	}
	for _, name := range dispatched {
		if !listed[name] {
			t.Errorf("the shell runs %q, which help does not list (help: %q)", name, help)
		}
	}
	if len(dispatched) != len(help) {
		t.Errorf("%d commands dispatched, %d help lines", len(dispatched), len(help))
	}
}
