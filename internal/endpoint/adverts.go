package endpoint

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Relay is an advertisement the router relays to the endpoint (a relay,
// in the glossary of docs/PROTOCOL.md) and still holds open: its span,
// and the msgid of its LNK_SPAN, which names it as the target of a
// circuit.
type Relay struct {
	MsgID uint64
	dmsg.Span

	tx *iocom.Tx
}

// acceptSpan acknowledges and records a relay, until the router
// withdraws it.
func (e *Endpoint) acceptSpan(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	s, err := m.Span()
	if err != nil {
		return nil
	}
	r := &Relay{MsgID: tx.MsgID(), Span: s, tx: tx}
	e.mu.Lock()
	e.relays[r.MsgID] = r
	e.notifyLocked()
	e.mu.Unlock()
	tx.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkError}})
	return func(tx *iocom.Tx, m *dmsg.Msg) {
		if m.Cmd&dmsg.FlagDelete == 0 {
			return
		}
		e.mu.Lock()
		delete(e.relays, r.MsgID)
		e.notifyLocked()
		e.mu.Unlock()
		tx.Close()
	}
}

// Relays returns the relays the endpoint holds, by msgid.
func (e *Endpoint) Relays() []Relay {
	return e.relaysWhere(func(*Relay) bool { return true })
}

// RelaysOf returns the relays of the node labelled label, by msgid.
func (e *Endpoint) RelaysOf(label string) []Relay {
	return e.relaysWhere(func(s *Relay) bool { return s.FsLabel == label })
}

func (e *Endpoint) relaysWhere(keep func(*Relay) bool) []Relay {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Relay
	for _, s := range e.relays {
		if keep(s) {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b Relay) int { return cmp.Compare(a.MsgID, b.MsgID) })
	return out
}

// Best returns the nearest relay of the node labelled label (the lowest
// distance, then the oldest).
func (e *Endpoint) Best(label string) (Relay, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bestLocked(label)
}

func (e *Endpoint) bestLocked(label string) (Relay, bool) {
	var best *Relay
	for _, s := range e.relays {
		if s.FsLabel == label && (best == nil || s.Dist < best.Dist || s.Dist == best.Dist && s.MsgID < best.MsgID) {
			best = s
		}
	}
	if best == nil {
		return Relay{}, false
	}
	return *best, true
}

// WaitRelay waits until the endpoint holds a relay of the node labelled
// label and returns the best one.
func (e *Endpoint) WaitRelay(ctx context.Context, label string) (Relay, error) {
	var s Relay
	err := e.wait(ctx, "a relay of "+label, func() bool {
		var ok bool
		s, ok = e.bestLocked(label)
		return ok
	})
	return s, err
}

// DropRelay closes, from our side, a relay the router holds open on us:
// the router must take it back and not offer it on this link again.
func (e *Endpoint) DropRelay(msgid uint64) error {
	e.mu.Lock()
	s := e.relays[msgid]
	e.mu.Unlock()
	if s == nil {
		return fmt.Errorf("drop relay %016x: no such relay", msgid)
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
