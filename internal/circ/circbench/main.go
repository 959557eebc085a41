// Command circbench is the endpoint and the ideal relay of internal/circ's
// circuit benchmarks, each run as a process of its own, as users run
// endpoints and relays: nothing shares a Go runtime with what it measures.
// It is not part of dmsgd; the benchmarks build it.
//
//	circbench relay -listen ADDR -next ADDR    an ideal relay: one connection, passed on frame by frame
//	circbench recv -listen ADDR                an endpoint at the end of an ideal chain
//	circbench recv -router ADDR -label L       an endpoint on a dmsgd that advertises L and accepts a circuit
//	circbench send -connect ADDR               an endpoint at the start of an ideal chain
//	circbench send -router ADDR -target L      an endpoint on a dmsgd that opens a circuit to L
//
// Each prints "ready ADDR" (its listening address, or "-") once set up,
// then obeys commands on standard input, one a line, answering each on
// standard output:
//
//	recv: expect N      "armed", then "got" once N data messages arrived
//	send: prep SIZE     "prepped": the next bursts carry SIZE bytes of aux data
//	send: burst N       "sent" once N data messages are written
//	send: lat N         "lat D1 D2 ...": N request/reply round trips, in ns
//
// Endpoints on a dmsgd speak per-circuit flow control (docs/PROTOCOL.md
// 11.2): the sender writes only within the credit the router granted, and
// the receiver grants credit back half a window at a time as it reads.
// The ideal relay and its endpoints have no flow control and check
// nothing, so that they are as fast as a relay can be. The endpoints are
// the same on both, raw on purpose: they write through a dmsgtest peer,
// bursts as frames encoded in advance, and cut what they read into frames
// by the header alone, so that the figures compare relays, not endpoints.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// window is the window the endpoints grant the router on their circuits.
const window = 4 << 20

// offerWindow says whether endpoints on a dmsgd offer CIRC_WINDOW.
var offerWindow = true

// Circuit ids and commands the endpoints use.
const (
	idealCircuit = 100 // both ends of an ideal chain, which keeps no state
	circMsgID    = 100 // the sender's LNK_CIRC on a dmsgd
	cmdRequest   = dmsg.ProtoHM2 | 0x00001001
)

func main() {
	if len(os.Args) < 2 {
		fatal(errors.New("usage: circbench relay|recv|send [flags]"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on")
	next := fs.String("next", "", "relay: address of the next hop")
	connect := fs.String("connect", "", "send: address of the first ideal hop")
	router := fs.String("router", "", "address of a dmsgd")
	label := fs.String("label", "", "recv: label of the span to advertise")
	target := fs.String("target", "", "send: label of the span to open a circuit to")
	legacy := fs.Bool("legacy", false, "on a dmsgd: do not offer per-circuit flow control")
	fs.Parse(os.Args[2:])
	offerWindow = !*legacy
	var err error
	switch os.Args[1] {
	case "relay":
		err = runRelay(*listen, *next)
	case "recv":
		err = runRecv(*listen, *router, *label)
	case "send":
		err = runSend(*connect, *router, *target)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "circbench:", err)
	os.Exit(1)
}
