package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary is the dmsgd built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dmsgd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dmsgd")
	args := []string{"build", "-o", binary}
	if raceBuild {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/dmsgd/dmsgd/cmd/dmsgd")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build dmsgd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The race detector sleeps a second when a process exits, to catch
	// late reports: every dmsgd tree or shell a test runs would cost one.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	code := m.Run()
	printAttackFigures(os.Stdout)
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running `dmsgd serve`.
type daemon struct {
	t      *testing.T
	name   string
	config string
	shell  string
	port   int
	log    string
	bin    string // the dmsgd to run; the package's race build when empty
	cmd    *exec.Cmd
	env    []string        // added to the environment of the process
	setup  func(*exec.Cmd) // adjusts the command before it starts, when set
	exited chan struct{}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newDaemon writes a config for a router called name listening on a fresh
// loopback port, with static media links to the given ports.
func newDaemon(t *testing.T, name string, dialPorts ...int) *daemon {
	t.Helper()
	return newDaemonExtra(t, name, "", dialPorts...)
}

// newDaemonExtra is newDaemon with extra top-level YAML sections appended
// to the config (sections it writes itself are not allowed).
func newDaemonExtra(t *testing.T, name, extra string, dialPorts ...int) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{t: t, name: name, port: freePort(t),
		config: filepath.Join(dir, "dmsgd.yaml"),
		shell:  filepath.Join(dir, "shell.sock"),
		log:    filepath.Join(dir, "dmsgd.log")}
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  - tcp://127.0.0.1:%d\n", d.port)
	fmt.Fprintf(&b, "shell:\n  socket: %s\n", d.shell)
	fmt.Fprintf(&b, "node:\n  label: %s\n", name)
	b.WriteString("keepalive:\n  interval: 200ms\n  timeout: 10s\n")
	b.WriteString("log:\n  level: debug\n  format: json\n")
	if len(dialPorts) > 0 {
		b.WriteString("media:\n  - name: uplinks\n    copies:\n")
		for i, p := range dialPorts {
			fmt.Fprintf(&b, "      - copyid: %d\n        path: span:127.0.0.1:%d\n", i+1, p)
		}
	}
	b.WriteString(extra)
	if err := os.WriteFile(d.config, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// start runs the daemon and waits until its shell answers.
func (d *daemon) start() {
	t := d.t
	t.Helper()
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	bin := binary
	if d.bin != "" {
		bin = d.bin
	}
	d.cmd = exec.Command(bin, "serve", "--config", d.config)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if d.setup != nil {
		d.setup(d.cmd)
	}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() {
		d.cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	t.Cleanup(d.stop)
	waitFor(t, 20*time.Second, d.name+" shell answers", func() bool {
		_, err := d.tree()
		return err == nil
	})
}

// stop ends the daemon with SIGTERM (SIGKILL if it hangs) and checks it
// exited cleanly.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			d.t.Errorf("%s exited with %d after SIGTERM; log:\n%s", d.name, code, d.tail())
		}
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("%s did not stop on SIGTERM; log:\n%s", d.name, d.tail())
	}
}

// kill ends the daemon at once, as a crash would.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// treeJSON is the part of `dmsgd tree --format json` the tests read.
type treeJSON struct {
	Node struct {
		Label string `json:"label"`
		ID    string `json:"id"`
	} `json:"node"`
	Links []struct {
		ID        string `json:"id"`
		PeerLabel string `json:"peer_label"`
		PeerType  string `json:"peer_type"`
		State     string `json:"state"`
	} `json:"links"`
	Clusters []struct {
		PeerType string `json:"peer_type"`
		Nodes    []struct {
			Label string `json:"label"`
			Links []struct {
				Dist uint32 `json:"dist"`
				Via  string `json:"via"`
			} `json:"links"`
		} `json:"nodes"`
	} `json:"clusters"`
	Circuits []struct {
		ID uint64 `json:"id"`
	} `json:"circuits"`
}

// tree runs `dmsgd tree --format json` against the daemon.
func (d *daemon) tree() (*treeJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "tree", "--format", "json", "--socket", d.shell)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dmsgd tree: %v: %s", err, errb.String())
	}
	var tj treeJSON
	if err := json.Unmarshal(out.Bytes(), &tj); err != nil {
		return nil, fmt.Errorf("dmsgd tree output: %v\n%s", err, out.String())
	}
	return &tj, nil
}

// dists returns the best dist of every node the daemon sees, by label.
func (d *daemon) dists() (map[string]uint32, error) {
	tj, err := d.tree()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint32)
	for _, c := range tj.Clusters {
		for _, n := range c.Nodes {
			if len(n.Links) > 0 {
				out[n.Label] = n.Links[0].Dist
			}
		}
	}
	return out, nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDists polls d until it sees exactly want.
func waitDists(t *testing.T, d *daemon, timeout time.Duration, want map[string]uint32) {
	t.Helper()
	var last map[string]uint32
	var lastErr error
	deadline := time.Now().Add(timeout)
	for {
		last, lastErr = d.dists()
		if lastErr == nil && equalDists(last, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want nodes %v, have %v (err %v); log:\n%s", d.name, want, last, lastErr, d.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func equalDists(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// shell pipes lines into `dmsgd shell` against the daemon and returns what
// it printed.
func (d *daemon) runShell(lines ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "shell", "--socket", d.shell)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("dmsgd shell: %v: %s", err, errb.String())
	}
	return out.String(), nil
}

// startLine starts n daemons n1..nn, each dialling the one before it from
// its config; each start waits until that daemon's shell answers.
func startLine(t *testing.T, n int) []*daemon {
	t.Helper()
	ds := make([]*daemon, n)
	for i := range ds {
		var dial []int
		if i > 0 {
			dial = append(dial, ds[i-1].port)
		}
		ds[i] = newDaemon(t, fmt.Sprintf("n%d", i+1), dial...)
		ds[i].start()
	}
	return ds
}
