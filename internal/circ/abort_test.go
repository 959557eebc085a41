package circ_test

import (
	"fmt"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// TestEveryAbortSendsOneAbortDelete: when the target's span goes away,
// each router touching the circuit learns it twice (the span it received
// ends, and so does the relay it sent) and may hear the abort from its
// neighbour as well; each end must still get exactly one ABORT|DELETE for
// its LNK_CIRC, and nothing after it. Raw peers see every message the
// routers send.
func TestEveryAbortSendsOneAbortDelete(t *testing.T) {
	for _, tc := range []struct {
		name   string
		accept bool   // the target accepts before its span goes
		code   uint32 // what both ends must be told
	}{
		{"AfterSetup", true, dmsg.ErrLostLink},
		{"DuringSetup", false, dmsg.ErrCantCirc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := line(t, 3)
			p, q := dialRaw(t, rs[0].addr(), nil), dialRaw(t, rs[2].addr(), nil)
			if p.helloWindow("P", dmsg.MinCircWindow) != nil || q.helloWindow("Q", dmsg.MinCircWindow) != nil {
				t.Fatal("hello failed")
			}
			var span uint64
			eventually(t, "P holds Q's span", func() error {
				var ok bool
				if span, ok = p.spanFor("Q"); !ok {
					return fmt.Errorf("not yet")
				}
				return nil
			})
			const circ = 100
			m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span})
			m.MsgID = circ
			if err := p.Send(m); err != nil {
				t.Fatal(err)
			}
			atQ := q.firstCircuit(t)
			if tc.accept {
				accept := dmsgtest.Ack(atQ)
				if err := q.Send(accept); err != nil {
					t.Fatal(err)
				}
				eventually(t, "P sees the circuit accepted", func() error {
					p.mu.Lock()
					defer p.mu.Unlock()
					if !p.circUp[circ] {
						return fmt.Errorf("not yet")
					}
					return nil
				})
			}
			// Q withdraws the span the circuit was built on.
			if err := q.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError | dmsg.FlagDelete, MsgID: 2}}); err != nil {
				t.Fatal(err)
			}
			for _, end := range []struct {
				name string
				peer *rawPeer
				tx   txRef
			}{{"P", p, txRef{circ, true}}, {"Q", q, txRef{atQ, false}}} {
				eventually(t, end.name+" is told the circuit ended", func() error {
					if n := deletes(end.peer.circCmds(end.tx)); n == 0 {
						return fmt.Errorf("not yet")
					}
					return nil
				})
			}
			// Every router has handled everything by the time it answers
			// a ping sent after what it is still handling.
			for _, r := range []*rawPeer{p, q} {
				if !r.ping(waitTimeout) {
					t.Fatal("no answer to a ping")
				}
			}
			eventually(t, "the routers free the circuit", func() error { return noCircuits(rs...) })
			for _, end := range []struct {
				name string
				peer *rawPeer
				tx   txRef
			}{{"P", p, txRef{circ, true}}, {"Q", q, txRef{atQ, false}}} {
				cmds := end.peer.circCmds(end.tx)
				last := cmds[len(cmds)-1]
				if n := deletes(cmds); n != 1 || last&dmsg.FlagDelete == 0 {
					t.Errorf("%s got %s in its LNK_CIRC: want exactly one DELETE, last", end.name, cmdList(cmds))
				}
				if last&dmsg.FlagAbort == 0 || end.peer.circErr(end.tx) != tc.code {
					t.Errorf("%s's LNK_CIRC ended with %s %s, want ABORT|DELETE %s", end.name, dmsg.CmdString(last),
						dmsg.ErrorString(end.peer.circErr(end.tx)), dmsg.ErrorString(tc.code))
				}
			}
		})
	}
}

func deletes(cmds []uint32) int {
	n := 0
	for _, c := range cmds {
		if c&dmsg.FlagDelete != 0 {
			n++
		}
	}
	return n
}

func cmdList(cmds []uint32) string {
	s := ""
	for i, c := range cmds {
		if i > 0 {
			s += ", "
		}
		s += dmsg.CmdString(c)
	}
	return "[" + s + "]"
}
