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
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
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

// ---------------------------------------------------------------------------
// The ideal relay.

func runRelay(listen, next string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s\n", ln.Addr())
	in, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	out, err := net.Dial("tcp", next)
	if err != nil {
		return err
	}
	go func() { relayFrames(in, out); in.Close() }()
	go func() { io.Copy(io.Discard, os.Stdin); in.Close(); out.Close() }()
	relayFrames(out, in)
	out.Close()
	return nil
}

// relayFrames copies whole frames from src to dst: each frame's length is
// (cmd & 0xff) * 64 + align64(aux_bytes), read from its base header. It
// flushes only when no more input is buffered, as a dmsgd link's writer
// flushes only when its queue is empty.
func relayFrames(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	bw := bufio.NewWriterSize(dst, 64<<10)
	for {
		hdr, err := br.Peek(dmsg.BaseHeaderSize)
		if err != nil {
			return err
		}
		cmd := binary.LittleEndian.Uint32(hdr[0x20:])
		aux := binary.LittleEndian.Uint32(hdr[0x28:])
		n := int(cmd&0xff)*dmsg.Align + dmsg.AlignUp(int(aux))
		for n > 0 {
			if br.Buffered() == 0 {
				if _, err := br.Peek(1); err != nil {
					return err
				}
			}
			k := min(n, br.Buffered())
			chunk, _ := br.Peek(k)
			if _, err := bw.Write(chunk); err != nil {
				return err
			}
			br.Discard(k)
			n -= k
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The stream both endpoints write: single messages through a dmsgtest
// peer, which numbers and encodes them, and bursts of one message encoded
// once in advance, whose frames are written as they are.

type stream struct {
	mu  sync.Mutex
	p   *dmsgtest.Peer
	bw  *bufio.Writer // bursts, batched as a dmsgd link's writer batches
	pos uint8         // the stream's position in the current turn
	lag uint8         // burst frames the peer's sequence has not counted
}

func newStream(nc net.Conn) *stream {
	p := dmsgtest.NewPeer(nc)
	return &stream{p: p, bw: bufio.NewWriterSize(rawWriter{p}, 64<<10)}
}

// rawWriter writes bytes to a peer's stream as they are.
type rawWriter struct{ p *dmsgtest.Peer }

func (w rawWriter) Write(b []byte) (int, error) {
	if err := w.p.WriteRaw(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// catchUpLocked writes out the bursts and moves the peer's sequence past
// their frames, so that its next message follows them.
func (s *stream) catchUpLocked() error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	pad := dmsg.NewMsg(dmsg.LnkPad)
	for ; s.lag > 0; s.lag-- {
		if _, err := s.p.Frame(pad); err != nil {
			return err
		}
	}
	return nil
}

// send writes and flushes messages.
func (s *stream) send(msgs ...*dmsg.Msg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.catchUpLocked(); err != nil {
		return err
	}
	s.pos += uint8(len(msgs))
	return s.p.Send(msgs...)
}

// turn is one message encoded 256 times, as the stream's next 256
// messages: since sequence numbers wrap at 256, writing its frames from
// the stream's position on keeps the stream's sequence.
type turn struct {
	b    []byte
	size int // of one frame
}

// newTurn encodes m as a turn starting at the stream's position.
func (s *stream) newTurn(m *dmsg.Msg) (*turn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.catchUpLocked(); err != nil {
		return nil, err
	}
	t := &turn{size: m.EncodedSize()}
	for range 256 {
		b, err := s.p.Frame(m)
		if err != nil {
			return nil, err
		}
		t.b = append(t.b, b...)
	}
	s.pos = 0
	return t, nil
}

// writeFrames writes n frames of t at the stream's position, unflushed.
func (s *stream) writeFrames(t *turn, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n > 0 {
		k := min(n, 256-int(s.pos))
		off := int(s.pos) * t.size
		if _, err := s.bw.Write(t.b[off : off+k*t.size]); err != nil {
			return err
		}
		s.pos += uint8(k)
		s.lag += uint8(k)
		n -= k
	}
	return nil
}

func (s *stream) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bw.Flush()
}

// credit is what an endpoint may still send on its circuit; an ideal
// chain gives unlimited credit.
type credit struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	dead  bool
}

func newCredit(n int64) *credit {
	c := &credit{avail: n}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *credit) add(n int64) {
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *credit) kill() {
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	c.cond.Broadcast()
}

// take waits until at least one frame of size fits and takes room for as
// many as fit, up to n.
func (c *credit) take(n, size int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail < int64(size) && !c.dead {
		c.cond.Wait()
	}
	if c.dead {
		return 0, errors.New("link closed")
	}
	k := min(n, int(c.avail/int64(size)))
	c.avail -= int64(k * size)
	return k, nil
}

// ---------------------------------------------------------------------------
// The receiving endpoint.

type receiver struct {
	s       *stream
	circuit uint64 // the circuit id on our link
	rev     uint32 // REVCIRC on what we send on it
	flow    bool   // grant credit (a dmsgd)
	credit  *credit

	mu     sync.Mutex
	count  int
	target int
	got    chan struct{}
}

func runRecv(listen, router, label string) error {
	var nc net.Conn
	var err error
	if router != "" {
		nc, err = net.Dial("tcp", router)
	} else {
		var ln net.Listener
		if ln, err = net.Listen("tcp", listen); err != nil {
			return err
		}
		fmt.Printf("ready %s\n", ln.Addr())
		nc, err = ln.Accept()
		ln.Close()
	}
	if err != nil {
		return err
	}
	r := &receiver{s: newStream(nc), got: make(chan struct{}, 1), credit: newCredit(1 << 62)}
	br := bufio.NewReaderSize(nc, 64<<10)
	if router != "" {
		if err := r.join(dmsg.NewDecoder(br), label); err != nil {
			return err
		}
		fmt.Println("ready -")
	} else {
		r.circuit = idealCircuit
	}
	go r.commands()
	return r.readLoop(br)
}

// join introduces the receiver to its router, advertises its span and
// accepts the circuit the sender opens.
func (r *receiver) join(dec *dmsg.Decoder, label string) error {
	r.flow, r.rev = offerWindow, dmsg.FlagRevCirc
	if err := r.s.send(connMsg(label), spanMsg(label)); err != nil {
		return err
	}
	for {
		m, err := dec.Decode()
		if err != nil {
			return err
		}
		if w, ok := routerWindow(m); ok {
			r.credit = newCredit(w)
		}
		if dmsg.Base(m.Cmd) == dmsg.LnkCirc && m.Cmd&dmsg.FlagCreate != 0 && m.Circuit == 0 {
			r.circuit = m.MsgID
			accept := &dmsg.Msg{Header: dmsg.Header{MsgID: m.MsgID,
				Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans}}
			return r.s.send(accept)
		}
	}
}

func (r *receiver) commands() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 2 && f[0] == "expect" {
			n, _ := strconv.Atoi(f[1])
			r.mu.Lock()
			r.count, r.target = 0, n
			r.mu.Unlock()
			fmt.Println("armed")
		}
	}
	os.Exit(0)
}

// readLoop counts data messages, answers requests and takes credit. Like
// the ideal relay, it cuts the stream into frames by their header's size
// fields and checks no CRC: the benchmarks measure the path to it, not
// its own decoding.
func (r *receiver) readLoop(br *bufio.Reader) error {
	var consumed int64
	for {
		hdr, err := br.Peek(dmsg.BaseHeaderSize)
		if err != nil {
			return err
		}
		cmd := binary.LittleEndian.Uint32(hdr[0x20:])
		circuit := binary.LittleEndian.Uint64(hdr[0x10:])
		msgid := binary.LittleEndian.Uint64(hdr[0x08:])
		size := dmsg.HeaderBytes(cmd) + dmsg.AlignUp(int(binary.LittleEndian.Uint32(hdr[0x28:])))
		switch {
		case circuit == 0:
		case dmsg.Base(cmd) == dmsg.LnkCredit:
			ext, err := br.Peek(dmsg.CreditSize)
			if err != nil {
				return err
			}
			r.credit.add(int64(binary.LittleEndian.Uint64(ext[0x40:])))
		case cmd&dmsg.FlagCreate != 0:
			err = r.reply(msgid)
		default:
			r.count1()
		}
		if err != nil {
			return err
		}
		if _, err := br.Discard(size); err != nil {
			return err
		}
		if circuit == 0 || dmsg.Base(cmd) == dmsg.LnkCredit {
			continue
		}
		if consumed += int64(size); r.flow && consumed >= window/2 {
			if err := r.s.send(dmsg.NewCreditMsg(r.circuit, r.rev != 0, uint64(consumed))); err != nil {
				return err
			}
			consumed = 0
		}
	}
}

// count1 counts a data message.
func (r *receiver) count1() {
	r.mu.Lock()
	r.count++
	done := r.count == r.target
	r.mu.Unlock()
	if done {
		fmt.Println("got")
	}
}

// reply answers request msgid at once, with 64 bytes of aux data.
func (r *receiver) reply(msgid uint64) error {
	reply := &dmsg.Msg{Header: dmsg.Header{MsgID: msgid, Circuit: r.circuit,
		Cmd: cmdRequest | dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans | r.rev}}
	reply.SetAux(replyAux[:])
	if _, err := r.credit.take(1, reply.EncodedSize()); err != nil {
		return err
	}
	return r.s.send(reply)
}

var replyAux [64]byte

// ---------------------------------------------------------------------------
// The sending endpoint.

type sender struct {
	s       *stream
	circuit uint64
	credit  *credit
	turn    *turn
	replies chan struct{}
}

func runSend(connect, router, target string) error {
	addr := connect
	if router != "" {
		addr = router
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	s := &sender{s: newStream(nc), circuit: idealCircuit, credit: newCredit(1 << 62),
		replies: make(chan struct{}, 1)}
	dec := dmsg.NewDecoder(nc)
	if router != "" {
		if err := s.join(dec, target); err != nil {
			return err
		}
	}
	fmt.Println("ready -")
	go func() {
		err := s.readLoop(dec)
		s.credit.kill()
		if !errors.Is(err, io.EOF) {
			fatal(err)
		}
	}()
	return s.commands()
}

// join introduces the sender to its router and opens a circuit to the
// span labelled target.
func (s *sender) join(dec *dmsg.Decoder, target string) error {
	s.circuit = circMsgID
	if err := s.s.send(connMsg("")); err != nil {
		return err
	}
	for {
		m, err := dec.Decode()
		if err != nil {
			return err
		}
		if w, ok := routerWindow(m); ok {
			s.credit = newCredit(w)
		}
		if dmsg.Base(m.Cmd) == dmsg.LnkSpan && m.Cmd&dmsg.FlagCreate != 0 && m.Cmd&dmsg.FlagReply == 0 {
			if sp, err := m.Span(); err == nil && sp.FsLabel == target {
				open := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: m.MsgID})
				open.MsgID = circMsgID
				if err := s.s.send(open); err != nil {
					return err
				}
			}
		}
		if m.MsgID == circMsgID && m.Cmd&dmsg.FlagReply != 0 {
			if m.Cmd&dmsg.FlagDelete != 0 {
				return fmt.Errorf("circuit refused: %s", dmsg.ErrorString(m.Error))
			}
			return nil
		}
	}
}

func (s *sender) readLoop(dec *dmsg.Decoder) error {
	for {
		m, err := dec.Decode()
		if err != nil {
			return err
		}
		switch {
		case dmsg.IsCredit(&m.Header):
			c, _ := m.Credit()
			s.credit.add(int64(c.Increment))
		case m.Circuit != 0 && m.Cmd&dmsg.FlagReply != 0:
			s.replies <- struct{}{}
		}
		m.Release()
	}
}

func (s *sender) commands() error {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		var err error
		switch f[0] {
		case "prep":
			m := dmsg.NewMsg(dmsg.DbgShell)
			m.Circuit = s.circuit
			m.SetAux(make([]byte, n))
			if s.turn, err = s.s.newTurn(m); err == nil {
				fmt.Println("prepped")
			}
		case "burst":
			if err = s.burst(n); err == nil {
				fmt.Println("sent")
			}
		case "lat":
			var out strings.Builder
			out.WriteString("lat")
			err = s.latency(n, &out)
			fmt.Println(out.String())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// burst writes n frames of the prepared turn within the credit.
func (s *sender) burst(n int) error {
	for n > 0 {
		k, err := s.credit.take(n, s.turn.size)
		if err != nil {
			return err
		}
		if err := s.s.writeFrames(s.turn, k); err != nil {
			return err
		}
		n -= k
		if n > 0 && s.credit.short(s.turn.size) {
			// About to wait for credit: what is written must go first.
			if err := s.s.flush(); err != nil {
				return err
			}
		}
	}
	return s.s.flush()
}

// latency runs n requests one after the other and appends their round
// trip times.
func (s *sender) latency(n int, out *strings.Builder) error {
	m := dmsg.NewMsg(cmdRequest | dmsg.FlagCreate | dmsg.FlagDelete)
	m.Circuit = s.circuit
	m.SetAux(make([]byte, 64))
	for i := range n {
		m.MsgID = uint64(1000 + i)
		start := time.Now()
		if _, err := s.credit.take(1, m.EncodedSize()); err != nil {
			return err
		}
		if err := s.s.send(m); err != nil {
			return err
		}
		select {
		case <-s.replies:
		case <-time.After(30 * time.Second):
			return errors.New("no reply in 30s")
		}
		fmt.Fprintf(out, " %d", time.Since(start).Nanoseconds())
	}
	return nil
}

// short reports whether less than one frame of size fits.
func (c *credit) short(size int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.avail < int64(size)
}

// ---------------------------------------------------------------------------
// Messages to a dmsgd.

// connMsg is an endpoint's LNK_CONN (msgid 1), offering CIRC_WINDOW.
func connMsg(label string) *dmsg.Msg {
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label}
	if offerWindow {
		c.Caps, c.CircWindow = dmsg.CapCircWindow, window
	}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	return m
}

// spanMsg advertises label (msgid 2).
func spanMsg(label string) *dmsg.Msg {
	sp := dmsg.Span{PeerType: dmsg.PeerHammer2, ProtoVersion: 1, Rnss: 1, ClLabel: "bench", FsLabel: label}
	m := dmsg.NewSpanMsg(dmsg.FlagCreate, &sp)
	m.MsgID = 2
	return m
}

// routerWindow returns the window a router's LNK_CONN grants, if m is one
// and CIRC_WINDOW is in force (both offer it).
func routerWindow(m *dmsg.Msg) (int64, bool) {
	if !offerWindow || dmsg.Base(m.Cmd) != dmsg.LnkConn || m.Cmd&dmsg.FlagCreate == 0 || m.Cmd&dmsg.FlagReply != 0 {
		return 0, false
	}
	c, err := m.Conn()
	if err != nil || c.Caps&dmsg.CapCircWindow == 0 {
		return 0, false
	}
	return int64(c.CircWindow), true
}
