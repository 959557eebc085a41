package router

import (
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/shell"
	"github.com/dmsgd/dmsgd/internal/volconf"
)

// LNK_VOLCONF (docs/PROTOCOL.md section 6) makes the router keep an outbound
// link wherever it says: the power of the shell's privileged `span`. It
// is obeyed only from the links volconf.from admits (judged as privileged
// shell commands are, shell.Grants), and what the links admitted make the
// router hold is budgeted: limits.max_volconf_targets slots over all
// links, of which a link may hold no more than are still free
// (volconf.Slots keeps that count, under Router.mu). Refusals are counted
// and logged through the rate-limited event log.

// Kinds of the rate-limited VOLCONF events.
const (
	eventVolconfRefused = "volconf.refused"
	eventVolconfIgnored = "volconf.ignored"
	eventVolconfLimit   = "volconf.max_volconf_targets"
)

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
	if v.Index > volconf.MaxSlot {
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
		t.Name = volconf.Source(peer.MediaID)
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
	targets, changed, ok := r.volconf.Set(l, media, index, t, used, budget)
	r.mu.Unlock()
	if changed {
		r.media.Set(volconf.Source(media), targets)
	}
	return ok
}

// mediaConnClosed drops a closed LNK_CONN from its media; the media's
// outbound links close with the last one.
func (r *Router) mediaConnClosed(l *link, media uuid.UUID) {
	r.mu.Lock()
	last := r.volconf.Leave(l, media)
	r.mu.Unlock()
	if last {
		r.media.Set(volconf.Source(media), nil)
	}
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
	r.mu.Lock()
	gone := r.volconf.LeaveAll(func(owner any) bool { return !owner.(*link).volconfAdmits(newer) })
	r.mu.Unlock()
	for _, media := range gone {
		r.log.Info("outbound links of a media closed: volconf.from no longer admits its LNK_CONNs",
			zap.String("media", media.String()), zap.String("volconf.from", newer.VolConf.From))
		r.media.Set(volconf.Source(media), nil)
	}
}

// isVolconfSource reports the volconf sources of peers' LNK_VOLCONF.
func isVolconfSource(source string) bool { return strings.HasPrefix(source, volconf.SourcePrefix) }
