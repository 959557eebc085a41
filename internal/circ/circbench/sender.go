package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

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
