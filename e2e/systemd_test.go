package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens where a service manager would, and returns the
// address for NOTIFY_SOCKET and the messages received.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return path, msgs
}

// nextNotify returns the next notification, failing after a generous
// deadline.
func nextNotify(t *testing.T, msgs <-chan string, what string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(30 * time.Second):
		t.Fatalf("no notification while waiting for %s", what)
	}
	return ""
}

func (d *daemon) editConfig(old, new string) {
	d.t.Helper()
	b, err := os.ReadFile(d.config)
	if err != nil {
		d.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		d.t.Fatalf("config lacks %q", old)
	}
	if err := os.WriteFile(d.config, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

var monotonic = regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)

// What a service manager hears, as Type=notify-reload (and Type=notify
// with the drop-in for older systemd) expect it: READY=1 once serving,
// RELOADING=1 with MONOTONIC_USEC around each SIGHUP followed by READY=1
// again, a refused reload's reason in STATUS= while the daemon stays
// ready, and STOPPING=1 on SIGTERM.
func TestTheServiceManagerHearsReadyReloadsAndARefusalsReason(t *testing.T) {
	sock, msgs := notifySocket(t)
	d := newDaemon(t, "n1")
	d.env = []string{"NOTIFY_SOCKET=" + sock}
	d.start()
	if m := nextNotify(t, msgs, "READY=1"); m != "READY=1\nSTATUS=serving as n1 on 2 listeners" {
		t.Fatalf("first notification %q", m)
	}

	d.editConfig("tcp://127.0.0.1:", "tcp://127.0.0.2:")
	d.cmd.Process.Signal(syscall.SIGHUP)
	if m := nextNotify(t, msgs, "RELOADING=1"); !monotonic.MatchString(m) {
		t.Fatalf("reload notification %q, want RELOADING=1 and MONOTONIC_USEC", m)
	}
	want := "READY=1\nSTATUS=reload refused: listen cannot change without a restart; running configuration kept"
	if m := nextNotify(t, msgs, "READY=1 after the refused reload"); m != want {
		t.Fatalf("after a refused reload: %q, want %q", m, want)
	}
	if _, err := d.tree(); err != nil {
		t.Fatalf("the daemon stopped serving after a refused reload: %v", err)
	}

	d.editConfig("tcp://127.0.0.2:", "tcp://127.0.0.1:")
	d.editConfig("level: debug", "level: info")
	d.cmd.Process.Signal(syscall.SIGHUP)
	if m := nextNotify(t, msgs, "RELOADING=1"); !monotonic.MatchString(m) {
		t.Fatalf("reload notification %q", m)
	}
	if m := nextNotify(t, msgs, "READY=1 after the reload"); m != "READY=1\nSTATUS=serving as n1; configuration reloaded (1 changes)" {
		t.Fatalf("after an applied reload: %q", m)
	}

	d.editConfig("level: info", "level: loud")
	d.cmd.Process.Signal(syscall.SIGHUP)
	nextNotify(t, msgs, "RELOADING=1")
	if m := nextNotify(t, msgs, "READY=1 after an invalid file"); !strings.HasPrefix(m, "READY=1\nSTATUS=reload refused: invalid configuration: ") ||
		!strings.Contains(m, `log.level: must be debug, info, warn or error, not "loud"`) || strings.Count(m, "\n") != 1 {
		t.Fatalf("after an invalid file: %q", m)
	}

	d.stop()
	if m := nextNotify(t, msgs, "STOPPING=1"); m != "STOPPING=1\nSTATUS=shutting down" {
		t.Fatalf("on SIGTERM: %q", m)
	}
}
