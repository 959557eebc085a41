package circ_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks compare circuits relayed by dmsgd with an ideal relay
// chain measured in the same run, as users would run either: every relay
// and every endpoint is a process of its own, talking over loopback TCP.
// dmsgd is the built binary, one process per router, with per-circuit
// flow control in force; the ideal relay (internal/circ/circbench) passes
// frames on by their header's size fields and checks nothing, with the
// same batching as a dmsgd link (flush only when the input is drained).
// The endpoints are circbench too: the same sender and receiver for both,
// except that on dmsgd they keep to the circuit's windows. The figures
// worth comparing are the ratios; dmsgd and the ideal chain take turns in
// rounds so that both see the same machine.

// rounds is how many times the benchmarks alternate between dmsgd and the
// ideal chain.
const rounds = 10

// benchBins builds dmsgd and circbench once per benchmark function.
// DMSGD_BENCH_BINARY names another dmsgd binary to measure instead, to
// compare builds; DMSGD_BENCH_LEGACY set makes the endpoints on dmsgd
// peers without per-circuit flow control, to compare with it.
type benchBins struct{ dmsgd, circbench string }

func buildBins(b *testing.B) benchBins {
	b.Helper()
	dir := b.TempDir()
	bins := benchBins{dmsgd: filepath.Join(dir, "dmsgd"), circbench: filepath.Join(dir, "circbench")}
	build := map[string]string{"github.com/dmsgd/dmsgd/internal/circ/circbench": bins.circbench}
	if other := os.Getenv("DMSGD_BENCH_BINARY"); other != "" {
		bins.dmsgd = other
	} else {
		build["github.com/dmsgd/dmsgd/cmd/dmsgd"] = bins.dmsgd
	}
	for pkg, out := range build {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
		}
	}
	return bins
}

// proc is one running process of a benchmark, driven by lines on its
// standard input and answering with lines on its standard output.
type proc struct {
	b      *testing.B
	name   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	stderr bytes.Buffer
	exited chan struct{}
}

// procTimeout bounds every wait for a benchmark process.
const procTimeout = 2 * time.Minute

func startProc(b *testing.B, name, bin string, args ...string) *proc {
	b.Helper()
	p := &proc{b: b, name: name, cmd: exec.Command(bin, args...), lines: make(chan string, 16), exited: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	b.Cleanup(p.stop)
	return p
}

// stop closes the process's input, which ends it, or kills it.
func (p *proc) stop() {
	p.in.Close()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// line returns the next line the process prints.
func (p *proc) line() string {
	p.b.Helper()
	select {
	case l, ok := <-p.lines:
		if ok {
			return l
		}
	case <-time.After(procTimeout):
		p.b.Fatalf("%s: no answer within %v", p.name, procTimeout)
	}
	p.b.Fatalf("%s exited: %s", p.name, p.stderr.String())
	return ""
}

// expect reads the next line and checks it starts with want.
func (p *proc) expect(want string) string {
	p.b.Helper()
	l := p.line()
	if !strings.HasPrefix(l, want) {
		p.b.Fatalf("%s: got %q, want %q; stderr:\n%s", p.name, l, want, p.stderr.String())
	}
	return strings.TrimSpace(strings.TrimPrefix(l, want))
}

// tell writes a command line.
func (p *proc) tell(format string, args ...any) {
	p.b.Helper()
	if _, err := fmt.Fprintf(p.in, format+"\n", args...); err != nil {
		p.b.Fatalf("%s: %v", p.name, err)
	}
}

// path is a sender and a receiver joined through relays.
type path struct {
	name       string
	send, recv *proc
	relays     []*proc // the dmsgd routers or the ideal relays
}

// relayCPU returns the CPU time the path's relays have used so far, or 0
// where /proc does not tell.
func (p *path) relayCPU() time.Duration {
	var total time.Duration
	for _, r := range p.relays {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
		if err != nil {
			return 0
		}
		// Fields after the command's closing parenthesis; utime and stime
		// are the 14th and 15th of the line, in clock ticks (100 a second
		// on Linux).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return 0
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+s) * 10 * time.Millisecond
	}
	return total
}

func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dmsgdPath starts hops dmsgd routers in a line, each dialling the one
// before it, a receiver advertising a span on the last and a sender on
// the first, which opens a circuit to it.
func dmsgdPath(b *testing.B, bins benchBins, hops int) *path {
	b.Helper()
	dir := b.TempDir()
	addrs := make([]string, hops)
	var routers []*proc
	for i := range hops {
		addrs[i] = freeAddr(b)
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "listen:\n  - tcp://%s\n", addrs[i])
		fmt.Fprintf(&cfg, "shell:\n  socket: %s\n", filepath.Join(dir, fmt.Sprintf("r%d.sock", i+1)))
		fmt.Fprintf(&cfg, "node:\n  label: r%d\n", i+1)
		cfg.WriteString("keepalive:\n  interval: 1s\n  timeout: 0s\n")
		cfg.WriteString("log:\n  level: warn\n  format: json\n")
		if i > 0 {
			fmt.Fprintf(&cfg, "media:\n  - name: line\n    copies:\n      - copyid: 1\n        path: span:%s\n", addrs[i-1])
		}
		file := filepath.Join(dir, fmt.Sprintf("r%d.yaml", i+1))
		if err := os.WriteFile(file, []byte(cfg.String()), 0o600); err != nil {
			b.Fatal(err)
		}
		r := startProc(b, fmt.Sprintf("dmsgd r%d", i+1), bins.dmsgd, "serve", "--config", file)
		waitListening(b, addrs[i], r)
		routers = append(routers, r)
	}
	p := &path{name: fmt.Sprintf("dmsgd x%d", hops), relays: routers}
	legacy := fmt.Sprint("-legacy=", os.Getenv("DMSGD_BENCH_LEGACY") != "")
	p.recv = startProc(b, "receiver on dmsgd", bins.circbench, "recv", "-router", addrs[hops-1], "-label", "bench-recv", legacy)
	p.send = startProc(b, "sender on dmsgd", bins.circbench, "send", "-router", addrs[0], "-target", "bench-recv", legacy)
	p.send.expect("ready")
	p.recv.expect("ready")
	return p
}

// waitListening waits until a router accepts connections.
func waitListening(b *testing.B, addr string, r *proc) {
	b.Helper()
	deadline := time.Now().Add(procTimeout)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-r.exited:
			b.Fatalf("%s exited: %s", r.name, r.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not listen on %s", r.name, addr)
		}
	}
}

// idealPath joins a sender and a receiver through hops ideal relays (0:
// directly).
func idealPath(b *testing.B, bins benchBins, hops int) *path {
	b.Helper()
	p := &path{name: fmt.Sprintf("ideal x%d", hops)}
	p.recv = startProc(b, "ideal receiver", bins.circbench, "recv", "-listen", "127.0.0.1:0")
	next := p.recv.expect("ready")
	for i := range hops {
		r := startProc(b, fmt.Sprintf("ideal relay %d", hops-i), bins.circbench, "relay", "-listen", "127.0.0.1:0", "-next", next)
		next = r.expect("ready")
		p.relays = append(p.relays, r)
	}
	p.send = startProc(b, "ideal sender", bins.circbench, "send", "-connect", next)
	p.send.expect("ready")
	return p
}

// prep readies the sender's bursts of size bytes of aux data.
func (p *path) prep(size int) {
	p.send.tell("prep %d", size)
	p.send.expect("prepped")
}

// throughput sends n messages and returns the time until the receiver had
// them all.
func (p *path) throughput(n int) time.Duration {
	p.recv.tell("expect %d", n)
	p.recv.expect("armed")
	start := time.Now()
	p.send.tell("burst %d", n)
	p.recv.expect("got")
	d := time.Since(start)
	p.send.expect("sent")
	return d
}

// latency runs n requests one after the other and returns each round
// trip.
func (p *path) latency(n int) []time.Duration {
	p.send.tell("lat %d", n)
	f := strings.Fields(p.send.expect("lat"))
	out := make([]time.Duration, len(f))
	for i, s := range f {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			p.send.b.Fatalf("%s: bad latency %q", p.name, s)
		}
		out[i] = time.Duration(ns)
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

// BenchmarkCircuitThroughput pushes one-way messages through a circuit
// relayed by 1 and 3 dmsgd processes, and through as many ideal relays, in
// alternating rounds. ns/op and MB/s are dmsgd's; x-ideal is dmsgd's rate
// over the ideal chain's over all rounds, x-ideal-min and -max the range
// of the rounds (goals through one router: >= 0.6 at 64 B, >= 0.8 from
// 4 KiB).
func BenchmarkCircuitThroughput(b *testing.B) {
	bins := buildBins(b)
	for _, hops := range []int{1, 3} {
		for _, size := range []int{64, 4 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("routers=%d/aux=%s", hops, sizeName(size)), func(b *testing.B) {
				dm, id := dmsgdPath(b, bins, hops), idealPath(b, bins, hops)
				for _, p := range []*path{dm, id} {
					p.prep(size)
					p.throughput(2000) // warm up
				}
				n := (b.N + rounds - 1) / rounds
				b.SetBytes(int64(size))
				b.ResetTimer()
				var dmT, idT, dmCPU, idCPU time.Duration
				lo, hi := 1e9, 0.0
				for range rounds {
					c0 := dm.relayCPU()
					b.StartTimer()
					d := dm.throughput(n)
					b.StopTimer()
					c1 := dm.relayCPU()
					i0 := id.relayCPU()
					i := id.throughput(n)
					dmCPU, idCPU = dmCPU+c1-c0, idCPU+id.relayCPU()-i0
					dmT, idT = dmT+d, idT+i
					r := i.Seconds() / d.Seconds()
					lo, hi = min(lo, r), max(hi, r)
				}
				rate := func(d time.Duration) float64 { return float64(n*rounds) / d.Seconds() }
				b.ReportMetric(rate(dmT), "msgs/s")
				b.ReportMetric(rate(idT), "ideal-msgs/s")
				b.ReportMetric(rate(dmT)/rate(idT), "x-ideal")
				b.ReportMetric(lo, "x-ideal-min")
				b.ReportMetric(hi, "x-ideal-max")
				// CPU per message of the relays, in all their threads: a
				// figure that holds when other load makes rates drift.
				perMsg := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n*rounds) }
				b.ReportMetric(perMsg(dmCPU), "cpu-ns/msg")
				b.ReportMetric(perMsg(idCPU), "ideal-cpu-ns/msg")
			})
		}
	}
}

// BenchmarkCircuitLatency runs request/reply transactions inside a
// circuit through 1 and 3 dmsgd processes, through as many ideal relays,
// and directly (no relay), each path in turn for a round of requests.
// x-ideal-p50/p99 compare whole round trips, hop-x-ideal-p50/p99 the
// latency each hop adds over the direct path (goal: <= 1.3 at p50).
func BenchmarkCircuitLatency(b *testing.B) {
	bins := buildBins(b)
	for _, hops := range []int{1, 3} {
		b.Run(fmt.Sprintf("routers=%d", hops), func(b *testing.B) {
			paths := []*path{dmsgdPath(b, bins, hops), idealPath(b, bins, hops), idealPath(b, bins, 0)}
			for _, p := range paths {
				p.latency(200) // warm up
			}
			per := (b.N + rounds - 1) / rounds
			times := make([][]time.Duration, len(paths))
			b.ResetTimer()
			for range rounds {
				for k, p := range paths {
					times[k] = append(times[k], p.latency(per)...)
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
