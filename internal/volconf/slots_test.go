package volconf

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/config"
)

func slotTarget(host string) config.Target { return config.Target{Host: host, Port: 987} }

var mediaA, mediaB = uuid.MustParse("00000000-0000-0000-0000-00000000000a"), uuid.MustParse("00000000-0000-0000-0000-00000000000b")

func TestSlotsListTheirMediasTargetsInSlotOrder(t *testing.T) {
	var s Slots
	s.Set("L1", mediaA, 7, slotTarget("b"), true, 10)
	got, changed, ok := s.Set("L1", mediaA, 2, slotTarget("a"), true, 10)
	if !ok || !changed || !reflect.DeepEqual(got, []config.Target{slotTarget("a"), slotTarget("b")}) {
		t.Fatalf("Set = %v %v %v, want [a b] changed", got, changed, ok)
	}
	if _, changed, ok := s.Set("L1", mediaA, 2, slotTarget("a"), true, 10); changed || !ok {
		t.Errorf("setting a slot to what it holds reported a change")
	}
	got, changed, _ = s.Set("L1", mediaA, 7, config.Target{}, false, 10)
	if !changed || !reflect.DeepEqual(got, []config.Target{slotTarget("a")}) || s.Held() != 1 {
		t.Errorf("after clearing slot 7: %v changed=%v held=%d", got, changed, s.Held())
	}
}

func TestNoOneOwnerTakesTheSlotBudgetFromTheOthers(t *testing.T) {
	var s Slots
	const budget = 4
	// L1 may take a slot while it holds fewer than are still free: 2 of 4.
	var taken int
	for i := range uint32(4) {
		if _, _, ok := s.Set("L1", mediaA, i, slotTarget("x"+string(rune('a'+i))), true, budget); ok {
			taken++
		}
	}
	if taken != 2 {
		t.Fatalf("one owner took %d of %d slots, want 2", taken, budget)
	}
	if _, _, ok := s.Set("L2", mediaB, 0, slotTarget("y"), true, budget); !ok {
		t.Fatal("a second owner was refused its first slot")
	}
	if _, _, ok := s.Set("L3", mediaB, 1, slotTarget("z"), true, budget); !ok {
		t.Fatal("a third owner was refused the last free slot")
	}
	if _, _, ok := s.Set("L4", mediaB, 2, slotTarget("w"), true, budget); ok {
		t.Fatal("a slot past the budget was granted")
	}
	if s.Held() != budget {
		t.Errorf("held = %d, want %d", s.Held(), budget)
	}
}

func TestAMediasSlotsGoWithItsLastOwner(t *testing.T) {
	var s Slots
	s.Set("L1", mediaA, 0, slotTarget("a"), true, 10)
	s.Set("L2", mediaA, 1, slotTarget("b"), true, 10)
	if s.Leave("L1", mediaA) {
		t.Fatal("the media was reported gone while L2 still keeps it")
	}
	if s.Held() != 2 {
		t.Errorf("held = %d after L1 left, want 2: its slot stays while the media lives", s.Held())
	}
	if !s.Leave("L2", mediaA) || s.Held() != 0 {
		t.Errorf("after the last owner left: held = %d, want 0 and the media gone", s.Held())
	}
	if s.Leave("L2", mediaA) {
		t.Error("leaving twice reported the media gone twice")
	}
}

func TestLeaveAllReportsEachEmptiedMediaOnce(t *testing.T) {
	var s Slots
	s.Set("L1", mediaA, 0, slotTarget("a"), true, 10)
	s.Set("L2", mediaA, 1, slotTarget("b"), true, 10)
	s.Set("L1", mediaB, 0, slotTarget("c"), true, 10)
	gone := s.LeaveAll(func(owner any) bool { return owner == "L1" })
	if !reflect.DeepEqual(gone, []uuid.UUID{mediaB}) || s.Held() != 2 {
		t.Errorf("LeaveAll(L1) emptied %v, held %d; want [B] and 2 held", gone, s.Held())
	}
}
