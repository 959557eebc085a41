package shell

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
)

func TestEveryCommandHasTheClassTheInterfaceGivesIt(t *testing.T) {
	tests := []struct {
		line string
		want Class
	}{
		{"", ReadOnly},
		{"help", ReadOnly},
		{"tree", ReadOnly},
		{"tree json", ReadOnly},
		{"tree dot", ReadOnly},
		{"ping", ReadOnly},
		{"links", ReadOnly},
		{"circuits", ReadOnly},
		{"span 10.0.0.1:987", Privileged},
		{"span", Privileged},
		{"bogus", ReadOnly}, // it only prints that it is unknown
		{"@n2 tree", ReadOnly},
		{"@n2 links", ReadOnly},
		{"@n2 span 10.0.0.1", Privileged},
		{"@n2 bogus", Privileged}, // the far router may know it
		{"@n2", ReadOnly},         // usage
		{"@n2 @n3 tree json", ReadOnly},
		{"@n2 @n3 span x", Privileged},
		{"  span x\x00", Privileged},
	}
	for _, tt := range tests {
		got, _, err := Classify(tt.line)
		if err != nil || got != tt.want {
			t.Errorf("Classify(%q) = %s, %v; want %s", tt.line, got, err, tt.want)
		}
	}
	for _, c := range commands {
		if c.prefix {
			continue // classified by what it runs, above
		}
		if got, _, _ := Classify(c.name); got != c.class {
			t.Errorf("command %s classifies as %s, its table says %s", c.name, got, c.class)
		}
	}
	deep := strings.Repeat("@n ", MaxRemoteHops+1) + "tree"
	if _, _, err := Classify(deep); err == nil {
		t.Errorf("%d hops classified without error", MaxRemoteHops+1)
	}
	if _, _, err := Classify(strings.Repeat("@n ", MaxRemoteHops) + "tree"); err != nil {
		t.Errorf("%d hops: %v", MaxRemoteHops, err)
	}
}

// carriers are every way a command reaches a router, with the link it
// came in on.
var carriers = []struct {
	name string
	o    Caller
}{
	{"shell socket", Caller{Carrier: CarrierShellSocket, Unix: true}},
	{"unix peer", Caller{Carrier: CarrierUnix, Unix: true}},
	{"TCP loopback", Caller{Carrier: CarrierTCP, Loopback: true}},
	{"TCP remote", Caller{Carrier: CarrierTCP}},
	{"TLS pinned remote", Caller{Carrier: CarrierTCP, Pinned: true}},
	{"TLS pinned loopback", Caller{Carrier: CarrierTCP, Pinned: true, Loopback: true}},
	{"circuit via unix", Caller{Carrier: CarrierCircuit, Unix: true}},
	{"circuit via TCP loopback", Caller{Carrier: CarrierCircuit, Loopback: true}},
	{"circuit via TCP remote", Caller{Carrier: CarrierCircuit}},
	{"circuit via TLS pinned", Caller{Carrier: CarrierCircuit, Pinned: true}},
}

// The authorization rule, as a table: for each policy, which carriers may
// run read-only (r) and privileged (p) commands, in carriers' order.
func TestTheAuthorizationRuleForEveryCarrier(t *testing.T) {
	def := config.Defaults().Shell
	with := func(f func(*config.Shell)) config.Shell { p := def; f(&p); return p }
	tests := []struct {
		name   string
		policy config.Shell
		want   string // per carrier: "-" nothing, "r" read-only, "rp" everything
	}{
		{"the defaults", def,
			"rp rp r - - r r r r r"},
		{"shell.tcp off and shell.remote false", with(func(p *config.Shell) { p.TCP, p.Remote = config.ShellTCPOff, false }),
			"rp rp - - - - - - - -"},
		{"shell.tcp all", with(func(p *config.Shell) { p.TCP = config.ShellTCPAll }),
			"rp rp r r r r r r r r"},
		{"privileged from loopback", with(func(p *config.Shell) {
			p.TCPPrivileged, p.RemotePrivileged = config.PrivilegedLoopback, config.PrivilegedLoopback
		}), "rp rp rp - - rp rp rp r r"},
		{"privileged from pinned keys, shell.tcp all", with(func(p *config.Shell) {
			p.TCP, p.TCPPrivileged, p.RemotePrivileged = config.ShellTCPAll, config.PrivilegedPinned, config.PrivilegedPinned
		}), "rp rp r r rp rp r r r rp"},
		{"privileged from all, but shell.tcp loopback", with(func(p *config.Shell) {
			p.TCPPrivileged, p.RemotePrivileged = config.PrivilegedAll, config.PrivilegedAll
		}), "rp rp rp - - rp rp rp rp rp"},
		{"privileged over circuits needs shell.remote", with(func(p *config.Shell) {
			p.Remote, p.RemotePrivileged = false, config.PrivilegedAll
		}), "rp rp r - - r - - - -"},
	}
	for _, tt := range tests {
		want := strings.Fields(tt.want)
		if len(want) != len(carriers) {
			t.Fatalf("%s: %d expectations for %d carriers", tt.name, len(want), len(carriers))
		}
		for i, c := range carriers {
			got := ""
			if Authorize(tt.policy, c.o, ReadOnly) == nil {
				got += "r"
			}
			if Authorize(tt.policy, c.o, Privileged) == nil {
				got += "p"
			}
			if got == "" {
				got = "-"
			}
			if got != want[i] {
				t.Errorf("%s, %s: %q, want %q", tt.name, c.name, got, want[i])
			}
		}
	}
}

// spyEnv records what a session made the router do.
type spyEnv struct{ spanned, remote []string }

func (e *spyEnv) Tree() *Tree { return sampleTree() }
func (e *spyEnv) Span(target string) string {
	e.spanned = append(e.spanned, target)
	return "Connected to " + target
}
func (e *spyEnv) Remote(label, line string) []string {
	e.remote = append(e.remote, label+" "+line)
	return []string{"remote output\n"}
}

// Every command through a session, from every carrier under the
// defaults: a refused line is answered with the reason and the prompt
// and does nothing; an allowed one runs.
func TestASessionRunsEveryCommandOnlyWhereTheRuleAllowsIt(t *testing.T) {
	lines := []string{"help", "tree", "tree json", "ping", "links", "circuits", "bogus",
		"span 127.0.0.1:9", "@n2 tree", "@n2 span 127.0.0.1:9", "@n2 bogus"}
	policy := config.Defaults().Shell
	for _, c := range carriers {
		for _, line := range lines {
			t.Run(fmt.Sprintf("%s from the %s", line, c.name), func(t *testing.T) {
				env := &spyEnv{}
				var out []string
				var judged []string
				s := NewSession(env, func(t string) { out = append(out, t) }, func() error { return nil }, nil)
				s.SetAuthorizer(func(l string, class Class) error {
					judged = append(judged, l)
					return Authorize(policy, c.o, class)
				})
				s.Exec(line)
				class, _, _ := Classify(line)
				allowed := Authorize(policy, c.o, class) == nil
				if len(judged) != 1 || judged[0] != line {
					t.Fatalf("the authorizer judged %q, want the line once", judged)
				}
				if out[len(out)-1] != Prompt {
					t.Fatalf("output %q does not end with the prompt", out)
				}
				refused := strings.HasPrefix(out[0], "refused: ")
				did := len(env.spanned) + len(env.remote)
				switch {
				case allowed && refused:
					t.Fatalf("allowed line refused: %q", out)
				case !allowed && (!refused || did != 0 || len(out) != 2):
					t.Fatalf("refused line answered %q and did %v %v", out, env.spanned, env.remote)
				case !allowed && !strings.Contains(out[0], "shell."):
					t.Fatalf("refusal %q does not name the setting", out[0])
				}
			})
		}
	}
}

func TestASessionWithoutAnAuthorizerRunsReadOnlyCommandsOnly(t *testing.T) {
	env := &spyEnv{}
	var out []string
	s := NewSession(env, func(t string) { out = append(out, t) }, func() error { return nil }, nil)
	s.Exec("span 127.0.0.1:9")
	s.Exec("@n2 span 127.0.0.1:9")
	s.Exec("links")
	if len(env.spanned)+len(env.remote) != 0 {
		t.Fatalf("ran %v %v", env.spanned, env.remote)
	}
	if !strings.HasPrefix(out[0], "refused: span is a privileged command") ||
		!strings.HasPrefix(out[2], "refused: span is a privileged command") || !strings.HasPrefix(out[4], "LINK ") {
		t.Fatalf("output %q", out)
	}
}
