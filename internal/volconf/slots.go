package volconf

import (
	"github.com/google/uuid"

	"github.com/dmsgd/dmsgd/internal/config"
)

// MaxSlot is the highest copy slot index a LNK_VOLCONF may set: a media
// has 256 copies (docs/PROTOCOL.md section 6).
const MaxSlot = 255

// Slots is what peers' LNK_VOLCONF messages set: each media's copy slots,
// the owners (the links whose LNK_CONN names the media and whose VOLCONF
// the router obeys) that keep them, and how many slots each owner is
// charged for. A media's slots live while at least one of its owners
// does; a slot is charged to the owner that set it while that owner
// lives. Owners are any comparable values (the router's links).
//
// The zero value is empty. Slots does no locking: its user serialises
// every call, and applies the targets a call returns (Manager.Set with
// the media's Source) under the same order.
type Slots struct {
	media   map[uuid.UUID]*mediaSlots
	held    int         // slots in use, all media
	byOwner map[any]int // slots charged to each owner
}

// mediaSlots is one media's owners and copy slots.
type mediaSlots struct {
	owners map[any]bool
	slots  map[uint32]slot
}

// slot is one copy slot: where it points, and the owner that set it and
// is charged for it (nil once that owner has left).
type slot struct {
	target config.Target
	by     any
}

// Source is the Manager source of a media's slots.
func Source(media uuid.UUID) string { return SourcePrefix + media.String() }

// SourcePrefix starts the Manager sources that Slots' media set.
const SourcePrefix = "volconf:"

// Set makes owner one of the media's owners and sets (used) or clears
// copy slot index to t on its behalf, within budget slots over all media:
// an owner may take one more slot while it holds fewer than are still
// free (a slot it takes over from another owner counts as free), so no
// one owner can take the budget from the others. It reports false when
// the budget refuses (the slot is left as it was) and, when the media's
// targets changed, changed true and the targets to give Manager.Set.
func (s *Slots) Set(owner any, media uuid.UUID, index uint32, t config.Target, used bool, budget int) (targets []config.Target, changed, ok bool) {
	ms := s.mediaOf(media)
	ms.owners[owner] = true
	old, had := ms.slots[index]
	switch {
	case !used && !had, used && had && old.target == t:
		return nil, false, true
	case !used:
		delete(ms.slots, index)
		s.held--
		s.uncharge(old.by)
	case !had || old.by != owner:
		if !s.charge(owner, budget, had) {
			return nil, false, false
		}
		if had {
			s.uncharge(old.by)
		}
		ms.slots[index] = slot{target: t, by: owner}
	default:
		ms.slots[index] = slot{target: t, by: owner}
	}
	return ms.targets(), true, true
}

// Leave takes owner out of the media's owners: its slots are no longer
// charged to it, and they all go with the media's last owner, which Leave
// reports (its targets are then none).
func (s *Slots) Leave(owner any, media uuid.UUID) (last bool) {
	ms := s.media[media]
	if ms == nil || !ms.owners[owner] {
		return false
	}
	delete(ms.owners, owner)
	delete(s.byOwner, owner)
	for i, sl := range ms.slots {
		if sl.by == owner {
			ms.slots[i] = slot{target: sl.target}
		}
	}
	if len(ms.owners) > 0 {
		return false
	}
	for _, sl := range ms.slots {
		s.held--
		s.uncharge(sl.by)
	}
	delete(s.media, media)
	return true
}

// LeaveAll takes every owner for which gone reports true out of every
// media, and returns the media that lost their last owner.
func (s *Slots) LeaveAll(gone func(owner any) bool) (emptied []uuid.UUID) {
	for media, ms := range s.media {
		for owner := range ms.owners {
			if gone(owner) && s.Leave(owner, media) {
				emptied = append(emptied, media)
				break
			}
		}
	}
	return emptied
}

// Held is the number of slots in use over all media.
func (s *Slots) Held() int { return s.held }

func (s *Slots) mediaOf(media uuid.UUID) *mediaSlots {
	if s.media == nil {
		s.media = make(map[uuid.UUID]*mediaSlots)
		s.byOwner = make(map[any]int)
	}
	ms := s.media[media]
	if ms == nil {
		ms = &mediaSlots{owners: make(map[any]bool), slots: make(map[uint32]slot)}
		s.media[media] = ms
	}
	return ms
}

// charge charges owner one more slot: a new one, or (replacing) one
// another owner set.
func (s *Slots) charge(owner any, budget int, replacing bool) bool {
	free := budget - s.held
	if replacing {
		free++
	} else if free <= 0 {
		return false
	}
	if s.byOwner[owner] >= free {
		return false
	}
	if !replacing {
		s.held++
	}
	s.byOwner[owner]++
	return true
}

func (s *Slots) uncharge(owner any) {
	if owner == nil {
		return
	}
	if s.byOwner[owner]--; s.byOwner[owner] <= 0 {
		delete(s.byOwner, owner)
	}
}

// targets lists the media's slot targets in slot order.
func (ms *mediaSlots) targets() []config.Target {
	out := make([]config.Target, 0, len(ms.slots))
	for i := range uint32(MaxSlot + 1) {
		if sl, ok := ms.slots[i]; ok {
			out = append(out, sl.target)
		}
	}
	return out
}
