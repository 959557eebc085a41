package endpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Span is an advertisement the router relays to the endpoint and still
// holds open: the msgid of its LNK_SPAN names it as the target of a
// circuit.
type Span struct {
	MsgID uint64
	dmsg.Span

	tx *iocom.Tx
}

// acceptSpan acknowledges and records a span the router relays, until the
// router withdraws it.
func (e *Endpoint) acceptSpan(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	s, err := m.Span()
	if err != nil {
		return nil
	}
	sp := &Span{MsgID: tx.MsgID(), Span: s, tx: tx}
	e.mu.Lock()
	e.spans[sp.MsgID] = sp
	e.notifyLocked()
	e.mu.Unlock()
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete == 0 {
			return
		}
		e.mu.Lock()
		delete(e.spans, sp.MsgID)
		e.notifyLocked()
		e.mu.Unlock()
		tx.Close()
	}
}

// Spans returns the spans the endpoint holds, by msgid.
func (e *Endpoint) Spans() []Span {
	return e.spansWhere(func(*Span) bool { return true })
}

// SpansOf returns the spans of the node labelled label, by msgid.
func (e *Endpoint) SpansOf(label string) []Span {
	return e.spansWhere(func(s *Span) bool { return s.FsLabel == label })
}

func (e *Endpoint) spansWhere(keep func(*Span) bool) []Span {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Span
	for _, s := range e.spans {
		if keep(s) {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b Span) int { return cmp.Compare(a.MsgID, b.MsgID) })
	return out
}

// Best returns the nearest span of the node labelled label (the lowest
// distance, then the oldest).
func (e *Endpoint) Best(label string) (Span, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bestLocked(label)
}

func (e *Endpoint) bestLocked(label string) (Span, bool) {
	var best *Span
	for _, s := range e.spans {
		if s.FsLabel == label && (best == nil || s.Dist < best.Dist || s.Dist == best.Dist && s.MsgID < best.MsgID) {
			best = s
		}
	}
	if best == nil {
		return Span{}, false
	}
	return *best, true
}

// WaitSpan waits until the endpoint holds a span of the node labelled
// label and returns the best one.
func (e *Endpoint) WaitSpan(ctx context.Context, label string) (Span, error) {
	var s Span
	err := e.wait(ctx, "a span of "+label, func() bool {
		var ok bool
		s, ok = e.bestLocked(label)
		return ok
	})
	return s, err
}

// DropSpan closes, from our side, a span the router holds open on us:
// the router must take it back and not offer it on this link again.
func (e *Endpoint) DropSpan(msgid uint64) error {
	e.mu.Lock()
	s := e.spans[msgid]
	e.mu.Unlock()
	if s == nil {
		return fmt.Errorf("drop span %016x: no such span", msgid)
	}
	return s.tx.Close()
}

// Advert is one of the endpoint's own advertisements: an open LNK_SPAN.
type Advert struct {
	e    *Endpoint
	tx   *iocom.Tx
	Span dmsg.Span

	// guarded by e.mu
	state AdvertState
}

// AdvertState is what the router did with an advertisement.
type AdvertState struct {
	Acked   bool   // the router answered it and keeps it open
	Refused bool   // it ended before the router acknowledged it
	Ended   bool   // it ended, from either side
	Error   uint32 // of the router's terminating message
}

// ErrNoLink reports a send on a link that is already down.
var ErrNoLink = errors.New("link closed")

// Advertise opens a LNK_SPAN carrying s. It does not wait for the
// router's answer (State, or Changes, tell it).
func (e *Endpoint) Advertise(s dmsg.Span) (*Advert, error) {
	a := &Advert{e: e, Span: s}
	// Hold the lock until the advert is registered: the router's answer
	// is handled on the reader and must find it.
	e.mu.Lock()
	defer e.mu.Unlock()
	tx, err := e.link.Open(dmsg.NewSpanMsg(0, &s), a.answer)
	if err != nil {
		return nil, fmt.Errorf("advertise %s: %w", s.FsLabel, err)
	}
	a.tx = tx
	e.adverts[tx.MsgID()] = a
	return a, nil
}

// MsgID returns the msgid of the advertisement's LNK_SPAN.
func (a *Advert) MsgID() uint64 { return a.tx.MsgID() }

// State reports what the router did with the advertisement.
func (a *Advert) State() AdvertState {
	a.e.mu.Lock()
	defer a.e.mu.Unlock()
	return a.state
}

// Withdraw closes the advertisement (LNK_ERROR|DELETE).
func (a *Advert) Withdraw() error {
	a.e.mu.Lock()
	delete(a.e.adverts, a.tx.MsgID())
	a.e.mu.Unlock()
	return a.tx.Close()
}

// answer records the router's answers to the advertisement.
func (a *Advert) answer(tx *iocom.Tx, m *dmsg.Msg) {
	del := m.Cmd&dmsg.FlagDelete != 0
	e := a.e
	e.mu.Lock()
	if m.Cmd&dmsg.FlagCreate != 0 && !del {
		a.state.Acked = true
	}
	if del {
		a.state.Ended, a.state.Error = true, m.Error
		a.state.Refused = !a.state.Acked
		delete(e.adverts, tx.MsgID())
	}
	e.notifyLocked()
	e.mu.Unlock()
	if del {
		tx.Close() // as the reference does right after a refusal
	}
}

// advertFor returns our open advertisement with msgid, if any.
func (e *Endpoint) advertFor(msgid uint64) *Advert {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.adverts[msgid]
}
