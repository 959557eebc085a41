package shell

import (
	"errors"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Class is what a command may do, which decides who may run it
// (docs/INTERFACE.md, "Who may run shell commands").
type Class uint8

const (
	// ReadOnly commands read the router's state and answer the shell
	// peer: help, tree, links, circuits, ping.
	ReadOnly Class = iota
	// Privileged commands change the router's state or make it connect
	// somewhere: span. A command unknown here is Privileged when it is to
	// run elsewhere (`@node cmd`), since the far router may know it.
	Privileged
)

func (c Class) String() string {
	if c == ReadOnly {
		return "read-only"
	}
	return "privileged"
}

// Carrier is what brought a command to the router.
type Carrier uint8

const (
	CarrierShellSocket Carrier = iota // the shell socket (shell.socket)
	CarrierUnix                       // a peer on a unix listener
	CarrierTCP                        // a peer on a TCP link, plain or TLS
	CarrierCircuit                    // a circuit ending at this router: the far half of `@node`
)

func (c Carrier) String() string {
	switch c {
	case CarrierShellSocket:
		return "shell socket"
	case CarrierUnix:
		return "unix socket"
	case CarrierTCP:
		return "TCP link"
	}
	return "circuit"
}

// Caller says where a command came from: its carrier, and the link it
// came in on. For a circuit that is the link the circuit arrived on at
// this router, whoever opened it further away.
type Caller struct {
	Carrier  Carrier
	Unix     bool // the link is a unix socket
	Loopback bool // the link is TCP from a loopback address
	Pinned   bool // the link is TLS and its peer presented a key in tls.peers
}

// Refusal is why a command may not run: the config key that decides it
// and what it says.
type Refusal struct {
	Key    string // such as "shell.tcp"
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// ErrNoAuthority refuses privileged commands in a session nobody gave an
// Authorizer.
var ErrNoAuthority = errors.New("this session may run read-only commands only")

// Authorize applies the rule of docs/INTERFACE.md to a command of class c
// from o under policy p: the shell socket and unix peers run everything;
// TCP peers run read-only commands as shell.tcp admits them, and
// privileged ones only if shell.tcp_privileged admits them too; circuits
// run read-only commands when shell.remote is true, and privileged ones
// only if shell.remote_privileged admits the link they arrived on. It
// returns nil or a *Refusal.
func Authorize(p config.Shell, o Caller, c Class) error {
	switch o.Carrier {
	case CarrierShellSocket, CarrierUnix:
		return nil
	case CarrierTCP:
		switch {
		case p.TCP == config.ShellTCPOff:
			return &Refusal{"shell.tcp", "shell.tcp is off: TCP peers may not run shell commands"}
		case p.TCP == config.ShellTCPLoopback && !o.Loopback:
			return &Refusal{"shell.tcp", "shell.tcp is loopback: only TCP peers on a loopback address may run shell commands"}
		case c == Privileged && !Grants(p.TCPPrivileged, o):
			return &Refusal{"shell.tcp_privileged", "shell.tcp_privileged is " + p.TCPPrivileged + grantHint(p.TCPPrivileged) +
				": privileged commands are not served to this TCP peer"}
		}
		return nil
	case CarrierCircuit:
		switch {
		case !p.Remote:
			return &Refusal{"shell.remote", "shell.remote is false: shell commands over circuits are not served"}
		case c == Privileged && !Grants(p.RemotePrivileged, o):
			return &Refusal{"shell.remote_privileged", "shell.remote_privileged is " + p.RemotePrivileged + grantHint(p.RemotePrivileged) +
				": privileged commands are not served over a circuit that arrived on this link"}
		}
		return nil
	}
	return &Refusal{"", "unknown carrier"}
}

// Grants reports whether a privileged policy (config.Privileged*: off,
// loopback, pinned, all) admits a link. The router judges by it who may
// make it connect somewhere: privileged shell commands, and LNK_VOLCONF
// (volconf.from).
func Grants(policy string, o Caller) bool {
	switch policy {
	case config.PrivilegedAll:
		return true
	case config.PrivilegedPinned:
		return o.Pinned
	case config.PrivilegedLoopback:
		return o.Unix || o.Loopback
	}
	return false
}

func grantHint(policy string) string {
	switch policy {
	case config.PrivilegedLoopback:
		return " (unix sockets and loopback peers only)"
	case config.PrivilegedPinned:
		return " (TLS peers with a pinned key only)"
	}
	return ""
}

// Authorizer decides whether a session may run a command line of class c;
// it returns nil or the reason it may not, which the session prints.
type Authorizer func(line string, c Class) error

// AllowAll is the Authorizer of a session whose every command was already
// judged, or that needs none (the shell socket).
func AllowAll(string, Class) error { return nil }

// readOnly is the Authorizer of a session nobody gave one: it refuses
// privileged commands, so that forgetting to authorise never grants them.
func readOnly(_ string, c Class) error {
	if c == Privileged {
		return ErrNoAuthority
	}
	return nil
}
