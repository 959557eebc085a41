package circ_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The benchmarks compare circuits relayed by dmsgd with an ideal relay
// chain measured in the same run: the same number of hops over loopback
// TCP and the same raw endpoints (a dmsg.Encoder sending, a dmsg.Decoder
// receiving), but relays that only cut the byte stream into frames by
// their header's size fields and pass them on unchanged, with the same
// batching as an iocom writer (flush only when the input is drained).
// Figures worth comparing are the ratios.

// path is a sender and a receiver joined by a circuit (dmsgd) or by a
// chain of ideal relays, with the circuit ids each end puts on its data.
type path struct {
	send, recv         *rawPeer
	sendCirc, recvCirc uint64
	recvRev            uint32 // REVCIRC on the receiver's data (dmsgd: it did not open the circuit)

	count   atomic.Int64 // data messages received
	target  atomic.Int64
	reached chan struct{}
	replies chan struct{} // one per answer the sender receives
}

func newPathState() *path {
	return &path{reached: make(chan struct{}, 1), replies: make(chan struct{}, 1)}
}

// recvHook counts data at the receiver and, for requests, answers at
// once (latency runs).
func (p *path) recvHook(m *dmsg.Msg) bool {
	if m.Circuit == 0 {
		return false
	}
	if m.Cmd&dmsg.FlagCreate != 0 {
		reply := &dmsg.Msg{Header: dmsg.Header{MsgID: m.MsgID, Circuit: p.recvCirc,
			Cmd: cmdInner | dmsg.FlagCreate | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans | p.recvRev}}
		reply.SetAux(m.Aux)
		p.recv.send(reply)
		return true
	}
	if p.count.Add(1) == p.target.Load() {
		p.reached <- struct{}{}
	}
	return true
}

// sendHook signals answers at the sender.
func (p *path) sendHook(m *dmsg.Msg) bool {
	if m.Circuit == 0 {
		return false
	}
	p.replies <- struct{}{}
	return true
}

func (p *path) close() {
	if p.send != nil {
		p.send.close()
	}
	if p.recv != nil {
		p.recv.close()
	}
}

// dmsgdPath sets up hops routers in a line, a raw receiver advertising a
// span on the last and a raw sender on the first, and a circuit between
// them.
func dmsgdPath(b *testing.B, hops int) *path {
	rs := line(b, hops, withoutKeepalive())
	p := newPathState()
	b.Cleanup(p.close)
	var err error
	if p.recv, err = dialRaw(rs[hops-1].addr(), p.recvHook); err != nil {
		b.Fatal(err)
	}
	if p.send, err = dialRaw(rs[0].addr(), p.sendHook); err != nil {
		b.Fatal(err)
	}
	if p.recv.hello("recv") != nil || p.send.hello("") != nil {
		b.Fatal("hello failed")
	}
	var span uint64
	eventually(b, "the sender holds the receiver's span", func() error {
		var ok bool
		if span, ok = p.send.spanFor("recv"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// The sender opens the circuit; the receiver accepts it when the
	// LNK_CIRC reaches it. The router then relays the acceptance back.
	const circID = 100
	m := dmsg.NewCircMsg(dmsg.FlagCreate, &dmsg.Circ{Target: span})
	m.MsgID = circID
	if err := p.send.send(m); err != nil {
		b.Fatal(err)
	}
	eventually(b, "the LNK_CIRC reaches the receiver", func() error {
		p.recv.mu.Lock()
		defer p.recv.mu.Unlock()
		if len(p.recv.rxCircs) == 0 {
			return fmt.Errorf("not yet")
		}
		p.recvCirc = p.recv.rxCircs[0]
		return nil
	})
	accept := &dmsg.Msg{Header: dmsg.Header{MsgID: p.recvCirc,
		Cmd: dmsg.LnkError | dmsg.FlagCreate | dmsg.FlagReply | dmsg.FlagRevTrans}}
	if err := p.recv.send(accept); err != nil {
		b.Fatal(err)
	}
	eventually(b, "the sender sees the circuit accepted", func() error {
		p.send.mu.Lock()
		defer p.send.mu.Unlock()
		if !p.send.circUp[circID] {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	p.sendCirc, p.recvRev = circID, dmsg.FlagRevCirc
	return p
}

// burst prepares n one-way DBG_SHELL messages with size bytes of aux for
// the sender, to be sent any number of times by throughput.
func (p *path) burst(b *testing.B, n, size int) *burst {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.Circuit = p.sendCirc
	m.SetAux(make([]byte, size))
	burst, err := p.send.encodeN(m, n)
	if err != nil {
		b.Fatal(err)
	}
	return burst
}

// throughput sends a burst of n messages and returns the time until the
// receiver had them all.
func (p *path) throughput(b *testing.B, bu *burst, n int) time.Duration {
	p.count.Store(0)
	p.target.Store(int64(n))
	start := time.Now()
	if err := p.send.writeBurst(bu); err != nil {
		b.Fatal(err)
	}
	select {
	case <-p.reached:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d messages arrived", p.count.Load(), n)
	}
	return time.Since(start)
}

// latency runs n single-message transactions inside the circuit one
// after the other (request CREATE|DELETE, answer REPLY|CREATE|DELETE),
// numbered from first+1, and returns each round trip.
func (p *path) latency(b *testing.B, n int, first uint64) []time.Duration {
	m := dmsg.NewMsg(cmdInner | dmsg.FlagCreate | dmsg.FlagDelete)
	m.Circuit = p.sendCirc
	m.SetAux(make([]byte, 64))
	out := make([]time.Duration, n)
	for i := range n {
		m.MsgID = first + uint64(i+1)
		start := time.Now()
		if err := p.send.send(m); err != nil {
			b.Fatal(err)
		}
		select {
		case <-p.replies:
		case <-time.After(waitTimeout):
			b.Fatalf("no answer to request %d", i)
		}
		out[i] = time.Since(start)
	}
	return out
}

// percentile returns the q-th quantile of ds (sorted in place).
func percentile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// rounds is how many times the benchmarks alternate between dmsgd and the
// ideal chain, so that both see the same machine (other load, frequency
// changes) and their ratio holds even when the absolute figures drift.
const rounds = 10

// BenchmarkCircuitThroughput pushes one-way messages through a circuit
// relayed by 1 and 3 routers, and through as many ideal relays, in
// alternating rounds. ns/op and MB/s are dmsgd's; x-ideal is dmsgd's rate
// over the ideal chain's (goals: >= 0.6 at 64 B, >= 0.8 from 4 KiB).
func BenchmarkCircuitThroughput(b *testing.B) {
	for _, hops := range []int{1, 3} {
		for _, size := range []int{64, 4 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("routers=%d/aux=%s", hops, sizeName(size)), func(b *testing.B) {
				dm := dmsgdPath(b, hops)
				id := idealPath(b, hops)
				for _, p := range []*path{dm, id} { // warm up both
					p.throughput(b, p.burst(b, 200, size), 200)
				}
				// Every round sends the same burst, encoded once, outside
				// the clock: the rounds together send b.N or a little more.
				n := (b.N + rounds - 1) / rounds
				dmBurst, idBurst := dm.burst(b, n, size), id.burst(b, n, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				var dmT, idT time.Duration
				for range rounds {
					b.StartTimer()
					dmT += dm.throughput(b, dmBurst, n)
					b.StopTimer()
					idT += id.throughput(b, idBurst, n)
				}
				rate := func(d time.Duration) float64 { return float64(n*rounds) / d.Seconds() }
				b.ReportMetric(rate(dmT), "msgs/s")
				b.ReportMetric(rate(idT), "ideal-msgs/s")
				b.ReportMetric(rate(idT)*float64(size)/1e6, "ideal-MB/s")
				b.ReportMetric(rate(dmT)/rate(idT), "x-ideal")
			})
		}
	}
}

// BenchmarkCircuitLatency runs request/response transactions inside a
// circuit through 1 and 3 routers, through as many ideal relays, and
// directly (no relay), one request on each path in turn. ns/op is the
// mean of the three round trips; x-ideal-p50/p99 compare whole round
// trips, hop-x-ideal-p50/p99 the latency each hop adds over the direct
// path (goal: <= 1.3).
func BenchmarkCircuitLatency(b *testing.B) {
	for _, hops := range []int{1, 3} {
		b.Run(fmt.Sprintf("routers=%d", hops), func(b *testing.B) {
			paths := []*path{dmsgdPath(b, hops), idealPath(b, hops), idealPath(b, 0)}
			times := make([][]time.Duration, len(paths))
			for i, p := range paths {
				p.latency(b, 200, 0)
				times[i] = make([]time.Duration, b.N)
			}
			b.ResetTimer()
			for i := range b.N {
				for k, p := range paths {
					times[k][i] = p.latency(b, 1, uint64(i))[0]
				}
			}
			b.StopTimer()
			q := func(k int, f float64) float64 { return float64(percentile(times[k], f).Nanoseconds()) }
			m50, m99 := q(0, 0.50), q(0, 0.99)
			i50, i99 := q(1, 0.50), q(1, 0.99)
			d50, d99 := q(2, 0.50), q(2, 0.99)
			b.ReportMetric(m50, "p50-ns")
			b.ReportMetric(m99, "p99-ns")
			b.ReportMetric(i50, "ideal-p50-ns")
			b.ReportMetric(i99, "ideal-p99-ns")
			b.ReportMetric(d50, "direct-p50-ns")
			b.ReportMetric(d99, "direct-p99-ns")
			b.ReportMetric(m50/i50, "x-ideal-p50")
			b.ReportMetric(m99/i99, "x-ideal-p99")
			b.ReportMetric((m50-d50)/(i50-d50), "hop-x-ideal-p50")
			b.ReportMetric((m99-d99)/(i99-d99), "hop-x-ideal-p99")
		})
	}
}

// ideal relays -------------------------------------------------------------

// idealRelay forwards frames between one accepted connection and the next
// hop, both ways, checking nothing.
type idealRelay struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func newIdealRelay(b *testing.B, next string) *idealRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	r := &idealRelay{ln: ln}
	r.wg.Go(func() {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", next)
		if err != nil {
			in.Close()
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, in, out)
		r.mu.Unlock()
		r.wg.Go(func() { relayFrames(out, in); out.Close() })
		r.wg.Go(func() { relayFrames(in, out); in.Close() })
	})
	b.Cleanup(r.close)
	return r
}

func (r *idealRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// relayFrames copies whole frames from src to dst: each frame's length is
// (cmd & 0xff) * 64 + align64(aux_bytes), read from its base header. It
// flushes only when no more input is buffered, as iocom's writer flushes
// only when its queue is empty.
func relayFrames(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	bw := bufio.NewWriterSize(dst, 64<<10)
	for {
		hdr, err := br.Peek(dmsg.BaseHeaderSize)
		if err != nil {
			return err
		}
		cmd := binary.LittleEndian.Uint32(hdr[0x20:])
		aux := binary.LittleEndian.Uint32(hdr[0x28:])
		n := int(cmd&0xff)*dmsg.Align + dmsg.AlignUp(int(aux))
		for n > 0 {
			if br.Buffered() == 0 {
				if _, err := br.Peek(1); err != nil {
					return err
				}
			}
			k := min(n, br.Buffered())
			chunk, _ := br.Peek(k)
			if _, err := bw.Write(chunk); err != nil {
				return err
			}
			br.Discard(k)
			n -= k
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

// idealPath joins a raw sender and receiver through hops ideal relays (0:
// directly).
func idealPath(b *testing.B, hops int) *path {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	next := ln.Addr().String()
	for range hops {
		next = newIdealRelay(b, next).ln.Addr().String()
	}
	p := newPathState()
	b.Cleanup(p.close)
	p.sendCirc, p.recvCirc = 100, 100
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, _ := ln.Accept()
		accepted <- nc
	}()
	if p.send, err = dialRaw(next, p.sendHook); err != nil {
		b.Fatal(err)
	}
	nc := <-accepted
	if nc == nil {
		b.Fatal("accept failed")
	}
	p.recv = startRaw(nc, p.recvHook)
	return p
}
