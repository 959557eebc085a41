package dmsgtest_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// oneWay builds a one-way DBG_SHELL carrying aux.
func oneWay(aux string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell)
	m.SetAux([]byte(aux))
	return m
}

// decoded is what a reader made of a stream: the aux data of every
// message, in order, and the error that ended it.
type decoded struct {
	auxes []string
	err   error
}

// decodeAll reads nc with a plain Decoder, which checks framing and the
// sequence, until it fails; it then drains nc so that the peer's writes
// never block on a net.Pipe nobody reads.
func decodeAll(nc net.Conn) <-chan decoded {
	out := make(chan decoded, 1)
	go func() {
		var d decoded
		dec := dmsg.NewDecoder(nc)
		for {
			m, err := dec.Decode()
			if err != nil {
				d.err = err
				break
			}
			d.auxes = append(d.auxes, dmsgtest.Text(m))
			m.Release()
		}
		io.Copy(io.Discard, nc)
		out <- d
	}()
	return out
}

// pipePeer returns a Peer on one end of a net.Pipe and the other end.
func pipePeer(t *testing.T) (*dmsgtest.Peer, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return dmsgtest.NewPeer(a), b
}

func TestEveryWayOfSendingKeepsTheSequence(t *testing.T) {
	flipHeaderCRC := func(b []byte) { b[0x3C] ^= 1 }
	cases := []struct {
		name      string
		send      func(p *dmsgtest.Peer) error // after "a" was sent
		wantAuxes []string
		wantErr   error // after wantAuxes; io.EOF: the stream ended cleanly
	}{
		{"Send numbers several messages in order", func(p *dmsgtest.Peer) error {
			return p.Send(oneWay("b"), oneWay("c"))
		}, []string{"a", "b", "c"}, io.EOF},
		{"Write and Flush number them like Send", func(p *dmsgtest.Peer) error {
			if err := p.Write(oneWay("b")); err != nil {
				return err
			}
			if err := p.Write(oneWay("c")); err != nil {
				return err
			}
			return p.Flush()
		}, []string{"a", "b", "c"}, io.EOF},
		{"a Frame written later with WriteRaw takes its place", func(p *dmsgtest.Peer) error {
			f, err := p.Frame(oneWay("b"))
			if err != nil {
				return err
			}
			if err := p.WriteRaw(f); err != nil {
				return err
			}
			return p.Send(oneWay("c"))
		}, []string{"a", "b", "c"}, io.EOF},
		{"WriteRaw flushes what was written before it", func(p *dmsgtest.Peer) error {
			if err := p.Write(oneWay("b")); err != nil {
				return err
			}
			f, err := p.Frame(oneWay("c"))
			if err != nil {
				return err
			}
			return p.WriteRaw(f)
		}, []string{"a", "b", "c"}, io.EOF},
		{"a Frame never written leaves a gap in the sequence", func(p *dmsgtest.Peer) error {
			if _, err := p.Frame(oneWay("lost")); err != nil {
				return err
			}
			return p.Send(oneWay("c"))
		}, []string{"a"}, dmsg.ErrSequence},
		{"SendMangled that changes nothing keeps the sequence", func(p *dmsgtest.Peer) error {
			if err := p.SendMangled(oneWay("b"), func([]byte) {}); err != nil {
				return err
			}
			return p.Send(oneWay("c"))
		}, []string{"a", "b", "c"}, io.EOF},
		{"SendMangled sends the damage it is told to", func(p *dmsgtest.Peer) error {
			return p.SendMangled(oneWay("b"), flipHeaderCRC)
		}, []string{"a"}, dmsg.ErrHeaderCRC},
		{"SendMangled flushes what was written before it", func(p *dmsgtest.Peer) error {
			if err := p.Write(oneWay("b")); err != nil {
				return err
			}
			return p.SendMangled(oneWay("c"), flipHeaderCRC)
		}, []string{"a", "b"}, dmsg.ErrHeaderCRC},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, far := pipePeer(t)
			got := decodeAll(far)
			if err := p.Send(oneWay("a")); err != nil {
				t.Fatal(err)
			}
			if err := tc.send(p); err != nil {
				t.Fatal(err)
			}
			p.Close()
			d := <-got
			if !slices.Equal(d.auxes, tc.wantAuxes) {
				t.Errorf("decoded %q, want %q", d.auxes, tc.wantAuxes)
			}
			if !errors.Is(d.err, tc.wantErr) {
				t.Errorf("the stream ended with %v, want %v", d.err, tc.wantErr)
			}
		})
	}
}

// pair returns two peers on the ends of a net.Pipe: local, whose Recorder
// a test looks at, and remote, which sends to it and answers its pings.
func pair(t *testing.T, opts dmsgtest.RecordOptions) (local *dmsgtest.Recorder, remote *dmsgtest.Peer) {
	t.Helper()
	a, b := net.Pipe()
	remote = dmsgtest.NewPeer(b)
	remote.Record(t, dmsgtest.RecordOptions{AutoPong: true})
	return dmsgtest.NewPeer(a).Record(t, opts), remote
}

// send sends one-way messages carrying auxes, failing t if it cannot.
func send(t *testing.T, p *dmsgtest.Peer, auxes ...string) {
	t.Helper()
	var msgs []*dmsg.Msg
	for _, a := range auxes {
		msgs = append(msgs, oneWay(a))
	}
	if err := p.Send(msgs...); err != nil {
		t.Fatal(err)
	}
}

func auxIs(aux string) func(*dmsg.Msg) bool {
	return func(m *dmsg.Msg) bool { return dmsgtest.Text(m) == aux }
}

// countTo matches the n-th message it is shown: Expect shows each message
// once, so it waits for n more.
func countTo(n int) func(*dmsg.Msg) bool {
	seen := 0
	return func(*dmsg.Msg) bool {
		seen++
		return seen >= n
	}
}

func texts(msgs ...*dmsg.Msg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, dmsgtest.Text(m))
	}
	return out
}

func TestARecorderIsWalkedByItsCursor(t *testing.T) {
	cases := []struct {
		name string
		sent []string
		walk func(r *dmsgtest.Recorder) []*dmsg.Msg
		want []string
	}{
		{"Next returns the messages in order", []string{"a", "b", "c"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			return []*dmsg.Msg{r.Next("a"), r.Next("b"), r.Next("c")}
		}, []string{"a", "b", "c"}},
		{"Expect skips to the first match and moves past it", []string{"a", "b", "c", "d"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			return []*dmsg.Msg{r.Expect("c", auxIs("c")), r.Next("d")}
		}, []string{"c", "d"}},
		{"Expect looks only after the cursor", []string{"a", "b", "a"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			first := r.Expect("a", auxIs("a"))
			return []*dmsg.Msg{first, r.Expect("the second a", auxIs("a"))}
		}, []string{"a", "a"}},
		{"Find looks at the whole record and leaves the cursor", []string{"a", "b", "c"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			return []*dmsg.Msg{r.Next("a"), r.Next("b"), r.Find("a", auxIs("a")), r.Next("c")}
		}, []string{"a", "b", "a", "c"}},
		{"Rewind goes back to the first message", []string{"a", "b"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			walked := []*dmsg.Msg{r.Next("a"), r.Next("b")}
			r.Rewind()
			return append(walked, r.Next("a again"))
		}, []string{"a", "b", "a"}},
		{"a match may call the Recorder", []string{"a", "b", "c"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			r.Find("c", auxIs("c"))
			return []*dmsg.Msg{r.Expect("any, once all three are in", func(*dmsg.Msg) bool { return r.Len() == 3 })}
		}, []string{"a"}},
		{"Barrier returns what arrived between the cursor and its answer", []string{"a", "b", "c"}, func(r *dmsgtest.Recorder) []*dmsg.Msg {
			return append([]*dmsg.Msg{r.Next("a")}, r.Barrier()...)
		}, []string{"a", "b", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, remote := pair(t, dmsgtest.RecordOptions{})
			send(t, remote, tc.sent...)
			if got := texts(tc.walk(rec)...); !slices.Equal(got, tc.want) {
				t.Fatalf("walked %q, want %q; transcript:\n%s", got, tc.want, rec.Transcript())
			}
			if n := rec.Len(); n < len(tc.sent) {
				t.Fatalf("Len() = %d, want at least the %d sent", n, len(tc.sent))
			}
		})
	}
}

func TestRecordOptionsSayWhatIsKeptAndAnswered(t *testing.T) {
	ping := func() *dmsg.Msg { return dmsg.NewMsg(dmsg.LnkPing) }
	cases := []struct {
		name       string
		opts       func(self *dmsgtest.Peer) dmsgtest.RecordOptions
		sent       []*dmsg.Msg
		wantKept   []string // CmdString and aux of what the record keeps
		wantAnswer []string // what the sender gets back
	}{
		{"without options every message is kept and none answered",
			func(*dmsgtest.Peer) dmsgtest.RecordOptions { return dmsgtest.RecordOptions{} },
			[]*dmsg.Msg{ping(), oneWay("a")},
			[]string{"LNK_PING ", "DBG_SHELL a"}, nil},
		{"AutoPong answers a ping and keeps it",
			func(*dmsgtest.Peer) dmsgtest.RecordOptions { return dmsgtest.RecordOptions{AutoPong: true} },
			[]*dmsg.Msg{ping(), oneWay("a")},
			[]string{"LNK_PING ", "DBG_SHELL a"}, []string{"LNK_PING|REPLY "}},
		{"OnMsg returning false leaves a message out",
			func(*dmsgtest.Peer) dmsgtest.RecordOptions {
				return dmsgtest.RecordOptions{OnMsg: func(m *dmsg.Msg) bool { return dmsgtest.Text(m) != "b" }}
			},
			[]*dmsg.Msg{oneWay("a"), oneWay("b"), oneWay("c")},
			[]string{"DBG_SHELL a", "DBG_SHELL c"}, nil},
		{"OnMsg may answer what it sees",
			func(self *dmsgtest.Peer) dmsgtest.RecordOptions {
				return dmsgtest.RecordOptions{OnMsg: func(m *dmsg.Msg) bool {
					if dmsgtest.Text(m) != "end" {
						self.Send(oneWay("re " + dmsgtest.Text(m)))
					}
					return true
				}}
			},
			[]*dmsg.Msg{oneWay("a")},
			[]string{"DBG_SHELL a"}, []string{"DBG_SHELL re a"}},
	}
	describe := func(msgs []*dmsg.Msg) []string {
		var out []string
		for _, m := range msgs {
			out = append(out, dmsg.CmdString(m.Cmd)+" "+dmsgtest.Text(m))
		}
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			sender := dmsgtest.NewPeer(b)
			answers := sender.Record(t, dmsgtest.RecordOptions{})
			self := dmsgtest.NewPeer(a) // the options' OnMsg answers through it
			rec := self.Record(t, tc.opts(self))
			if err := sender.Send(tc.sent...); err != nil {
				t.Fatal(err)
			}
			// A marker after the messages: once it is recorded, all of them
			// were handled and every answer to them was sent.
			if err := sender.Send(oneWay("end")); err != nil {
				t.Fatal(err)
			}
			rec.Expect("the end marker", auxIs("end"))
			kept := describe(rec.All())
			if got, want := kept[:len(kept)-1], tc.wantKept; !slices.Equal(got, want) {
				t.Errorf("kept %q, want %q", got, want)
			}
			// And one back after the answers: once it is in, so are they.
			if err := self.Send(oneWay("answers end")); err != nil {
				t.Fatal(err)
			}
			answers.Expect("the answers' end marker", auxIs("answers end"))
			answered := describe(answers.All())
			if got, want := answered[:len(answered)-1], tc.wantAnswer; !slices.Equal(got, want) {
				t.Errorf("answered %q, want %q", got, want)
			}
		})
	}
}

func TestARecorderSeesTheFarEndClose(t *testing.T) {
	rec, remote := pair(t, dmsgtest.RecordOptions{})
	changed := rec.Changed()
	send(t, remote, "a")
	select {
	case <-changed:
	case <-rec.Done():
		t.Fatal("the stream ended instead of a message arriving")
	}
	if err := rec.Err(); err != nil {
		t.Fatalf("Err() = %v while the stream goes on, want nil", err)
	}
	remote.Close()
	err := rec.WaitEnd()
	if !dmsgtest.ClosedByFarEnd(err) {
		t.Fatalf("WaitEnd() = %v, want the far end's close", err)
	}
	if rec.Err() != err {
		t.Fatalf("Err() = %v, want WaitEnd's %v", rec.Err(), err)
	}
	select {
	case <-rec.Done():
	default:
		t.Fatal("Done is open after WaitEnd")
	}
	if got := texts(rec.All()...); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("the record holds %q, want the message sent before the close", got)
	}
}

// fatalTB is a testing.TB whose Fatalf records the failure and ends the
// goroutine that called it, as testing.T does.
type fatalTB struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestWaitingPastTheEndOfTheStreamFailsWithTheTranscript(t *testing.T) {
	cases := []struct {
		name string
		wait func(r *dmsgtest.Recorder)
	}{
		{"Next", func(r *dmsgtest.Recorder) { r.Next("a second message") }},
		{"Expect", func(r *dmsgtest.Recorder) { r.Expect("b", auxIs("b")) }},
		{"Find", func(r *dmsgtest.Recorder) { r.Find("b", auxIs("b")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fatalTB{TB: t}
			a, b := net.Pipe()
			rec := dmsgtest.NewPeer(a).Record(tb, dmsgtest.RecordOptions{})
			remote := dmsgtest.NewPeer(b)
			send(t, remote, "a")
			rec.Next("a")
			remote.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.wait(rec)
			}()
			<-done
			tb.mu.Lock()
			defer tb.mu.Unlock()
			if !strings.Contains(tb.failed, "link ended") || !strings.Contains(tb.failed, `aux "a"`) {
				t.Fatalf("the wait failed with %q, want the end of the link and the transcript", tb.failed)
			}
		})
	}
}

func TestRunFlushesTheAnswersToWhatItRead(t *testing.T) {
	for _, burst := range []int{1, 100, 3000} { // 3000 answers overflow the write buffer
		t.Run(fmt.Sprintf("a burst of %d pings", burst), func(t *testing.T) {
			a, b := net.Pipe()
			local := dmsgtest.NewPeer(a)
			remote := dmsgtest.NewPeer(b)
			answers := remote.Record(t, dmsgtest.RecordOptions{})
			ended := make(chan error, 1)
			go func() {
				ended <- local.Run(func(m *dmsg.Msg) {
					if dmsgtest.IsPing(m) {
						local.Write(&dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}})
					}
				})
			}()
			pings := make([]*dmsg.Msg, burst)
			for i := range pings {
				pings[i] = dmsg.NewMsg(dmsg.LnkPing)
			}
			if err := remote.Send(pings...); err != nil {
				t.Fatal(err)
			}
			answers.Expect(fmt.Sprintf("%d answers", burst), countTo(burst))
			for i, m := range answers.All() {
				if m.Cmd != dmsg.LnkPing|dmsg.FlagReply {
					t.Fatalf("answer %d is %s, want LNK_PING|REPLY", i, dmsg.CmdString(m.Cmd))
				}
			}
			remote.Close()
			if err := <-ended; !dmsgtest.ClosedByFarEnd(err) {
				t.Fatalf("Run returned %v, want the far end's close", err)
			}
			local.Close()
		})
	}
}
