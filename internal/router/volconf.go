package router

import (
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/shell"
)

// LNK_VOLCONF (PROTOCOL.md section 6) makes the router keep an outbound
// link wherever it says: the power of the shell's privileged `span`. It
// is obeyed only from the links volconf.from admits (judged as privileged
// shell commands are, shell.Grants), and what the links admitted make the
// router hold is budgeted: limits.max_volconf_targets slots over all
// links, of which a link may hold no more than are still free. Refusals
// are counted and logged through the rate-limited event log.

// volconfPrefix starts the name of the targets VOLCONF messages set.
const volconfPrefix = "volconf:"

// Kinds of the rate-limited VOLCONF events.
const (
	eventVolconfRefused = "volconf.refused"
	eventVolconfIgnored = "volconf.ignored"
	eventVolconfLimit   = "volconf.max_volconf_targets"
)

// volconfState is every media's VOLCONF slots, and what each link is
// charged for them; guarded by Router.mu. The zero value is empty.
type volconfState struct {
	media  map[uuid.UUID]*mediaState
	held   int           // slots in use, all media
	byLink map[*link]int // slots charged to each link
}

// mediaState tracks one media's VOLCONF slots and the LNK_CONNs naming it
// whose VOLCONF the router obeys.
type mediaState struct {
	conns map[*link]bool
	slots map[uint32]volSlot
}

// volSlot is one copy slot: where it points, and the link that set it,
// which is charged for it while its LNK_CONN is open (nil after).
type volSlot struct {
	target config.Target
	by     *link
}

// volconfAdmits reports whether the router obeys LNK_VOLCONF from l.
func (l *link) volconfAdmits(cfg *config.Config) bool {
	return shell.Grants(cfg.VolConf.From, l.trust.origin)
}

// volconf applies a LNK_VOLCONF received inside the peer's LNK_CONN. The
// slot belongs to the media of that LNK_CONN, as in the reference
// implementation (which ignores the VOLCONF's own mediaid): that media's
// last LNK_CONN closing is what closes the slot's link again.
func (l *link) volconf(m *dmsg.Msg) {
	v, err := m.VolConf()
	l.mu.Lock()
	peer := l.peer
	l.mu.Unlock()
	if err != nil || peer == nil {
		return
	}
	cfg := l.r.Config()
	fields := append(l.trustFields(), zap.Uint32("index", v.Index), zap.String("path", truncate(v.Copy.Path, maxLoggedCommand)))
	if !l.volconfAdmits(cfg) {
		l.r.metrics.TrustRefused(metrics.TrustVolconf)
		l.r.events.Warn(eventVolconfRefused, "LNK_VOLCONF refused: volconf.from does not admit this link",
			append(fields, zap.String("volconf.from", cfg.VolConf.From))...)
		return
	}
	if v.Index > 255 {
		l.r.events.Warn(eventVolconfIgnored, "LNK_VOLCONF ignored: slot index out of range", fields...)
		return
	}
	var t config.Target
	used := v.Copy.CopyID != 0
	if used {
		if t, err = config.ParseSpanPath(v.Copy.Path); err == nil {
			err = l.r.checkTarget(t)
		}
		if err != nil {
			l.r.events.Warn(eventVolconfIgnored, "LNK_VOLCONF ignored: bad path", append(fields, zap.Error(err))...)
			return
		}
		t.Name = volconfPrefix + peer.MediaID.String()
	}
	if !l.r.setSlot(l, peer.MediaID, v.Index, t, used, cfg.Limits.MaxVolconfTargets) {
		l.r.metrics.LimitHit("max_volconf_targets")
		l.r.events.Warn(eventVolconfLimit, "LNK_VOLCONF refused: limits.max_volconf_targets reached", fields...)
	}
}

// setSlot applies one slot of a media on behalf of l, and reports false
// when the budget refuses it (the slot is then left as it was).
func (r *Router) setSlot(l *link, media uuid.UUID, index uint32, t config.Target, used bool, budget int) bool {
	r.mu.Lock()
	vc := &r.volconf
	ms := vc.mediaOf(media)
	ms.conns[l] = true
	old, had := ms.slots[index]
	switch {
	case !used && !had, used && had && old.target == t:
		r.mu.Unlock()
		return true // nothing changes
	case !used:
		delete(ms.slots, index)
		vc.held--
		vc.uncharge(old.by)
	case !had || old.by != l:
		if !vc.charge(l, budget, had) {
			r.mu.Unlock()
			return false
		}
		if had {
			vc.uncharge(old.by)
		}
		ms.slots[index] = volSlot{target: t, by: l}
	default:
		ms.slots[index] = volSlot{target: t, by: l}
	}
	targets := ms.targets()
	r.mu.Unlock()
	r.media.Set(volconfPrefix+media.String(), targets)
	return true
}

func (vc *volconfState) mediaOf(media uuid.UUID) *mediaState {
	if vc.media == nil {
		vc.media = make(map[uuid.UUID]*mediaState)
		vc.byLink = make(map[*link]int)
	}
	ms := vc.media[media]
	if ms == nil {
		ms = &mediaState{conns: make(map[*link]bool), slots: make(map[uint32]volSlot)}
		vc.media[media] = ms
	}
	return ms
}

// charge charges l one more slot: a new one, or (replacing) one another
// link set. A link may hold one more while it holds less than what is
// still free, the slot it replaces counted free.
func (vc *volconfState) charge(l *link, budget int, replacing bool) bool {
	free := budget - vc.held
	if replacing {
		free++
	} else if free <= 0 {
		return false
	}
	if vc.byLink[l] >= free {
		return false
	}
	if !replacing {
		vc.held++
	}
	vc.byLink[l]++
	return true
}

func (vc *volconfState) uncharge(l *link) {
	if l == nil {
		return
	}
	if vc.byLink[l]--; vc.byLink[l] <= 0 {
		delete(vc.byLink, l)
	}
}

func (ms *mediaState) targets() []config.Target {
	out := make([]config.Target, 0, len(ms.slots))
	for i := range uint32(256) {
		if s, ok := ms.slots[i]; ok {
			out = append(out, s.target)
		}
	}
	return out
}

// mediaConnClosed drops a closed LNK_CONN from its media; the media's
// outbound links close with the last one.
func (r *Router) mediaConnClosed(l *link, media uuid.UUID) {
	r.mu.Lock()
	last := r.volconf.leave(l, media)
	r.mu.Unlock()
	if last {
		r.media.Set(volconfPrefix+media.String(), nil)
	}
}

// leave takes l out of the media's LNK_CONNs: its slots are no longer
// charged to it, and they all go with the last LNK_CONN, which leave
// reports. Called with Router.mu held.
func (vc *volconfState) leave(l *link, media uuid.UUID) (last bool) {
	ms := vc.media[media]
	if ms == nil || !ms.conns[l] {
		return false
	}
	delete(ms.conns, l)
	delete(vc.byLink, l)
	for i, s := range ms.slots {
		if s.by == l {
			ms.slots[i] = volSlot{target: s.target}
		}
	}
	if len(ms.conns) > 0 {
		return false
	}
	for _, s := range ms.slots {
		vc.held--
		vc.uncharge(s.by)
	}
	delete(vc.media, media)
	return true
}

// reloadVolconf applies a new volconf.from to the LNK_CONNs already
// obeyed: one the new rule no longer admits is dropped from its media, as
// if it had closed, and a media left without any closes its links. A
// lowered limits.max_volconf_targets evicts nothing: it refuses what
// comes next.
func (r *Router) reloadVolconf(old, newer *config.Config) {
	if old.VolConf.From == newer.VolConf.From {
		return
	}
	var gone []uuid.UUID
	r.mu.Lock()
	for media, ms := range r.volconf.media {
		for l := range ms.conns {
			if !l.volconfAdmits(newer) && r.volconf.leave(l, media) {
				gone = append(gone, media)
			}
		}
	}
	r.mu.Unlock()
	for _, media := range gone {
		r.log.Info("outbound links of a media closed: volconf.from no longer admits its LNK_CONNs",
			zap.String("media", media.String()), zap.String("volconf.from", newer.VolConf.From))
		r.media.Set(volconfPrefix+media.String(), nil)
	}
}

// isVolconfSource reports the volconf sources of peers' LNK_VOLCONF.
func isVolconfSource(source string) bool { return strings.HasPrefix(source, volconfPrefix) }
