package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Per-circuit flow control (PROTOCOL.md 11.2) between real daemons.

// leafWindow is the window the flow-controlled test leaves grant: the
// smallest a LNK_CONN may offer.
const leafWindow = dmsg.MinCircWindow

// stallConfig shortens circuit_stall so that a stalled circuit is
// aborted within a test, and still leaves seconds to measure others.
const stallConfig = "limits:\n  circuit_stall: 6s\n"

// openCircuit opens a circuit from a to the leaf labelled to (whose leaf
// is b) with LNK_CIRC msgid id, accepts it at b and returns its id there.
func openCircuit(t *testing.T, a, b *leaf, to string, id uint64) uint64 {
	t.Helper()
	var span uint64
	a.wait(to+"'s span", 30*time.Second, func() bool { span = a.spans[to]; return span != 0 })
	b.mu.Lock()
	known := len(b.circIn)
	b.mu.Unlock()
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span})
	m.MsgID = id
	if err := a.send(m); err != nil {
		t.Fatal(err)
	}
	var far uint64
	b.wait("the LNK_CIRC at "+to, 20*time.Second, func() bool {
		if len(b.circIn) > known {
			far = b.circIn[known]
		}
		return far != 0
	})
	accept := &dmsg.Msg{Header: dmsg.Header{MsgID: far,
		Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans}}
	if err := b.send(accept); err != nil {
		t.Fatal(err)
	}
	a.wait("the circuit accepted", 20*time.Second, func() bool { return a.circUp[id] })
	return far
}

// counter consumes a leaf's circuit data, checking each circuit's order,
// and counts what arrived.
type counter struct {
	n    atomic.Int64
	last sync.Map // circuit -> last seq
	errs chan error
	stop chan struct{}
	done chan struct{}
}

func count(l *leaf) *counter {
	c := &counter{errs: make(chan error, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case m := <-l.data:
				seq := uint64(0)
				if len(m.Aux) >= 8 {
					seq = leUint64(m.Aux)
				}
				if prev, ok := c.last.Load(m.Circuit); ok && seq != prev.(uint64)+1 {
					select {
					case c.errs <- fmt.Errorf("circuit %d: message %d after %d", m.Circuit, seq, prev):
					default:
					}
				}
				c.last.Store(m.Circuit, seq)
				c.n.Add(1)
			case <-c.stop:
				return
			}
		}
	}()
	return c
}

func (c *counter) close() {
	close(c.stop)
	<-c.done
}

// rate counts what arrives for d.
func (c *counter) rate(d time.Duration) float64 {
	start := c.n.Load()
	time.Sleep(d)
	return float64(c.n.Load()-start) / d.Seconds()
}

// spanDelay advertises a fresh leaf labelled label on d and returns how
// long until watch holds its span.
func spanDelay(t *testing.T, d *daemon, watch *leaf, label string) time.Duration {
	t.Helper()
	start := time.Now()
	dialLeafWith(t, d.port, label, leafOptions{ping: true})
	for {
		watch.mu.Lock()
		_, ok := watch.spans[label]
		watch.mu.Unlock()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s's span did not cross within 30s", label)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Two daemons; circuits X and Y cross the link between them. X's
// consumer stops reading its socket while X's producer pushes as fast as
// its windows let it: Y keeps flowing and a span change crosses the link
// at once, and after circuit_stall X ends with IO at both ends. The rates
// and delays are logged, not asserted: the machine may be loaded.
func TestAStalledCircuitLeavesTheLinkToOthers(t *testing.T) {
	n1 := newDaemonExtra(t, "n1", stallConfig)
	n1.start()
	n2 := newDaemonExtra(t, "n2", stallConfig, n1.port)
	n2.start()
	opts := leafOptions{window: leafWindow, ping: true}
	srcX := dialLeafWith(t, n1.port, "srcX", opts)
	srcY := dialLeafWith(t, n1.port, "srcY", opts)
	watch := dialLeafWith(t, n2.port, "watch", opts)
	sinkX := dialLeafWith(t, n2.port, "sinkX", opts)
	sinkY := dialLeafWith(t, n2.port, "sinkY", opts)
	x := uint64(100)
	xFar := openCircuit(t, srcX, sinkX, "sinkX", x)
	y := uint64(100)
	openCircuit(t, srcY, sinkY, "sinkY", y)
	if !srcX.flow() || !sinkY.flow() {
		t.Fatal("per-circuit flow control is not in force between the leaves and the daemons")
	}

	yCount := count(sinkY)
	defer yCount.close()
	stopY := make(chan struct{})
	ySent := make(chan uint64, 1)
	go func() { ySent <- srcY.streamUntil(y, 1, stopY) }()
	before := yCount.rate(time.Second)
	// Spans advertised on n1 cross the link the way X's data does.
	spanBefore := spanDelay(t, n1, watch, "before")

	sinkX.pause()
	stalled := time.Now()
	stopX := make(chan struct{})
	xSent := make(chan uint64, 1)
	go func() { xSent <- srcX.streamUntil(x, 1, stopX) }()
	time.Sleep(500 * time.Millisecond) // X's windows fill up
	during := yCount.rate(time.Second)
	spanDuring := spanDelay(t, n1, watch, "during")
	measured := time.Since(stalled)
	srcX.mu.Lock()
	_, xEndedEarly := srcX.circEnd[x]
	srcX.mu.Unlock()

	t.Logf("circuit Y: %.0f msgs/s before X stalled, %.0f msgs/s while it was (%.0f%%)", before, during, 100*during/before)
	t.Logf("a span change across the link: %v before, %v while X was stalled",
		spanBefore.Round(time.Microsecond), spanDuring.Round(time.Microsecond))
	if during == 0 {
		t.Errorf("circuit Y moved nothing while X was stalled")
	}
	if xEndedEarly || measured > 6*time.Second {
		t.Errorf("Y and the span change took %v while X was stalled (ended early: %v): they waited for X", measured, xEndedEarly)
	}

	srcX.wait("X aborted at its producer", 30*time.Second, func() bool { _, ok := srcX.circEnd[x]; return ok })
	t.Logf("X aborted %v after its consumer stopped reading", time.Since(stalled).Round(time.Millisecond))
	close(stopX)
	<-xSent
	srcX.mu.Lock()
	code := srcX.circEnd[x]
	srcX.mu.Unlock()
	if code != dmsg.ErrIO {
		t.Errorf("X ended at its producer with %s, want IO", dmsg.ErrorString(code))
	}
	sinkX.resume()
	go func() {
		for range sinkX.data { // what reached the consumer before the abort
		}
	}()
	sinkX.wait("X aborted at its consumer", 30*time.Second, func() bool { _, ok := sinkX.circEnd[xFar]; return ok })
	sinkX.mu.Lock()
	code = sinkX.circEnd[xFar]
	sinkX.mu.Unlock()
	if code != dmsg.ErrIO {
		t.Errorf("X ended at its consumer with %s, want IO", dmsg.ErrorString(code))
	}
	after := yCount.n.Load()
	waitFor(t, 20*time.Second, "Y flowing after the abort", func() bool { return yCount.n.Load() > after+100 })
	close(stopY)
	<-ySent
	select {
	case err := <-yCount.errs:
		t.Error(err)
	default:
	}
}

// A peer that offers flow control and then ignores its window gets its
// circuit aborted with PARAM, and nothing else: its link and its other
// circuit carry on.
func TestAPeerPastItsWindowLosesOnlyThatCircuit(t *testing.T) {
	n1 := newDaemon(t, "n1")
	n1.start()
	opts := leafOptions{window: leafWindow, ping: true}
	evil := dialLeafWith(t, n1.port, "evil", opts)
	sink := dialLeafWith(t, n1.port, "sink", opts)
	other := dialLeafWith(t, n1.port, "other", opts)
	bad := uint64(100)
	openCircuit(t, evil, sink, "sink", bad)
	good := uint64(101)
	openCircuit(t, evil, other, "other", good)
	sink.pause()
	// What the daemon granted: its circ_window plus what it wrote toward
	// the stopped sink, which its kernel buffers bound. 256 MiB is far
	// past both.
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.Circuit = bad
	m.SetAux(make([]byte, dmsg.MaxAuxSize))
	var pushed int
	for pushed < 256<<20 {
		evil.mu.Lock()
		_, ended := evil.circEnd[bad]
		evil.mu.Unlock()
		if ended {
			break
		}
		if err := evil.send(m); err != nil {
			t.Fatalf("the peer's link failed after %d MiB: %v", pushed>>20, err)
		}
		pushed += m.EncodedSize()
	}
	evil.wait("the overrun circuit aborted", 20*time.Second, func() bool { _, ok := evil.circEnd[bad]; return ok })
	evil.mu.Lock()
	code := evil.circEnd[bad]
	evil.mu.Unlock()
	t.Logf("the peer pushed %d MiB before its circuit was aborted", pushed>>20)
	if code != dmsg.ErrParam {
		t.Errorf("the overrun circuit ended with %s, want PARAM", dmsg.ErrorString(code))
	}
	otherCount := count(other)
	defer otherCount.close()
	if !evil.stream(good, 1, 500) {
		t.Fatal("the peer's link broke")
	}
	waitFor(t, 20*time.Second, "the peer's other circuit delivering", func() bool { return otherCount.n.Load() == 500 })
	sink.resume()
	if _, err := n1.tree(); err != nil {
		t.Fatal(err)
	}
}

// Peers without flow control (libdmsg, older dmsgd) and peers with it run
// circuits with each other across two daemons, in both directions, every
// message in order.
func TestPeersWithAndWithoutFlowControlRunCircuits(t *testing.T) {
	n1 := newDaemon(t, "n1")
	n1.start()
	n2 := newDaemon(t, "n2", n1.port)
	n2.start()
	legacy := dialLeafWith(t, n1.port, "legacy", leafOptions{ping: true})
	modern := dialLeafWith(t, n2.port, "modern", leafOptions{window: leafWindow, ping: true})
	toModern := openCircuit(t, legacy, modern, "modern", 100)
	toLegacy := openCircuit(t, modern, legacy, "legacy", 100)
	if legacy.flow() || !modern.flow() {
		t.Fatalf("flow control in force: legacy %v, modern %v", legacy.flow(), modern.flow())
	}
	const n = 3000
	go legacy.stream(100, 1, n)
	modern.receive(t, toModern, 1, n)
	go modern.stream(100, 1, n)
	legacy.receive(t, toLegacy, 1, n)
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
