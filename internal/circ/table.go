package circ

import (
	"sync"
	"sync/atomic"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// key names a circuit on one link: its id (the msgid of its LNK_CIRC on
// that link) and whether this router opened it.
type key struct {
	id    uint64
	local bool
}

// keyOf returns the key a received message's circuit field names: with
// REVCIRC the circuit is one the receiver (we) opened.
func keyOf(h *dmsg.Header) key {
	return key{id: h.Circuit, local: h.Cmd&dmsg.FlagRevCirc != 0}
}

// Table is one link's circuit table. The router keeps one per link and
// hands its Forward to the link as iocom's Forward hook.
type Table struct {
	conn  *iocom.Link
	name  string
	owner any

	mu   sync.RWMutex
	ends map[key]*end

	// last is the end Forward found last: a link usually carries one busy
	// circuit at a time. Only the link's reader goroutine (Forward) uses it.
	last *end

	// held counts the circuits the link's peer opened that the router
	// holds; routerPeer doubles its bounds (admit.go).
	held       atomic.Int64
	routerPeer atomic.Bool
}

// NewTable returns the empty circuit table of a link called name; owner is
// the router's handle on the link, for its Resolver.
func NewTable(conn *iocom.Link, name string, owner any) *Table {
	return &Table{conn: conn, name: name, owner: owner, ends: make(map[key]*end)}
}

// Owner returns the handle NewTable was given.
func (t *Table) Owner() any { return t.owner }

func (t *Table) add(e *end) {
	t.mu.Lock()
	t.ends[e.key] = e
	t.mu.Unlock()
}

func (t *Table) remove(e *end) {
	e.gone.Store(true)
	t.mu.Lock()
	if t.ends[e.key] == e {
		delete(t.ends, e.key)
	}
	t.mu.Unlock()
}

func (t *Table) lookup(k key) *end {
	t.mu.RLock()
	e := t.ends[k]
	t.mu.RUnlock()
	return e
}

// Len returns the number of circuit ends on the link.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.ends)
}

// Forward relays f if its circuit is one this router relays on the link,
// or takes the credit a LNK_CREDIT carries for it. It reports false for
// circuits it does not know (those ending here, or gone: iocom then
// delivers or drops them). It blocks only for a sender on a link without
// CIRC_WINDOW that is over its circuit's queue bound: pausing that link's
// reader is the backpressure DMSG has without the extension.
func (t *Table) Forward(_ *iocom.Link, f *iocom.Frame) bool {
	k := keyOf(f.Header)
	e := t.last
	if e == nil || e.key != k || e.gone.Load() {
		if e = t.lookup(k); e == nil {
			return false
		}
		t.last = e
	}
	if dmsg.Base(f.Cmd) == dmsg.LnkCredit {
		e.credit(f)
		return true
	}
	e.in.forward(f)
	return true
}

// credit takes a LNK_CREDIT that arrived at e: more room toward e's link.
// A router never relays one; one on a link without CIRC_WINDOW, or one
// that is not a plain one-way message, is dropped.
func (e *end) credit(f *iocom.Frame) {
	fl := e.out
	if fl.legacyOut || !dmsg.IsCredit(f.Header) {
		f.Drop()
		return
	}
	m, err := f.Take()
	if err != nil {
		return
	}
	body, _ := m.Credit()
	m.Release()
	fl.credit(int64(min(body.Increment, 1<<62)))
}
