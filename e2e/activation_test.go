package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
)

// activated makes d start as systemd starts a socket-activated service:
// l is passed as descriptor 3 with LISTEN_FDS=1 and LISTEN_PID set to the
// daemon's own pid (a shell execs it, keeping its pid).
func activated(l *net.TCPListener) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) {
		f, err := l.File()
		if err != nil {
			panic(err)
		}
		cmd.ExtraFiles = []*os.File{f}
		cmd.Env = append(cmd.Env, "LISTEN_FDS=1")
		cmd.Args = append([]string{"sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}, cmd.Args...)
		cmd.Path = "/bin/sh"
	}
}

// The shipped combination, on a free port: dmsgd.socket passes a loopback
// socket that the configuration also lists as a tcp:// entry. The daemon
// serves the passed socket as that entry instead of binding the address a
// second time (which fails: systemd holds it), and peers link through it.
func TestAnActivatedSocketServesTheListenEntryItMatches(t *testing.T) {
	a := newDaemon(t, "a")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a.editConfig(fmt.Sprintf("tcp://127.0.0.1:%d", a.port), "tcp://"+l.Addr().String())
	a.port = l.Addr().(*net.TCPAddr).Port
	a.setup = activated(l.(*net.TCPListener))
	a.start()
	b := newDaemon(t, "b", a.port)
	b.start()
	waitDists(t, a, 30*time.Second, map[string]uint32{"a": 0, "b": 0})
}

// dmsgd.socket and configs/dmsgd.yaml as shipped agree: every socket the
// unit passes is named by a listen entry, so the daemon serves it as that
// entry says; and a socket off loopback is named by a tls:// entry, since
// a plain one would be refused.
func TestTheShippedSocketUnitMatchesTheShippedConfig(t *testing.T) {
	cfg, err := config.Load("../configs/dmsgd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("../deploy/systemd/dmsgd.socket")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var streams []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ListenStream="); ok {
			streams = append(streams, v)
		}
	}
	if len(streams) == 0 {
		t.Fatal("dmsgd.socket has no ListenStream=")
	}
	for _, s := range streams {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = "", s // ListenStream=987: every address
		}
		ip := net.ParseIP(host)
		loopback := ip != nil && ip.IsLoopback()
		var named *config.Listener
		for i, l := range cfg.Listeners {
			h, p, err := net.SplitHostPort(l.Address)
			if err != nil || p != port {
				continue
			}
			if hip := net.ParseIP(h); h == host || hip != nil && ip != nil && hip.Equal(ip) ||
				hip != nil && hip.IsUnspecified() && (host == "" || ip != nil && ip.IsUnspecified()) {
				named = &cfg.Listeners[i]
			}
		}
		switch {
		case named == nil:
			t.Errorf("dmsgd.socket passes %s, which no listen entry of dmsgd.yaml names (%v)", s, cfg.Listen)
		case !loopback && named.Network != config.NetworkTLS:
			t.Errorf("dmsgd.socket passes %s off loopback, named by %s: dmsgd refuses plain TCP there", s, named)
		}
	}
}
