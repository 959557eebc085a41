package iocom_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// ---- every flag combination on both tables ----

type outcome string

const (
	accepted  outcome = "is accepted"
	delivered outcome = "is delivered to the transaction"
	dropped   outcome = "is dropped"
	violates  outcome = "is a protocol violation"
	oneWay    outcome = "is a one-way message"
)

// tableState is a state of the msgid a probe message names, with the steps
// that reach it. probe is the msgid the probe carries.
type tableState struct {
	name  string
	setup []step
	probe ref
}

var remoteStates = []tableState{
	{name: "a msgid the peer has not opened", probe: theirs(9)},
	{name: "the peer's open transaction", probe: theirs(9), setup: []step{
		peerSends(dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		handlerGets("accept", dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		connSends(ackReply, theirs(9), 0),
	}},
	{name: "the peer's transaction after its DELETE", probe: theirs(9), setup: []step{
		peerSends(dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		handlerGets("accept", dmsg.LnkSpan|dmsg.FlagCreate, theirs(9)),
		connSends(ackReply, theirs(9), 0),
		peerSends(dmsg.LnkError|dmsg.FlagDelete, theirs(9)),
		handlerGets("msg", dmsg.LnkError|dmsg.FlagDelete, theirs(9)),
	}},
}

var localStates = []tableState{
	{name: "a msgid we have not opened", probe: theirs(9)},
	{name: "our transaction awaiting its reply", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
	}},
	{name: "our transaction after the peer's REPLY|CREATE", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
		peerSends(ackReply, ours("a")),
		handlerGets("msg", ackReply, ours("a")),
	}},
	{name: "our transaction after the peer's REPLY|DELETE", probe: ours("a"), setup: []step{
		weOpen("a", dmsg.LnkSpan|dmsg.FlagCreate),
		connSends(dmsg.LnkSpan|dmsg.FlagCreate, ours("a"), 0),
		peerSends(ackReply, ours("a")),
		handlerGets("msg", ackReply, ours("a")),
		peerSends(closeReply, ours("a")),
		handlerGets("msg", closeReply, ours("a")),
	}},
}

// flagCase is the expected fate of a probe carrying flags in a state.
type flagCase struct {
	flags string
	want  outcome
}

// remoteTable: messages without REPLY or REVTRANS, looked up among the
// transactions the peer opened.
var remoteTable = map[string][]flagCase{
	"a msgid the peer has not opened": {
		{"", violates}, // in-stream message for a transaction that does not exist
		{"CREATE", accepted},
		{"DELETE", violates},
		{"CREATE|DELETE", accepted},
		{"ABORT", dropped},
		{"CREATE|ABORT", accepted},
		{"DELETE|ABORT", dropped}, // a late abort of something already gone
		{"CREATE|DELETE|ABORT", accepted},
	},
	"the peer's open transaction": {
		{"", delivered},
		{"CREATE", violates},
		{"DELETE", delivered},
		{"CREATE|DELETE", violates},
		{"ABORT", delivered},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", violates},
	},
	"the peer's transaction after its DELETE": {
		{"", violates},
		{"CREATE", violates}, // the msgid is not free until we DELETE too
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", violates},
	},
}

// localTable: messages with REPLY and/or REVTRANS, looked up among the
// transactions the Link opened. Each row is checked with REPLY, with
// REVTRANS and with both.
var localTable = map[string][]flagCase{
	"a msgid we have not opened": {
		{"", violates},
		{"CREATE", violates},
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", dropped},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", dropped},
	},
	"our transaction awaiting its reply": {
		{"", violates}, // nothing may come before REPLY|CREATE
		{"CREATE", delivered},
		{"DELETE", violates},
		{"CREATE|DELETE", delivered}, // a single-message answer or a refusal
		{"ABORT", delivered},
		{"CREATE|ABORT", delivered},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", delivered},
	},
	"our transaction after the peer's REPLY|CREATE": {
		{"", delivered},
		{"CREATE", violates}, // REPLY|CREATE twice
		{"DELETE", delivered},
		{"CREATE|DELETE", violates},
		{"ABORT", delivered},
		{"CREATE|ABORT", violates},
		{"DELETE|ABORT", delivered},
		{"CREATE|DELETE|ABORT", violates},
	},
	"our transaction after the peer's REPLY|DELETE": {
		{"", violates}, // message after the peer's DELETE
		{"CREATE", violates},
		{"DELETE", violates},
		{"CREATE|DELETE", violates},
		{"ABORT", dropped},
		{"CREATE|ABORT", dropped},
		{"DELETE|ABORT", dropped},
		{"CREATE|DELETE|ABORT", dropped},
	},
}

func TestEveryFlagCombinationOnThePeersTable(t *testing.T) {
	for _, st := range remoteStates {
		for _, fc := range remoteTable[st.name] {
			runFlagCase(t, st, flags(fc.flags), fc.want)
		}
	}
}

func TestEveryFlagCombinationOnOurTable(t *testing.T) {
	for _, st := range localStates {
		for _, fc := range localTable[st.name] {
			for _, rev := range []string{"REPLY", "REVTRANS", "REPLY|REVTRANS"} {
				runFlagCase(t, st, flags(fc.flags)|flags(rev), fc.want)
			}
		}
	}
}

// TestEveryFlagCombinationWithMsgidZero: msgid 0 is one-way; a transaction
// may not use it, but a late abort naming it is harmless.
func TestEveryFlagCombinationWithMsgidZero(t *testing.T) {
	for f := uint32(0); f < 32; f++ {
		var fl uint32
		for bit, name := range []string{"CREATE", "DELETE", "REPLY", "ABORT", "REVTRANS"} {
			if f&(1<<bit) != 0 {
				fl |= flags(name)
			}
		}
		want := oneWay
		switch {
		case fl&(dmsg.FlagCreate|dmsg.FlagDelete) == 0:
		case fl&dmsg.FlagAbort != 0:
			want = dropped
		default:
			want = violates
		}
		runFlagCase(t, tableState{name: "msgid 0", probe: theirs(0)}, fl, want)
	}
}

// runFlagCase reaches st, sends one probe carrying fl and checks its fate.
func runFlagCase(t *testing.T, st tableState, fl uint32, want outcome) {
	cmd := dmsg.LnkError | fl
	if fl&dmsg.FlagCreate != 0 && fl&(dmsg.FlagReply|dmsg.FlagRevTrans) == 0 {
		cmd = dmsg.LnkCirc | fl // opening: a command the handler accepts silently
	}
	t.Run(fmt.Sprintf("%s for %s %s", flagNames(fl), st.name, want), func(t *testing.T) {
		guard(t)
		h := newHarness(t, nil)
		for _, s := range st.setup {
			s(h)
		}
		id := h.msgid(st.probe)
		h.peer.mustSend(msg(cmd, id))
		if want == violates {
			violation()(h)
			var pe *iocom.ProtocolError
			errors.As(h.conn.Err(), &pe)
			if pe.Cmd != cmd || pe.MsgID != id {
				t.Errorf("ProtocolError names %08x msgid %d, want the probe %08x msgid %d", pe.Cmd, pe.MsgID, cmd, id)
			}
			h.finish()
			return
		}
		ev := h.barrier()
		if len(ev) != countEvents(want) {
			t.Fatalf("handler calls %v, want %d (the probe %s)", ev, countEvents(want), want)
		}
		kind := map[outcome]string{accepted: "accept", delivered: "msg", oneWay: "oneway"}[want]
		if len(ev) == 1 && (ev[0].kind != kind || ev[0].cmd != cmd || ev[0].msgid != id) {
			t.Errorf("handler got %v, want %s of the probe", ev[0], kind)
		}
		h.run()
	})
}

// countEvents is how many handler calls a probe with this fate causes.
func countEvents(o outcome) int {
	if o == dropped || o == violates {
		return 0
	}
	return 1
}
