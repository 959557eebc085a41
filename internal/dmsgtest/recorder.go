package dmsgtest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Timeout bounds every wait of a Recorder. Everything a router answers
// arrives in milliseconds on loopback; reaching it means a hang or a lost
// message. It is generous for a loaded machine running -race.
const Timeout = 60 * time.Second

// RecordOptions say what a Recorder does with what arrives.
type RecordOptions struct {
	// AutoPong answers every LNK_PING on the link (keepalive and shell
	// pings alike) with LNK_PING|REPLY; the ping stays in the record.
	AutoPong bool
	// OnMsg, if set, sees every message first, on the reader goroutine,
	// and may answer it. Returning false leaves it out of the record; it
	// is then recycled, so OnMsg must not keep it.
	OnMsg func(m *dmsg.Msg) (keep bool)
}

// Recorder reads a Peer's stream on its own goroutine and keeps every
// message, for a test to wait for and look at. Its waits fail the test
// with the transcript when the stream ends or Timeout passes first.
type Recorder struct {
	tb   testing.TB
	p    *Peer
	opts RecordOptions

	mu      sync.Mutex
	msgs    []*dmsg.Msg
	cursor  int           // the next message Next and Expect look at
	changed chan struct{} // closed and replaced on every new message
	readErr error         // why reading stopped
	done    chan struct{} // closed when the reader stopped
}

// Record starts reading the peer's stream into a Recorder. The test's
// cleanup closes the stream and waits for the reader.
func (p *Peer) Record(tb testing.TB, opts RecordOptions) *Recorder {
	r := &Recorder{tb: tb, p: p, opts: opts, changed: make(chan struct{}), done: make(chan struct{})}
	go r.readLoop()
	tb.Cleanup(func() {
		p.Close()
		<-r.done
	})
	return r
}

func (r *Recorder) readLoop() {
	defer close(r.done)
	dec := dmsg.NewDecoder(r.p.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			r.mu.Lock()
			r.readErr = err
			r.notifyLocked()
			r.mu.Unlock()
			return
		}
		if r.opts.AutoPong && IsPing(m) {
			r.p.Send(Pong())
		}
		if r.opts.OnMsg != nil && !r.opts.OnMsg(m) {
			m.Release()
			continue
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.notifyLocked()
		r.mu.Unlock()
	}
}

func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// IsPing reports a LNK_PING that asks for an answer.
func IsPing(m *dmsg.Msg) bool {
	return dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply == 0 && m.Circuit == 0
}

// Done is closed once the stream has ended.
func (r *Recorder) Done() <-chan struct{} { return r.done }

// Changed returns a channel closed at the next message or the stream's end.
func (r *Recorder) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Err returns why reading stopped, nil while it goes on.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readErr
}

// All returns every message received so far.
func (r *Recorder) All() []*dmsg.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// Len returns how many messages were received so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// Next returns the next message after the cursor and moves past it.
func (r *Recorder) Next(what string) *dmsg.Msg {
	r.tb.Helper()
	return r.Expect(what, func(*dmsg.Msg) bool { return true })
}

// Expect returns the first message after the cursor that match accepts,
// and moves the cursor past it and every message before it.
func (r *Recorder) Expect(what string, match func(*dmsg.Msg) bool) *dmsg.Msg {
	r.tb.Helper()
	return r.await(what, true, match)
}

// Find returns the first message of the whole record that match accepts,
// waiting for it; the cursor does not move.
func (r *Recorder) Find(what string, match func(*dmsg.Msg) bool) *dmsg.Msg {
	r.tb.Helper()
	return r.await(what, false, match)
}

// Rewind moves the cursor back to the first message received.
func (r *Recorder) Rewind() {
	r.mu.Lock()
	r.cursor = 0
	r.mu.Unlock()
}

func (r *Recorder) await(what string, consume bool, match func(*dmsg.Msg) bool) *dmsg.Msg {
	r.tb.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		m, seen := r.scan(consume, match)
		if m != nil {
			return m
		}
		r.mu.Lock()
		ch, rerr, more := r.changed, r.readErr, len(r.msgs) > seen
		r.mu.Unlock()
		if more {
			continue // arrived while match ran
		}
		if rerr != nil {
			r.tb.Fatalf("raw peer: link ended (%v) while waiting for %s; transcript:\n%s", rerr, what, r.Transcript())
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.tb.Fatalf("raw peer: timed out after %v waiting for %s; transcript:\n%s", Timeout, what, r.Transcript())
		}
	}
}

// scan looks for a message match accepts, from the cursor when consume
// (moving the cursor past what it looked at) or from the start. match
// runs without the Recorder's lock, so it may call the Recorder. seen is
// how many messages had arrived when it looked.
func (r *Recorder) scan(consume bool, match func(*dmsg.Msg) bool) (m *dmsg.Msg, seen int) {
	r.mu.Lock()
	from := 0
	if consume {
		from = r.cursor
	}
	seen = len(r.msgs)
	msgs := r.msgs[from:seen:seen]
	r.mu.Unlock()
	for i, m := range msgs {
		if match(m) {
			if consume {
				r.setCursor(from + i + 1)
			}
			return m, seen
		}
	}
	if consume {
		r.setCursor(seen)
	}
	return nil, seen
}

func (r *Recorder) setCursor(n int) {
	r.mu.Lock()
	r.cursor = n
	r.mu.Unlock()
}

// Barrier sends a LNK_PING and waits for its answer: a router handles a
// link's messages in order, so everything it sent in answer to what the
// peer sent before has arrived by then. It returns the messages between
// the cursor and the answer, and moves the cursor past the answer.
func (r *Recorder) Barrier() []*dmsg.Msg {
	r.tb.Helper()
	r.mu.Lock()
	start := r.cursor
	r.mu.Unlock()
	if err := r.p.Send(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}}); err != nil {
		r.tb.Fatalf("raw peer: send LNK_PING: %v", err)
	}
	r.Expect("LNK_PING|REPLY", func(m *dmsg.Msg) bool {
		return dmsg.Base(m.Cmd) == dmsg.LnkPing && m.Cmd&dmsg.FlagReply != 0 && m.Circuit == 0
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs[start : r.cursor-1])
}

// WaitEnd waits until the far end closed the stream and returns the
// error reading ended with (see ClosedByFarEnd).
func (r *Recorder) WaitEnd() error {
	r.tb.Helper()
	select {
	case <-r.done:
	case <-time.After(Timeout):
		r.tb.Fatalf("raw peer: the far end did not close the link within %v; transcript:\n%s", Timeout, r.Transcript())
	}
	return r.Err()
}

// Transcript lists every message received, marking the cursor.
func (r *Recorder) Transcript() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for i, m := range r.msgs {
		mark := " "
		if i == r.cursor-1 {
			mark = ">"
		}
		fmt.Fprintf(&b, "%s %3d %s msgid %016x circuit %016x error %#x", mark, i, dmsg.CmdString(m.Cmd), m.MsgID, m.Circuit, m.Error)
		if len(m.Aux) > 0 {
			fmt.Fprintf(&b, " aux %q", Text(m))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Text returns a message's aux data as text, without its trailing NULs.
func Text(m *dmsg.Msg) string { return strings.TrimRight(string(m.Aux), "\x00") }
