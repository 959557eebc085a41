package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// captureDir holds the golden captures of the C peer.
const captureDir = "../../testdata/dmsg-c-peer/"

// readCapture decodes every message of one direction of a capture.
func readCapture(tb testing.TB, name string) []*dmsg.Msg {
	tb.Helper()
	b, err := os.ReadFile(captureDir + name)
	if err != nil {
		tb.Fatal(err)
	}
	dec := dmsg.NewDecoder(bytes.NewReader(b))
	var out []*dmsg.Msg
	for {
		m, err := dec.Decode()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("%s: message %d: %v", name, len(out)+1, err)
		}
		out = append(out, m)
	}
}

// Shell-visible events: the text of a DBG_SHELL|REPLY, or these markers.
const (
	evPing      = "<LNK_PING>"       // a one-way LNK_PING from the router
	evPingReply = "<LNK_PING|REPLY>" // the router's answer to our LNK_PING
)

// shellEvent maps a message from the router to what a shell user sees,
// "" for protocol traffic.
func shellEvent(m *dmsg.Msg) string {
	switch {
	case isShellReply(m):
		return dmsgtest.Text(m)
	case dmsgtest.IsPing(m):
		return evPing
	case m.Cmd == dmsg.LnkPing|dmsg.FlagReply:
		return evPingReply
	}
	return ""
}

// segments cuts events into one segment per prompt, the prompt included.
func segments(events []string) [][]string {
	var out [][]string
	var cur []string
	for _, e := range events {
		cur = append(cur, e)
		if e == shell.Prompt {
			out = append(out, cur)
			cur = nil
		}
	}
	return out
}

// cShell is a raw peer behaving as DragonFly's `hammer2 shell` (libdmsg
// 2014+) does in testdata/dmsg-c-peer/shell-basic: it sends the 0x1106
// LNK_CONN, refuses every LNK_CONN of the router with NOSUPP (0xe80fff01),
// asks for the first prompt when the router's libdmsg-form LNK_CONN
// arrives, acknowledges relayed spans and answers LNK_PINGs.
type cShell struct {
	tb    testing.TB
	p     *rawPeer
	hello bool
	spans []uint64 // LNK_SPANs the router opened on us
}

func dialCShell(tb testing.TB, addr string, conn *dmsg.Msg) *cShell {
	s := &cShell{tb: tb, p: dialRaw(tb, addr, false)}
	s.p.send(conn)
	return s
}

// event returns the next shell-visible event, handling protocol traffic
// on the way.
func (s *cShell) event() string {
	s.tb.Helper()
	for {
		m := s.p.Next("shell output")
		switch {
		case isConnCreate(m):
			s.p.send(dmsgtest.Refuse(m.MsgID, dmsg.ErrNoSupp))
			if dmsg.Base(m.Cmd) == dmsg.LnkConnV2 && !s.hello {
				s.hello = true
				s.p.send(dmsgtest.ShellLine(""))
			}
		case isCmd(dmsg.LnkSpan, dmsg.FlagCreate)(m):
			s.spans = append(s.spans, m.MsgID)
			s.p.send(dmsgtest.Ack(m.MsgID))
		case dmsgtest.IsPing(m):
			s.p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}})
			return evPing
		default:
			if e := shellEvent(m); e != "" {
				return e
			}
		}
	}
}

// untilPrompt collects events up to and including the next prompt.
func (s *cShell) untilPrompt() []string {
	s.tb.Helper()
	var out []string
	for {
		e := s.event()
		out = append(out, e)
		if e == shell.Prompt {
			return out
		}
	}
}

// run sends one command line and collects its output up to the prompt.
func (s *cShell) run(line string) []string {
	s.tb.Helper()
	s.p.send(dmsgtest.ShellLine(line))
	return s.untilPrompt()
}

// quiet returns the events that arrive before the answer to a LNK_PING
// sent now: everything the router had to say by then.
func (s *cShell) quiet() []string {
	s.tb.Helper()
	s.p.send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}})
	var out []string
	for {
		e := s.event()
		if e == evPingReply {
			return out
		}
		out = append(out, e)
	}
}

// A libdmsg shell client replaying the commands of the shell-basic capture
// sees what the C service showed it, command by command, except where
// dmsgd's content differs by design (its help lists more commands, its
// tree holds its own advertisement).
func TestALibdmsgShellClientSeesWhatTheCServiceShowed(t *testing.T) {
	c2s := readCapture(t, "shell-basic.c2s.bin")
	s2c := readCapture(t, "shell-basic.s2c.bin")
	if c2s[0].Cmd != dmsg.LnkConnV2|dmsg.FlagCreate {
		t.Fatalf("capture: first client message is %s, want the 0x1106 LNK_CONN", dmsg.CmdString(c2s[0].Cmd))
	}
	var lines []string // the hello (an empty line), then what the user typed
	for _, m := range c2s[1:] {
		if m.Cmd == dmsg.DbgShell {
			lines = append(lines, dmsgtest.Text(m))
		}
	}
	var events []string
	for _, m := range s2c {
		if e := shellEvent(m); e != "" {
			events = append(events, e)
		}
	}
	want := segments(events)
	if len(lines) != 6 || lines[0] != "" || len(want) != 6 {
		t.Fatalf("capture: hello + commands %q and %d prompts, want hello + 5 commands", lines, len(want))
	}
	want = want[1:] // the hello's prompt is checked on its own
	lines = lines[1:]

	tests := []struct {
		name string
		addr func(r *testRouter) string
	}{
		{"over TCP from loopback", func(r *testRouter) string { return r.tcpURL() }},
		{"over the shell socket", func(r *testRouter) string { return r.shellURL() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, "r", withoutKeepalive())
			sh := dialCShell(t, tc.addr(r), c2s[0])

			if got := sh.untilPrompt(); !slices.Equal(got, []string{shell.Prompt}) {
				t.Fatalf("answer to the empty DBG_SHELL = %q, want exactly the prompt", got)
			}
			if extra := sh.quiet(); len(extra) != 0 {
				t.Fatalf("more output after the first prompt: %q", extra)
			}

			for i, line := range lines {
				got := sh.run(line)
				switch line {
				case "help":
					if len(got) < 3 || !slices.Equal(got[:2], want[i][:2]) || got[len(got)-1] != shell.Prompt {
						t.Errorf("help = %q, want it to start like the C service's %q and end with the prompt", got, want[i])
					}
					for _, l := range got[:len(got)-1] {
						if !strings.HasSuffix(l, "\n") {
							t.Errorf("help line %q is not one message per line", l)
						}
					}
				case "tree":
					if len(sh.spans) != 1 {
						t.Fatalf("the router relayed %d spans to the shell, want its own advertisement", len(sh.spans))
					}
					links := r.Tree().Links
					if len(links) != 1 {
						t.Fatalf("router links = %+v, want the shell's", links)
					}
					// The C service sends a message per line; dmsgd sends
					// the same text in chunks of whole lines (a client
					// prints what it gets), then the prompt on its own.
					wantTree := []string{
						"Cluster ROUTER " + config.NodeIDFor("default").String() + " (default)\n" +
							"    Node 00 " + r.nodeID() + " (r)\n" +
							"\tSLink msgid 0000000000000000 dist=0 via local\n" +
							fmt.Sprintf("\t    Relay-out msgid %016x via %s\n", sh.spans[0], links[0].ID),
						shell.Prompt,
					}
					if !slices.Equal(got, wantTree) {
						t.Errorf("tree =\n%q\nwant\n%q", got, wantTree)
					}
				default:
					if !slices.Equal(got, want[i]) {
						t.Errorf("%q = %q, the C service answered %q", line, got, want[i])
					}
				}
			}
			if extra := sh.quiet(); len(extra) != 0 {
				t.Errorf("output after the last prompt: %q", extra)
			}
		})
	}
}

// The dmsgd shell client (dmsgd tree / dmsgd shell) over the shell socket:
// `tree json` is the docs/INTERFACE.md document, `tree` the section 7 text,
// `ping` answers asynchronously.
func TestTheDmsgdShellClientGetsTheTreeAsJSONAndText(t *testing.T) {
	r := newRouter(t, "r")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := endpoint.DialShell(ctx, "unix", r.socket, "tester")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	out, err := c.Shell(ctx, "tree json")
	if err != nil {
		t.Fatal(err)
	}
	checkTreeJSONSchema(t, []byte(out))
	var tr shell.Tree
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil {
		t.Fatalf("tree json does not decode as the docs/INTERFACE.md document: %v\n%s", err, out)
	}
	if tr.Node != (shell.Self{Label: "r", ID: r.nodeID(), Rnss: r.rnss()}) {
		t.Errorf("node = %+v", tr.Node)
	}
	if len(tr.Links) != 1 || tr.Links[0].PeerLabel != "tester" || tr.Links[0].PeerType != "client" ||
		tr.Links[0].State != "up" || tr.Links[0].Remote == "" {
		t.Errorf("links = %+v, want the shell client's link, up", tr.Links)
	} else if _, err := time.Parse(time.RFC3339, tr.Links[0].Since); err != nil {
		t.Errorf("links[0].since: %v", err)
	}
	self := findNode(&tr, "router", "r")
	if len(tr.Clusters) != 1 || tr.Clusters[0].Label != "default" || self == nil || len(self.Adverts) != 1 ||
		self.Adverts[0].Via != "local" || self.Adverts[0].Dist != 0 || self.Adverts[0].MsgID != "0000000000000000" {
		t.Errorf("clusters = %+v, want the router's own advertisement via local", tr.Clusters)
	}

	text, err := c.Shell(ctx, "tree")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(shell.TextLines(r.Tree()), ""); text != want {
		t.Errorf("tree =\n%s\nwant\n%s", text, want)
	}

	if out, err := c.Shell(ctx, "ping"); err != nil || out != "sending ping\n" {
		t.Errorf("ping = %q, %v", out, err)
	}
	eventually(t, "ping reply arrives after the prompt", func() error {
		if a := c.ShellAsync(); a != "ping reply\n" {
			return fmt.Errorf("async output %q", a)
		}
		return nil
	})
	if out, err := c.Shell(ctx, "bogus"); err != nil || out != "Unrecognized command: bogus\n" {
		t.Errorf("bogus = %q, %v", out, err)
	}
}

// checkTreeJSONSchema checks that every key docs/INTERFACE.md documents is
// present, with lists rendered as lists (never null).
func checkTreeJSONSchema(t *testing.T, b []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("tree json: %v\n%s", err, b)
	}
	has := func(where string, obj any, keys ...string) {
		m, ok := obj.(map[string]any)
		if !ok {
			t.Errorf("%s is %T, want an object", where, obj)
			return
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s lacks %q: %v", where, k, m)
			}
		}
	}
	list := func(where string, v any) []any {
		l, ok := v.([]any)
		if !ok {
			t.Errorf("%s is %T, want a list", where, v)
		}
		return l
	}
	has("document", doc, "node", "links", "clusters")
	has("node", doc["node"], "label", "id", "rnss")
	for i, l := range list("links", doc["links"]) {
		has(fmt.Sprintf("links[%d]", i), l, "id", "remote", "peer_label", "peer_type", "state", "since")
	}
	for i, c := range list("clusters", doc["clusters"]) {
		has(fmt.Sprintf("clusters[%d]", i), c, "peer_type", "id", "label", "nodes")
		cm, _ := c.(map[string]any)
		for j, n := range list("nodes", cm["nodes"]) {
			has(fmt.Sprintf("clusters[%d].nodes[%d]", i, j), n, "pfs_type", "id", "label", "links")
			nm, _ := n.(map[string]any)
			for k, l := range list("links", nm["links"]) {
				has(fmt.Sprintf("clusters[%d].nodes[%d].links[%d]", i, j, k), l, "msgid", "dist", "rnss", "via", "relays")
				lm, _ := l.(map[string]any)
				for x, r := range list("relays", lm["relays"]) {
					has(fmt.Sprintf("...links[%d].relays[%d]", k, x), r, "msgid", "via")
				}
			}
		}
	}
}

// shell.tcp decides whether TCP peers may run shell commands; the shell
// socket is always served.
func TestShellCommandsOverTCPFollowTheShellTCPPolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		socket bool // connect to the shell socket instead of TCP
		served bool
	}{
		{"TCP from loopback with shell.tcp off is refused", config.ShellTCPOff, false, false},
		{"TCP from loopback with shell.tcp loopback is served", config.ShellTCPLoopback, false, true},
		{"TCP with shell.tcp all is served", config.ShellTCPAll, false, true},
		{"the shell socket is served even with shell.tcp off", config.ShellTCPOff, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, "r", withShellTCP(tc.policy))
			addr := r.tcpURL()
			if tc.socket {
				addr = r.shellURL()
			}
			l := dialLeaf(t, addr, leafConfig{Label: "sh"})
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			for range 2 {
				out, err := l.Shell(ctx, "help")
				if err != nil {
					t.Fatalf("help: %v (output %q)", err, out)
				}
				if tc.served {
					if !strings.Contains(out, "help            Command help\n") {
						t.Errorf("served shell output %q lacks the help text", out)
					}
					continue
				}
				if !strings.HasPrefix(out, "refused: ") || !strings.Contains(out, "shell.tcp") || strings.Count(out, "\n") != 1 {
					t.Errorf("refused shell answered %q, want one line refusing and naming shell.tcp before the prompt", out)
				}
			}
			if out := l.ShellAsync(); out != "" {
				t.Errorf("the shell answered %q after the prompts", out)
			}
		})
	}
}
