package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// checkTarget applies the transport policy to an outbound target.
func (r *Router) checkTarget(t config.Target) error {
	if t.TLS {
		if c := r.Config().TLS; c.Cert == "" || c.Key == "" {
			return fmt.Errorf("%s: span+tls targets need tls.cert and tls.key", t)
		}
		return nil
	}
	if !t.IsLoopback() && !r.Config().TLS.InsecurePlainTCP {
		return fmt.Errorf("%s: plain TCP off loopback needs tls.insecure_plain_tcp", t)
	}
	return nil
}

// dial opens an outbound link to t.
func (r *Router) dial(ctx context.Context, t config.Target) (*link, error) {
	if err := r.checkTarget(t); err != nil {
		return nil, err
	}
	var nc net.Conn
	var err error
	opts := linkOptions{via: t.String(), outbound: true, target: t}
	if t.TLS {
		nc, err = r.dialTLS(ctx, t)
		if err == nil {
			opts.tlsPeer = peerName(r.Config().TLS, nc.(*tls.Conn).ConnectionState())
			opts.tlsKey = peerKey(nc.(*tls.Conn).ConnectionState())
		} else {
			r.countTLSFailure(dirOutbound, err)
		}
	} else {
		nc, err = iocom.Dial(ctx, "tcp://"+t.Addr())
	}
	if err != nil {
		return nil, err
	}
	lim := r.Config().Limits
	a, why := r.admit.admit(&lim, targetClass(t), "", time.Now())
	if why != nil {
		r.refuseConn(nc, t.String(), why)
		return nil, fmt.Errorf("%s: link refused: limits.%s reached", t, why.limit)
	}
	opts.adm = a
	l := r.startLink(nc, opts)
	if l == nil {
		return nil, fmt.Errorf("%s: link refused: shutting down", t)
	}
	return l, nil
}

// targetClass is the admission class of an outbound link: the targets of
// the configuration and of the shell's `span` always get in, those a
// peer's VOLCONF asked for count against limits.max_links.
func targetClass(t config.Target) linkClass {
	if strings.HasPrefix(t.Name, volconfPrefix) {
		return classNetwork
	}
	return classReserved
}

// connectTarget is volconf's Connect: dial t and tie the link's life to
// ctx.
func (r *Router) connectTarget(ctx context.Context, t config.Target) (<-chan struct{}, error) {
	l, err := r.dial(ctx, t)
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			reason := downTargetRemoved
			if r.closing {
				reason = downShutdown
			}
			r.mu.Unlock()
			l.closeFor(reason)
		case <-l.conn.Done():
		}
	}()
	return l.conn.Done(), nil
}

// volconfPrefix starts the name of the targets VOLCONF messages set.
const volconfPrefix = "volconf:"

// mediaState tracks one media's VOLCONF slots and the LNK_CONNs naming it
// (PROTOCOL.md section 6).
type mediaState struct {
	conns map[*link]bool
	slots map[uint32]config.Target
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
	media := peer.MediaID
	if v.Index > 255 {
		l.r.events.Warn("volconf_ignored", "LNK_VOLCONF ignored: slot index out of range",
			zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()), zap.Uint32("index", v.Index))
		return
	}
	var t config.Target
	if v.Copy.CopyID != 0 {
		if t, err = config.ParseSpanPath(v.Copy.Path); err != nil {
			l.r.events.Warn("volconf_ignored", "LNK_VOLCONF ignored: bad path",
				zap.String("link", l.id), zap.String("peer", l.conn.RemoteAddr()), zap.String("path", v.Copy.Path), zap.Error(err))
			return
		}
		t.Name = volconfPrefix + media.String()
	}
	l.r.setSlot(l, media, v.Index, t, v.Copy.CopyID != 0)
}

func (r *Router) setSlot(l *link, media uuid.UUID, index uint32, t config.Target, used bool) {
	r.mu.Lock()
	ms := r.volconf[media]
	if ms == nil {
		ms = &mediaState{conns: make(map[*link]bool), slots: make(map[uint32]config.Target)}
		r.volconf[media] = ms
	}
	ms.conns[l] = true
	if used {
		ms.slots[index] = t
	} else {
		delete(ms.slots, index)
	}
	targets := ms.targets()
	r.mu.Unlock()
	r.media.Set(volconfPrefix+media.String(), targets)
}

func (ms *mediaState) targets() []config.Target {
	out := make([]config.Target, 0, len(ms.slots))
	for i := range uint32(256) {
		if t, ok := ms.slots[i]; ok {
			out = append(out, t)
		}
	}
	return out
}

// mediaConnClosed drops a closed LNK_CONN from its media; the media's
// outbound links close with the last one.
func (r *Router) mediaConnClosed(l *link, media uuid.UUID) {
	r.mu.Lock()
	ms := r.volconf[media]
	if ms == nil || !ms.conns[l] {
		r.mu.Unlock()
		return
	}
	delete(ms.conns, l)
	last := len(ms.conns) == 0
	if last {
		delete(r.volconf, media)
	}
	r.mu.Unlock()
	if last {
		r.media.Set(volconfPrefix+media.String(), nil)
	}
}
