package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

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
			accept := dmsgtest.Ack(m.MsgID)
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
