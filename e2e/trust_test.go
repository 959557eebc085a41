package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
	"github.com/dmsgd/dmsgd/internal/endpoint"
)

// nodeKey is a key pair made by `dmsgd keygen`, as an operator makes one.
type nodeKey struct {
	dir  string
	pub  string // as keygen prints it: ed25519:<base64>
	priv ed25519.PrivateKey
}

func keygen(t *testing.T, name string) nodeKey {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "keygen", "--dir", dir, "--name", name).Output()
	if err != nil {
		t.Fatalf("dmsgd keygen: %v", err)
	}
	k := nodeKey{dir: dir, pub: strings.TrimSpace(string(out))}
	b, err := os.ReadFile(filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	pk, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k.priv = pk.(ed25519.PrivateKey)
	return k
}

func (k nodeKey) public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// newDaemonWith prepares a daemon whose config is the common sections
// (shell socket, label, short keepalives, debug log) plus body, which
// gets the daemon to fill in its port.
func newDaemonWith(t *testing.T, name string, body func(d *daemon) string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{t: t, name: name, port: freePort(t),
		config: filepath.Join(dir, "dmsgd.yaml"),
		shell:  filepath.Join(dir, "shell.sock"),
		log:    filepath.Join(dir, "dmsgd.log")}
	yaml := fmt.Sprintf("node:\n  label: %s\nkeepalive:\n  interval: 200ms\n  timeout: 5s\nlog:\n  level: debug\n  format: json\n%s",
		name, body(d))
	if !strings.Contains(yaml, "\nshell:") {
		yaml += fmt.Sprintf("shell:\n  socket: %s\n", d.shell)
	}
	if err := os.WriteFile(d.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// tlsBody is the config of a router listening on tls:// with key own,
// pinning keys (by name), dialling the TLS ports dial.
func tlsBody(own nodeKey, keys map[string]nodeKey, dial ...int) func(d *daemon) string {
	return tlsBodyListen(own, keys, nil, dial...)
}

// tlsBodyListen is tlsBody with more listeners.
func tlsBodyListen(own nodeKey, keys map[string]nodeKey, more []string, dial ...int) func(d *daemon) string {
	return func(d *daemon) string {
		var b strings.Builder
		fmt.Fprintf(&b, "listen:\n  - tls://127.0.0.1:%d\n", d.port)
		for _, l := range more {
			fmt.Fprintf(&b, "  - %s\n", l)
		}
		fmt.Fprintf(&b, "tls:\n  cert: %s/node.crt\n  key: %s/node.key\n  peers:\n", own.dir, own.dir)
		for name, k := range keys {
			fmt.Fprintf(&b, "    - name: %s\n      pubkey: %q\n", name, k.pub)
		}
		if len(dial) > 0 {
			b.WriteString("media:\n  - name: uplinks\n    copies:\n")
			for i, p := range dial {
				fmt.Fprintf(&b, "      - copyid: %d\n        path: span+tls:127.0.0.1:%d\n", i+1, p)
			}
		}
		return b.String()
	}
}

// dialSpy is a listener of the test's own: it counts every connection a
// daemon is made to open to it.
type dialSpy struct {
	l     net.Listener
	dials atomic.Int32
}

func newDialSpy(t *testing.T) *dialSpy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dialSpy{l: l}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.dials.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return s
}

// routerConnMsg is the LNK_CONN of a router labelled label.
func routerConnMsg(label string, caps uint32) *dmsg.Msg {
	c := routerConn(label, caps)
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 0x1000
	return m
}

// routerConn is the LNK_CONN of a router labelled label offering caps.
func routerConn(label string, caps uint32) dmsg.Conn {
	return dmsg.Conn{PfsFsid: config.NodeIDFor(label), PeerMask: ^uint64(0), PeerType: dmsg.PeerRouter,
		ProtoVersion: 1, Rnss: 5, PfsMask: ^uint64(0), FsLabel: label, Caps: caps}
}

// routerSpan is the dist-0 advertisement of the router labelled label in
// the default cluster, with rnss 0: it would win every tie.
func routerSpan(label string) dmsg.Span {
	return dmsg.Span{PfsClid: config.NodeIDFor("default"), PfsFsid: config.NodeIDFor(label),
		PeerType: dmsg.PeerRouter, ProtoVersion: 1, ClLabel: "default", FsLabel: label}
}

// The shell bypass: with shell.tcp off, a peer opens a circuit to the
// daemon's own advertisement and sends DBG_SHELL inside it. Read-only
// commands answer (shell.remote keeps @node useful), `span` to a listener
// of the test's own and `@n2 span` are refused with the reason, and the
// listener never sees a connection.
func TestTheShellOverACircuitCannotMakeADaemonDial(t *testing.T) {
	spy := newDialSpy(t)
	n1 := newDaemonWith(t, "n1", func(d *daemon) string {
		return fmt.Sprintf("listen:\n  - tcp://127.0.0.1:%d\nshell:\n  socket: %s\n  tcp: off\n", d.port, d.shell)
	})
	n1.start()
	n2 := newDaemon(t, "n2", n1.port)
	n2.start()
	waitDists(t, n1, 30*time.Second, map[string]uint32{"n1": 0, "n2": 0})

	p, err := endpoint.Dial(t.Context(), "tcp", fmt.Sprintf("127.0.0.1:%d", n1.port),
		endpoint.Config{Conn: routerConn("mallory", 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx := leafCtx(t, time.Minute)
	s, err := p.WaitRelay(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.OpenCircuit(s.MsgID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("the circuit to n1: %v", err)
	}
	run := func(line string) string {
		t.Helper()
		out, err := c.Shell(ctx, line)
		if err != nil {
			t.Fatalf("%s over the circuit: %v (got %q)", line, err, out)
		}
		return out
	}
	if out := run("tree"); !strings.Contains(out, "(n1)\n\tSLink msgid 0000000000000000 dist=0 via local") {
		t.Fatalf("tree over the circuit: %q", out)
	}
	for _, line := range []string{"span " + spy.l.Addr().String(), "@n2 span " + spy.l.Addr().String(), "@n1 span " + spy.l.Addr().String()} {
		out := run(line)
		if !strings.HasPrefix(out, "refused: span is a privileged command; shell.remote_privileged is off") {
			t.Fatalf("%s over the circuit: %q", line, out)
		}
	}
	if out := run("@n2 links"); !strings.Contains(out, "n1\n") {
		t.Fatalf("@n2 links over the circuit: %q", out)
	}
	if n := spy.dials.Load(); n != 0 {
		t.Fatalf("the daemon dialled the test's listener %d times", n)
	}
	if !n1.logged(`"msg":"shell command refused","link":`) || !n1.logged(`"carrier":"circuit"`) {
		t.Fatalf("the refusal is not in the log:\n%s", n1.tail())
	}
}

// The identity spoof without TLS: a peer advertises at dist 0 a router
// span carrying n2's label, node id and cluster id, with rnss 0. n1
// refuses it (PARAM) and keeps n2's own advertisement as the best, so
// `@n2` still reaches n2.
func TestAnIdentitySpoofIsRefusedWithoutTLS(t *testing.T) {
	ds := startLine(t, 2)
	n1 := ds[0]
	waitDists(t, n1, 30*time.Second, map[string]uint32{"n1": 0, "n2": 0})
	p := dialRawPeer(t, n1.port, nil)
	p.Send(routerConnMsg("mallory", 0))
	if a := p.advertise(0x2000, routerSpan("n2"), nil); !isRefusal(a) {
		t.Fatalf("the spoof was answered %s error %s", dmsg.CmdString(a.Cmd), dmsg.ErrorString(a.Error))
	}
	tj, err := n1.tree()
	if err != nil {
		t.Fatal(err)
	}
	if via := bestVia(tj, "n2"); peerOf(tj, via) != "n2" {
		t.Fatalf("n1's best link of n2 is %s, whose peer is %q", via, peerOf(tj, via))
	}
	out, err := n1.runShell("@n2 links")
	if err != nil || !strings.Contains(out, "n1\n") {
		t.Fatalf("@n2 links: %q, %v", out, err)
	}
}

// bestVia is the link a tree's best advertisement of node label came by.
func bestVia(tj *treeJSON, label string) string {
	for _, c := range tj.Clusters {
		for _, n := range c.Nodes {
			if n.Label == label && len(n.Links) > 0 {
				return n.Links[0].Via
			}
		}
	}
	return ""
}

func peerOf(tj *treeJSON, link string) string {
	for _, l := range tj.Links {
		if l.ID == link {
			return l.PeerLabel
		}
	}
	return ""
}

// trustTree is the part of the JSON tree about verification.
type trustTree struct {
	Links []struct {
		ID          string `json:"id"`
		PeerLabel   string `json:"peer_label"`
		TLSPeer     string `json:"tls_peer"`
		SignedSpans bool   `json:"signed_spans"`
	} `json:"links"`
	Clusters []struct {
		Nodes []struct {
			Label    string `json:"label"`
			Verified bool   `json:"verified"`
			Links    []struct {
				Dist     uint32 `json:"dist"`
				Via      string `json:"via"`
				Verified bool   `json:"verified"`
				Relays   []struct {
					Via string `json:"via"`
				} `json:"relays"`
			} `json:"links"`
		} `json:"nodes"`
	} `json:"clusters"`
}

func (d *daemon) trustTree() (*trustTree, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "tree", "--format", "json", "--socket", d.shell)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	var tt trustTree
	if err := json.Unmarshal(out.Bytes(), &tt); err != nil {
		return nil, err
	}
	return &tt, nil
}

// A cluster of three routers pinning each other's keys (made with dmsgd
// keygen, linked over TLS) holds every router verified. A fourth peer
// whose key a pins, but which speaks only for itself, claims b at dist 0
// and c at dist 1 with rnss 0: a refuses the claim of b, holds the copy
// of c unverified and neither prefers nor relays it; `@c tree` from a's
// shell still reaches c, which shows itself verified.
func TestAPinnedClusterIgnoresAForgedAdvertisementOfAPeerWithAValidKey(t *testing.T) {
	keys := map[string]nodeKey{"a": keygen(t, "a"), "b": keygen(t, "b"), "c": keygen(t, "c")}
	mallory := keygen(t, "mallory")
	pinsA := map[string]nodeKey{"a": keys["a"], "b": keys["b"], "c": keys["c"], "mallory": mallory}
	a := newDaemonWith(t, "a", tlsBody(keys["a"], pinsA))
	a.start()
	b := newDaemonWith(t, "b", tlsBody(keys["b"], keys, a.port))
	b.start()
	c := newDaemonWith(t, "c", tlsBody(keys["c"], keys, b.port))
	c.start()
	verified := func(d *daemon, labels ...string) func() bool {
		return func() bool {
			tt, err := d.trustTree()
			if err != nil {
				return false
			}
			for _, l := range labels {
				if n := trustNode(tt, l); n == nil || !n.Verified {
					return false
				}
			}
			return true
		}
	}
	for _, d := range []*daemon{a, b, c} {
		waitFor(t, 30*time.Second, d.name+" holds a, b and c verified", verified(d, "a", "b", "c"))
	}

	cert, err := tls.LoadX509KeyPair(mallory.dir+"/node.crt", mallory.dir+"/node.key")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.port), &tls.Config{
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	p := startRawPeer(t, nc, nil)
	p.Send(routerConnMsg("mallory", dmsg.CapSignedSpans))
	p.spanOf("c")
	if ans := p.advertise(0x2000, routerSpan("b"), nil); !isRefusal(ans) {
		t.Fatalf("mallory's claim of b was answered %s", dmsg.CmdString(ans.Cmd))
	}
	own := routerSpan("mallory")
	rec := dmsg.ExtendSignedSpan(dmsg.SignSpan(mallory.priv, 1, &own), keys["a"].public(), mallory.priv)
	if ans := p.advertise(0x2001, own, rec); isRefusal(ans) {
		t.Fatal("mallory's own signed advertisement was refused")
	}
	fakeC := routerSpan("c")
	fakeC.Dist = 1
	if ans := p.advertise(0x2002, fakeC, nil); isRefusal(ans) {
		t.Fatal("an unsigned copy is refused, not held unverified")
	}
	waitFor(t, 30*time.Second, "a holds mallory's copy of c", func() bool {
		tt, err := a.trustTree()
		return err == nil && trustNode(tt, "c") != nil && len(trustNode(tt, "c").Links) == 2
	})

	tt, err := a.trustTree()
	if err != nil {
		t.Fatal(err)
	}
	viaB := ""
	for _, l := range tt.Links {
		if l.PeerLabel == "b" {
			viaB = l.ID
			if l.TLSPeer != "b" || !l.SignedSpans {
				t.Errorf("a's link to b: %+v", l)
			}
		}
	}
	for _, label := range []string{"b", "c"} {
		n := trustNode(tt, label)
		if !n.Verified || n.Links[0].Via != viaB || !n.Links[0].Verified {
			t.Errorf("a's best of %s: %+v, want verified via b's link %s", label, n.Links, viaB)
		}
		for _, l := range n.Links[1:] {
			if l.Verified || len(l.Relays) != 0 {
				t.Errorf("a holds another copy of %s verified or relayed: %+v", label, l)
			}
		}
	}
	if n := trustNode(tt, "mallory"); n == nil || !n.Verified {
		t.Errorf("mallory's own advertisement: %+v", n)
	}
	out, err := a.runShell("@c tree")
	if err != nil || !strings.Contains(out, "(c) verified\n\tSLink msgid 0000000000000000 dist=0 via local") {
		t.Fatalf("@c tree: %q, %v", out, err)
	}
	// c does not pin mallory's key: it holds mallory, relayed with its
	// signed path, but cannot vouch for it.
	if !strings.Contains(out, "(mallory)\n") {
		t.Errorf("c should hold mallory's advertisement unverified:\n%s", out)
	}
	tb, err := b.trustTree()
	if err != nil {
		t.Fatal(err)
	}
	if n := trustNode(tb, "c"); n == nil || len(n.Links) != 1 {
		t.Errorf("b holds c as %+v, want only c's own advertisement", n)
	}
}

func trustNode(tt *trustTree, label string) *struct {
	Label    string `json:"label"`
	Verified bool   `json:"verified"`
	Links    []struct {
		Dist     uint32 `json:"dist"`
		Via      string `json:"via"`
		Verified bool   `json:"verified"`
		Relays   []struct {
			Via string `json:"via"`
		} `json:"relays"`
	} `json:"links"`
} {
	for ci := range tt.Clusters {
		for ni := range tt.Clusters[ci].Nodes {
			if n := &tt.Clusters[ci].Nodes[ni]; n.Label == label {
				return n
			}
		}
	}
	return nil
}

// A peer speaking the libdmsg 2014+ form (the C service: 0x1106 LNK_CONN,
// refusing the dmsgd form with NOSUPP, acknowledging spans) on a router
// that signs keeps exchanging spans: its span reaches the router's TLS
// neighbour, unverified, and what it receives carries no signed record.
func TestALibdmsgPeerLinkStillCarriesSpansInASigningCluster(t *testing.T) {
	keys := map[string]nodeKey{"a": keygen(t, "a"), "b": keygen(t, "b")}
	plainPort := freePort(t)
	a := newDaemonWith(t, "a", tlsBodyListen(keys["a"], keys, []string{fmt.Sprintf("tcp://127.0.0.1:%d", plainPort)}))
	a.start()
	b := newDaemonWith(t, "b", tlsBody(keys["b"], keys, a.port))
	b.start()
	waitDists(t, a, 30*time.Second, map[string]uint32{"a": 0, "b": 0})

	capture := readCapture(t, "span-origin.c2s.bin") // the synthetic originator's LNK_CONN and span
	c := dialRawPeer(t, plainPort, func(p *rawPeer, m *dmsg.Msg) {
		switch {
		case dmsg.Base(m.Cmd) == dmsg.LnkConn && m.Cmd&dmsg.FlagCreate != 0:
			p.Send(dmsgtest.Refuse(m.MsgID, dmsg.ErrNoSupp))
		case m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagReply == 0:
			p.Send(dmsgtest.Ack(m.MsgID))
		}
	})
	c.Send(capture[0], capture[2])
	waitFor(t, 30*time.Second, "b holds the C peer's span", func() bool {
		d, err := b.dists()
		return err == nil && d["synthpfs"] == 1
	})
	tt, err := b.trustTree()
	if err != nil {
		t.Fatal(err)
	}
	if n := trustNode(tt, "synthpfs"); n == nil || n.Verified {
		t.Fatalf("b holds the C peer's span as %+v, want it unverified", n)
	}
	for _, label := range []string{"a", "b"} {
		if m := c.spanOf(label); len(m.Aux) != 0 {
			t.Fatalf("the C peer got %s's span with %d bytes of aux data", label, len(m.Aux))
		}
	}
	for _, m := range c.All() {
		// CIRC_WINDOW is offered on every link (the C peer refuses our
		// 0x1108 form unread); signed spans never on a plain one.
		if info, err := m.Conn(); err == nil && info.Caps&dmsg.CapSignedSpans != 0 {
			t.Fatalf("the C peer was offered caps %#x", info.Caps)
		}
	}
}

// logged reports whether the daemon's whole log contains s.
func (d *daemon) logged(s string) bool {
	b, _ := os.ReadFile(d.log)
	return bytes.Contains(b, []byte(s))
}

// readCapture decodes one direction of a golden capture.
func readCapture(t *testing.T, name string) []*dmsg.Msg {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "dmsg-c-peer", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := dmsg.NewDecoder(bytes.NewReader(b))
	var out []*dmsg.Msg
	for {
		m, err := dec.Decode()
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

// SIGHUP applies a new tls.peers: the link of the key it no longer pins
// is closed and logged, the other link stays up (same link), and a key it
// newly pins connects.
func TestAReloadOfTLSPeersClosesOnlyTheLinkOfTheRemovedKey(t *testing.T) {
	keys := map[string]nodeKey{"a": keygen(t, "a"), "b": keygen(t, "b"), "x": keygen(t, "x")}
	y := keygen(t, "y")
	a := newDaemonWith(t, "a", tlsBody(keys["a"], keys))
	a.start()
	b := newDaemonWith(t, "b", tlsBody(keys["b"], keys, a.port))
	b.start()
	x := newDaemonWith(t, "x", tlsBody(keys["x"], keys, a.port))
	x.start()
	waitDists(t, a, 30*time.Second, map[string]uint32{"a": 0, "b": 0, "x": 0})
	tj, err := a.tree()
	if err != nil {
		t.Fatal(err)
	}
	viaB := bestVia(tj, "b")

	pins := map[string]nodeKey{"a": keys["a"], "b": keys["b"], "y": y}
	body := tlsBody(keys["a"], pins)(a)
	yaml := fmt.Sprintf("node:\n  label: a\nkeepalive:\n  interval: 200ms\n  timeout: 5s\nlog:\n  level: debug\n  format: json\nshell:\n  socket: %s\n%s", a.shell, body)
	if err := os.WriteFile(a.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	a.cmd.Process.Signal(syscall.SIGHUP)
	waitDists(t, a, 30*time.Second, map[string]uint32{"a": 0, "b": 0})
	if !a.logged("link closed: its key was removed from tls.peers") {
		t.Fatalf("the closed link is not logged:\n%s", a.tail())
	}
	tj, err = a.tree()
	if err != nil || bestVia(tj, "b") != viaB {
		t.Fatalf("b's link changed from %s: %v %+v", viaB, err, tj)
	}
	yd := newDaemonWith(t, "y", tlsBody(y, map[string]nodeKey{"a": keys["a"]}, a.port))
	yd.start()
	waitDists(t, a, 30*time.Second, map[string]uint32{"a": 0, "b": 0, "y": 0})
}
