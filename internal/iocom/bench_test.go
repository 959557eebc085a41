package iocom_test

import (
	"bufio"
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// The one-way benchmarks move b.N DBG_SHELL messages from one Link to
// another, then move the same number of bytes in frames of the same size
// through a plain bufio.Writer and bufio.Reader over a fresh socket of the
// same kind. ns/op, MB/s and allocations are dmsgd's; the raw baseline is
// reported beside them (raw-MB/s) with the ratio dmsgd/raw (x-raw).

var benchSizes = []struct {
	name string
	n    int
}{
	{"0", 0}, {"512B", 512}, {"4KiB", 4 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20},
}

// benchCfg turns keepalive off so that pings do not add to the traffic.
func benchCfg(id string, h iocom.Handler) iocom.Config {
	return iocom.Config{ID: id, Handler: h, KeepaliveInterval: -1, KeepaliveTimeout: -1}
}

// countOneWay counts one-way messages and signals when want have come.
type countOneWay struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *countOneWay) Accept(*iocom.Tx, *dmsg.Msg) iocom.TxHandler { return nil }
func (c *countOneWay) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
}

func BenchmarkOneWay(b *testing.B) {
	for _, tr := range transports {
		for _, size := range benchSizes {
			b.Run(tr.name+"/aux="+size.name, func(b *testing.B) {
				guard(b)
				aux := auxPool[:size.n]
				frameSize := dmsg.BaseHeaderSize + dmsg.AlignUp(size.n)
				b.SetBytes(int64(frameSize))
				b.ReportAllocs()

				x, y := socketPair(b, tr)
				recv := &countOneWay{want: int64(b.N), done: make(chan struct{})}
				sender := startConn(b, x, benchCfg("sender", nil))
				receiver := startConn(b, y, benchCfg("receiver", recv))
				ctx := context.Background()

				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if err := sender.WaitRoom(ctx); err != nil {
						b.Fatal(err)
					}
					m := &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.DbgShell}}
					m.SetAux(aux)
					if err := sender.SendOneWay(m); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case <-recv.done:
				case <-receiver.Done():
					b.Fatalf("receiver went down: %v", receiver.Err())
				case <-time.After(time.Minute):
					b.Fatalf("receiver got %d of %d messages within a minute", recv.n.Load(), b.N)
				}
				dmsgd := time.Since(start)
				b.StopTimer()

				raw := rawOneWay(b, tr, aux, b.N)
				total := float64(frameSize) * float64(b.N)
				b.ReportMetric(total/raw.Seconds()/1e6, "raw-MB/s")
				b.ReportMetric(raw.Seconds()/dmsgd.Seconds(), "x-raw")
			})
		}
	}
}

// rawOneWay writes n frames of aux through a bufio.Writer over a new
// socket of tr and reads them with io.ReadFull from a bufio.Reader on the
// other end, and returns how long that took. The frames are pre-encoded;
// the reader checks nothing.
func rawOneWay(b *testing.B, tr transport, aux []byte, n int) time.Duration {
	var frames [][]byte
	for seq := 0; seq < 256 && len(frames)*(len(aux)+64) < 8<<20; seq++ {
		m := &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.DbgShell, Salt: uint32(seq)}}
		m.SetAux(aux)
		f, err := dmsg.AppendMsg(nil, m)
		if err != nil {
			b.Fatal(err)
		}
		frames = append(frames, f)
	}
	x, y := socketPair(b, tr)
	written := make(chan error, 1)
	start := time.Now()
	go func() {
		bw := bufio.NewWriterSize(x, 64<<10)
		for i := range n {
			if _, err := bw.Write(frames[i%len(frames)]); err != nil {
				written <- err
				return
			}
		}
		written <- bw.Flush()
	}()
	br := bufio.NewReaderSize(y, 64<<10)
	buf := make([]byte, len(frames[0]))
	for range n {
		if _, err := io.ReadFull(br, buf); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	if err := <-written; err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkTxRoundTrip opens a single-message transaction and waits for the
// peer's single reply, one at a time: ns/op is the round-trip latency. The
// raw baseline is a 64-byte frame echoed by a plain reader/writer loop
// (raw-ns/op); x-raw is again dmsgd's speed as a fraction of raw's
// (raw-ns/op divided by ns/op).
func BenchmarkTxRoundTrip(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			guard(b)
			b.ReportAllocs()
			x, y := socketPair(b, tr)
			client := startConn(b, x, benchCfg("client", nil))
			startConn(b, y, benchCfg("server", echoHandler{}))
			replies := make(chan *dmsg.Msg, 1)
			handler := func(tx *iocom.Tx, m *dmsg.Msg) { replies <- m }

			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := client.Open(dmsg.NewMsg(dmsg.DbgShell|dmsg.FlagCreate|dmsg.FlagDelete), handler); err != nil {
					b.Fatal(err)
				}
				select {
				case m := <-replies:
					if m.Cmd != refusal {
						b.Fatalf("reply %s", describe(m))
					}
				case <-client.Done():
					b.Fatalf("link went down: %v", client.Err())
				}
			}
			dmsgd := time.Since(start)
			b.StopTimer()

			raw := rawRoundTrip(b, tr, b.N)
			b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
			b.ReportMetric(raw.Seconds()/dmsgd.Seconds(), "x-raw")
		})
	}
}

// rawRoundTrip sends a 64-byte frame and waits for it to be echoed, n
// times, over a new socket of tr.
func rawRoundTrip(b *testing.B, tr transport, n int) time.Duration {
	x, y := socketPair(b, tr)
	echoed := make(chan error, 1)
	go func() {
		buf := make([]byte, dmsg.BaseHeaderSize)
		for range n {
			if _, err := io.ReadFull(y, buf); err != nil {
				echoed <- err
				return
			}
			if _, err := y.Write(buf); err != nil {
				echoed <- err
				return
			}
		}
		echoed <- nil
	}()
	frame := make([]byte, dmsg.BaseHeaderSize)
	buf := make([]byte, dmsg.BaseHeaderSize)
	start := time.Now()
	for range n {
		if _, err := x.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(x, buf); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	if err := <-echoed; err != nil {
		b.Fatal(err)
	}
	return elapsed
}
