package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// Attacks on the router's links themselves: holding slots, churning
// connections, and flooding it with things to refuse.

// (e) More TCP connections than max_links, from enough addresses to fill
// it despite a per-source limit, each trickling one byte of a LNK_CONN
// every few seconds and reconnecting at once when closed. A link must
// send its LNK_CONN within a deadline and keepalive counts whole frames,
// so none holds a slot for long. The reserve floods cannot take holds:
// the unix shell socket answers `tree` all along (the watcher asks it),
// and the configured outbound link, dropped during the flood, comes back.
// Links that never finish their LNK_CONN cannot take every slot either: a
// well-behaved leaf still gets in.
func TestAttackTrickleConnectionsBeyondMaxLinks(t *testing.T) {
	sc := currentScale()
	maxLinks := sc.pick(24, 1024)
	conns, addrs := maxLinks+sc.pick(8, 6), sc.pick(4, 64)
	every := time.Duration(sc.pick(1, 5)) * time.Second
	// A trickling connection must be gone within the LNK_CONN deadline or,
	// at the latest, a keepalive timeout without a whole frame; plus slack.
	bound := sc.keepaliveTimeout + 5*time.Second
	runFor := max(bound+3*time.Second, time.Duration(sc.pick(0, 60))*time.Second)
	runAttack(t, attackSpec{
		name: "(e) trickling connections",
		limits: sc.limits(map[string]string{
			"max_links": fmt.Sprint(maxLinks), "max_links_per_source": "8", "max_pending_links": "16",
			"conn_timeout": "2s",
		}),
		budget:   sc.budget(1 * gib),
		upstream: true,
		run: func(e *attackEnv) {
			var frame bytes.Buffer
			dmsg.NewEncoder(&frame).Encode(leafConn(1, "trickler", dmsg.PeerHammer2, 0))
			st := &trickleStats{open: map[int]time.Time{}}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := range conns {
				wg.Go(func() { trickler(e.tg.port, source(30+i%addrs), frame.Bytes(), every, stop, st) })
			}
			// The flood holds the slots once the router refuses it.
			full := waitUntil(e.sc.liveness, func() bool { return st.refusedSoFar() > 0 || e.stopping() })
			dropped := time.Now()
			e.up.drop()
			probes, in := 0, 0
			var firstOut error
			for until := e.start.Add(runFor); time.Now().Before(until) && !e.stopping(); {
				time.Sleep(time.Second) // the probes' pace
				probes++
				ok, err := freshLeafGetsIn(e.tg.port, e.sc.liveness)
				if ok {
					in++
				} else if firstOut == nil {
					firstOut = err
				}
			}
			oldest := st.oldestOpen()
			close(stop)
			wg.Wait()
			st.mu.Lock()
			defer st.mu.Unlock()
			longest := max(percentile(st.lived, 100), oldest)
			upAgain, upOK := e.up.upSince(dropped)
			e.notef("%d trickling connections from %d addresses, reconnecting when closed: %d made, %d refused at once, %d closed after p50 %v max %v; oldest open at the end %v; fresh leaf in %d of %d tries",
				conns, addrs, st.made, st.refused, len(st.lived), percentile(st.lived, 50).Round(time.Millisecond),
				percentile(st.lived, 100).Round(time.Millisecond), oldest.Round(time.Millisecond), in, probes)
			if upOK {
				e.notef("configured link back %v after it was dropped", upAgain.Sub(dropped).Round(time.Millisecond))
			} else {
				e.notef("configured link not back")
				e.t.Errorf("the configured outbound link, dropped during the flood, did not come back in %v", time.Since(dropped).Round(time.Second))
			}
			if limits, _, err := e.tg.limitRefusals(); err == nil {
				e.notef("dmsgd_limit_refusals_total %v", limits)
			}
			if !full {
				e.t.Errorf("the router refused none of %d trickling connections in %v: the flood never filled its slots", conns, e.sc.liveness)
			}
			if longest > bound {
				e.t.Errorf("a trickling connection held its link for %v; it should be closed within %v", longest.Round(time.Millisecond), bound)
			}
			// Pending slots are shared fairly among sources: a new one always
			// gets in, however many the flood holds.
			if probes == 0 || in < probes {
				e.t.Errorf("a well-behaved leaf from a new source got in %d times in %d tries during the trickle (first failure: %v)", in, probes, firstOut)
			}
		},
	})
}

// trickleStats is what the tricklers saw.
type trickleStats struct {
	mu      sync.Mutex
	made    int
	refused int               // closed before a second byte was due
	lived   []time.Duration   // how long those closed later held a link
	open    map[int]time.Time // connections open now, by number
}

// refusedSoFar returns how many connections the router refused at once.
func (st *trickleStats) refusedSoFar() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.refused
}

// oldestOpen returns the age of the oldest connection still open.
func (st *trickleStats) oldestOpen() time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	var oldest time.Duration
	for _, since := range st.open {
		oldest = max(oldest, time.Since(since))
	}
	return oldest
}

// trickler keeps one trickling connection open from from, reconnecting
// 50 ms after the router closes it, until stop is closed.
func trickler(port int, from string, frame []byte, every time.Duration, stop <-chan struct{}, st *trickleStats) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	for {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		nc, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		st.mu.Lock()
		id := st.made
		st.made++
		st.open[id] = time.Now()
		st.mu.Unlock()
		lived, closed := trickle(nc, frame, every, stop)
		nc.Close()
		st.mu.Lock()
		delete(st.open, id)
		switch {
		case closed && lived < every:
			st.refused++
		case closed:
			st.lived = append(st.lived, lived)
		}
		st.mu.Unlock()
	}
}

// trickle writes frame on nc one byte every period until the router
// closes the connection (closed, after lived) or stop is closed.
func trickle(nc net.Conn, frame []byte, every time.Duration, stop <-chan struct{}) (lived time.Duration, closed bool) {
	start := time.Now()
	buf := make([]byte, 4096)
	next, sent := start, 0
	for {
		select {
		case <-stop:
			return time.Since(start), false
		default:
		}
		if !time.Now().Before(next) {
			if _, err := nc.Write(frame[sent%len(frame) : sent%len(frame)+1]); err != nil {
				return time.Since(start), true
			}
			sent++
			next = next.Add(every)
		}
		nc.SetReadDeadline(time.Now().Add(min(time.Until(next), 250*time.Millisecond)))
		if _, err := nc.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return time.Since(start), true
		}
	}
}

// freshLeafGetsIn connects a well-behaved leaf and reports whether the
// router let it in: it acknowledged the leaf's LNK_CONN rather than
// closing the link.
func freshLeafGetsIn(port int, timeout time.Duration) (bool, error) {
	p, err := dialWire(port, "")
	if err != nil {
		return false, err
	}
	defer p.Close()
	p.Conn().SetDeadline(time.Now().Add(timeout))
	if err := p.Send(leafConn(1, "fresh", dmsg.PeerHammer2, 0)); err != nil {
		return false, fmt.Errorf("send LNK_CONN: %w", err)
	}
	dec := dmsg.NewDecoder(p.Conn())
	for {
		m, err := dec.Decode()
		if err != nil {
			return false, fmt.Errorf("before the router's LNK_CONN: %w", err)
		}
		if acksConn(m) {
			return true, nil
		}
	}
}

// acksConn reports whether m is the router's acknowledgement of a leaf's
// LNK_CONN (msgid 1): the link is established, no longer pending.
func acksConn(m *dmsg.Msg) bool {
	const ack = dmsg.FlagReply | dmsg.FlagCreate
	return m.MsgID == 1 && m.Circuit == 0 && m.Cmd&(ack|dmsg.FlagDelete) == ack
}

// (g) Many connections in a loop: connect, LNK_CONN, a few spans, garbage,
// and wait for the router to close the link. Each one costs the router a
// link set up, spans relayed to every other link and withdrawn again, and
// a protocol error: the control leaf must not pay for it.
func TestAttackConnectionChurnWithSpansAndGarbage(t *testing.T) {
	sc := currentScale()
	workers, spans := sc.pick(8, 64), 19
	runFor := time.Duration(sc.pick(8, 60)) * time.Second
	runAttack(t, attackSpec{
		name:   "(g) connection churn with garbage",
		limits: sc.limits(map[string]string{"max_links": "128"}),
		budget: sc.budget(1 * gib),
		run: func(e *attackEnv) {
			var made, refused, notClosed atomic.Int64
			garbage := make([]byte, 512)
			for i := range garbage {
				garbage[i] = byte(rand.IntN(256))
			}
			until := e.start.Add(runFor)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for iter := 0; time.Now().Before(until) && !e.stopping(); iter++ {
						switch churnOnce(e.tg.port, source(60+w%16), w, spans, garbage) {
						case churnRefused:
							refused.Add(1)
						case churnNotClosed:
							notClosed.Add(1)
						}
						made.Add(1)
					}
				})
			}
			wg.Wait()
			e.notef("%d workers made %d connections in %v (%.0f/s): %d refused, %d not closed after garbage",
				workers, made.Load(), runFor, float64(made.Load())/time.Since(e.start).Seconds(), refused.Load(), notClosed.Load())
			if notClosed.Load() > 0 {
				e.t.Errorf("%d connections that sent garbage were not closed by the router", notClosed.Load())
			}
		},
	})
}

type churnOutcome int

const (
	churnClosed    churnOutcome = iota // the router closed the link after the garbage
	churnRefused                       // it refused the connection
	churnNotClosed                     // it kept the link despite the garbage
)

func churnOnce(port int, from string, w, spans int, garbage []byte) churnOutcome {
	p, err := dialWire(port, from)
	if err != nil {
		return churnRefused
	}
	defer p.Close()
	label := fmt.Sprintf("churn%d", w)
	err = p.Write(leafConn(1, label, dmsg.PeerHammer2, ^uint64(0)))
	for j := 0; j < spans && err == nil; j++ {
		err = p.Write(advertSpan(uint64(10+j), fmt.Sprintf("%s-%d", label, j), seqID(5, uint32(w), uint32(j)), 0))
	}
	if err == nil {
		err = p.WriteRaw(garbage)
	}
	if err == nil {
		err = p.Flush()
	}
	if err != nil {
		return churnRefused
	}
	// Read what the router sends until it closes the link.
	p.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := p.Conn().Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return churnNotClosed
			}
			return churnClosed
		}
	}
}
