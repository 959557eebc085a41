package dmsg_test

import (
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

func TestOnlyAOneWayLnkCreditOnACircuitIsCredit(t *testing.T) {
	good := dmsg.NewCreditMsg(7, true, 1<<20)
	if !dmsg.IsCredit(&good.Header) {
		t.Fatalf("%s on circuit 7 is not credit", dmsg.CmdString(good.Cmd))
	}
	if c, err := good.Credit(); err != nil || c.Increment != 1<<20 {
		t.Fatalf("Credit() = %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name string
		edit func(h *dmsg.Header)
	}{
		{"circuit 0", func(h *dmsg.Header) { h.Circuit = 0 }},
		{"a msgid", func(h *dmsg.Header) { h.MsgID = 3 }},
		{"CREATE", func(h *dmsg.Header) { h.Cmd |= dmsg.FlagCreate }},
		{"DELETE", func(h *dmsg.Header) { h.Cmd |= dmsg.FlagDelete }},
		{"aux data", func(h *dmsg.Header) { h.AuxBytes = 8 }},
		{"another command", func(h *dmsg.Header) { h.Cmd = dmsg.LnkCirc }},
	} {
		h := good.Header
		tc.edit(&h)
		if dmsg.IsCredit(&h) {
			t.Errorf("a LNK_CREDIT with %s counts as credit", tc.name)
		}
	}
}
