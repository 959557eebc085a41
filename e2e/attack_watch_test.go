package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// watcher samples the target from outside while it is attacked: RSS and
// open descriptors from /proc, warning and error lines from its log, and
// how long its unix shell socket takes to answer `tree`.
type watcher struct {
	tg   *target
	sc   *scale
	stop chan struct{}
	wg   sync.WaitGroup

	capRSS   atomic.Int64  // RSS past which the attack is stopped; 0: none
	over     chan struct{} // closed when RSS passed capRSS
	overOnce sync.Once

	mu      sync.Mutex
	samples []procSample
	marks   []logMark
	msgs    map[string]int // warning and error lines by message
	trees   []treeRec
	logOff  int64
	partial []byte
	noisy   int // warning and error lines so far
}

// logMark is the number of warning and error lines logged up to at.
type logMark struct {
	at    time.Time
	noisy int
}

// treeRec is one `tree` on the shell socket: when it was asked, how long
// the whole answer took, and why it failed.
type treeRec struct {
	at   time.Time
	took time.Duration
	err  error
}

func watch(tg *target, sc *scale) *watcher {
	w := &watcher{tg: tg, sc: sc, stop: make(chan struct{}), over: make(chan struct{}), msgs: map[string]int{}}
	w.sample()
	w.wg.Add(2)
	go w.sampleLoop()
	go w.treeLoop()
	return w
}

func (w *watcher) close() {
	close(w.stop)
	w.wg.Wait()
	w.sample()
}

func (w *watcher) sampleLoop() {
	defer w.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
			w.sample()
		}
	}
}

func (w *watcher) sample() {
	s, err := readProc(w.tg.pid())
	w.readLog()
	if err != nil {
		return // the target is gone; the test sees that on its own
	}
	w.mu.Lock()
	w.samples = append(w.samples, s)
	w.mu.Unlock()
	if limit := w.capRSS.Load(); limit > 0 && s.rss > limit {
		w.overOnce.Do(func() { close(w.over) })
	}
}

// readLog counts the warning and error lines appended to the log since
// the last call. The log is zap's JSON, one object per line; a line that
// is not JSON (a Go runtime message) counts as noise too.
func (w *watcher) readLog() {
	f, err := os.Open(w.tg.log)
	if err != nil {
		return
	}
	defer f.Close()
	f.Seek(w.logOff, io.SeekStart)
	b, _ := io.ReadAll(f)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logOff += int64(len(b))
	b = append(w.partial, b...)
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		w.partial = b
		return
	}
	w.partial = append([]byte(nil), b[i+1:]...)
	for _, line := range bytes.Split(b[:i], []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &rec) != nil {
			w.noisy++
			w.msgs["(not JSON) "+string(line[:min(len(line), 60)])]++
			continue
		}
		if rec.Level == "warn" || rec.Level == "error" || rec.Level == "dpanic" || rec.Level == "fatal" {
			w.noisy++
			w.msgs[rec.Level+": "+rec.Msg]++
		}
	}
	w.marks = append(w.marks, logMark{at: time.Now(), noisy: w.noisy})
}

func (w *watcher) treeLoop() {
	defer w.wg.Done()
	for {
		at := time.Now()
		out, took, err := shellRun("unix", w.tg.shell, "tree", w.sc.liveness)
		if err == nil && !strings.Contains(out, "(target)") {
			// An answer that is not the tree (a refusal) is no answer.
			err = fmt.Errorf("`tree` without the router's own node: %.200q", out)
		}
		w.mu.Lock()
		w.trees = append(w.trees, treeRec{at: at, took: took, err: err})
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-time.After(w.sc.treeEvery):
		}
	}
}

// overCap reports whether RSS passed the cap.
func (w *watcher) overCap() bool {
	select {
	case <-w.over:
		return true
	default:
		return false
	}
}

// last returns the latest sample.
func (w *watcher) last() procSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples[len(w.samples)-1]
}

// peak returns the highest RSS and descriptor count in [from, to]. RSS
// is the highest sampled or, when the kernel's high-water mark (VmHWM)
// rose in the window, that mark: it catches a peak between two samples.
func (w *watcher) peak(from, to time.Time) (rss int64, fds int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var hwmBefore, hwmEnd int64
	for _, s := range w.samples {
		switch {
		case s.at.Before(from):
			hwmBefore = s.hwm
			continue
		case s.at.After(to):
			continue
		}
		rss, fds = max(rss, s.rss), max(fds, s.fds)
		hwmEnd = s.hwm
	}
	if hwmEnd > hwmBefore {
		rss = max(rss, hwmEnd)
	}
	return rss, fds
}

// noisyLines returns the warning and error lines logged in [from, to], as
// far as the log reads in between tell.
func (w *watcher) noisyLines(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	at := func(t time.Time) int {
		n := 0
		for _, m := range w.marks {
			if m.at.After(t) {
				break
			}
			n = m.noisy
		}
		return n
	}
	return at(to) - at(from)
}

// topMessages lists the most frequent warning and error messages.
func (w *watcher) topMessages(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type kv struct {
		msg   string
		count int
	}
	var all []kv
	for m, c := range w.msgs {
		all = append(all, kv{m, c})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.count != b.count {
			return b.count - a.count
		}
		return strings.Compare(a.msg, b.msg)
	})
	var b strings.Builder
	for i, e := range all {
		if i == n {
			break
		}
		fmt.Fprintf(&b, "\n\t%6d × %s", e.count, e.msg)
	}
	return b.String()
}

// treeStats sums up the shell's answers to `tree` asked in [from, to].
type treeStats struct {
	asked, failed int
	firstErr      error
	p50, worst    time.Duration
}

func (w *watcher) treeStats(from, to time.Time) treeStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	var st treeStats
	var took []time.Duration
	for _, r := range w.trees {
		if r.at.Before(from) || r.at.After(to) {
			continue
		}
		st.asked++
		if r.err != nil {
			st.failed++
			if st.firstErr == nil {
				st.firstErr = r.err
			}
			continue
		}
		took = append(took, r.took)
		st.worst = max(st.worst, r.took)
	}
	st.p50 = percentile(took, 50)
	return st
}

// errShellEnded reports a shell link the router closed before the answer.
var errShellEnded = errors.New("the router closed the shell link before the prompt")

// shellRun connects to a router's shell as `dmsgd tree` does (docs/PROTOCOL.md
// section 7: its own LNK_CONN, the router's refused, an empty DBG_SHELL for
// the prompt), runs line and returns its output and how long it took from
// connecting to the prompt after the output.
func shellRun(network, addr, line string, timeout time.Duration) (string, time.Duration, error) {
	start := time.Now()
	nc, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return "", 0, err
	}
	defer nc.Close()
	nc.SetDeadline(start.Add(timeout))
	p := dmsgtest.NewPeer(nc)
	pl := politeness{refuse: true}
	if err := p.Send(leafConn(1, "watcher", dmsg.PeerClient, 0)); err != nil {
		return "", 0, err
	}
	dec := dmsg.NewDecoder(nc)
	var out strings.Builder
	asked, prompts := false, 0
	for prompts < 2 {
		m, err := dec.Decode()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errShellEnded
			}
			return out.String(), time.Since(start), err
		}
		create, _ := pl.handle(p, m)
		base := dmsg.Base(m.Cmd)
		switch {
		case create && (base == dmsg.LnkConn || base == dmsg.LnkConnV2) && !asked:
			asked = true
			p.Write(dmsgtest.ShellLine(""))
		case base == dmsg.DbgShell && m.Cmd&dmsg.FlagReply != 0 && m.MsgID == 0:
			text := strings.TrimRight(string(m.Aux), "\x00")
			switch {
			case text == "debug> ":
				prompts++
				if prompts == 1 {
					p.Write(dmsgtest.ShellLine(line))
				}
			case prompts == 1:
				out.WriteString(text)
			}
		}
		m.Release()
		if dec.Buffered() == 0 {
			if err := p.Flush(); err != nil {
				return out.String(), time.Since(start), err
			}
		}
	}
	return out.String(), time.Since(start), nil
}
