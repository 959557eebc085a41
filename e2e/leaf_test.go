package e2e

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// leaf is a DMSG client written against the wire protocol alone: an
// encoder, a decoder and the few rules of PROTOCOL.md a leaf needs. It
// speaks to a router the way an independent implementation would.
type leaf struct {
	t   *testing.T
	nc  net.Conn
	wmu sync.Mutex
	bw  *bufio.Writer
	enc *dmsg.Encoder

	mu      sync.Mutex
	spans   map[string]uint64 // label -> msgid of the span the router holds open on us
	circIn  []uint64          // LNK_CIRCs the router opened on us
	circEnd map[uint64]uint32 // msgid of a LNK_CIRC -> error it ended with
	circUp  map[uint64]bool   // our LNK_CIRCs the far end accepted
	data    chan *dmsg.Msg    // circuit data received
	changed chan struct{}
	done    chan struct{}
	replies sync.WaitGroup // answers the reader sends without waiting for them
}

// dialLeaf connects a leaf to a router's listen port, introduces it with
// LNK_CONN and, if label is not empty, advertises a span called label.
func dialLeaf(t *testing.T, port int, label string) *leaf {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l := &leaf{t: t, nc: nc, bw: bufio.NewWriterSize(nc, 64<<10),
		spans: map[string]uint64{}, circEnd: map[uint64]uint32{}, circUp: map[uint64]bool{},
		data: make(chan *dmsg.Msg, 1024), changed: make(chan struct{}, 1), done: make(chan struct{})}
	l.enc = dmsg.NewEncoder(l.bw)
	go l.readLoop()
	t.Cleanup(l.close)

	id := config.NodeIDFor("leaf-" + label)
	c := dmsg.Conn{PeerMask: ^uint64(0), PfsMask: ^uint64(0), PeerType: dmsg.PeerHammer2, ProtoVersion: 1,
		FsLabel: label, PfsFsid: id}
	m := dmsg.NewConnMsg(dmsg.FlagCreate, &c, false)
	m.MsgID = 1
	l.send(m)
	if label != "" {
		s := dmsg.Span{PfsClid: config.NodeIDFor("leaves"), PfsFsid: id, PeerType: dmsg.PeerHammer2,
			ProtoVersion: 1, Rnss: 1, ClLabel: "leaves", FsLabel: label}
		m := dmsg.NewSpanMsg(dmsg.FlagCreate, &s)
		m.MsgID = 2
		l.send(m)
	}
	return l
}

func (l *leaf) close() {
	l.nc.Close()
	<-l.done
	l.replies.Wait()
}

// send writes and flushes messages.
func (l *leaf) send(msgs ...*dmsg.Msg) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, m := range msgs {
		if err := l.enc.Encode(m); err != nil {
			return err
		}
	}
	return l.bw.Flush()
}

func (l *leaf) readLoop() {
	defer close(l.done)
	dec := dmsg.NewDecoder(l.nc)
	for {
		m, err := dec.Decode()
		if err != nil {
			return
		}
		if m.Circuit != 0 {
			l.data <- m
			continue
		}
		l.note(m)
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
}

// note keeps the books on spans and circuits.
func (l *leaf) note(m *dmsg.Msg) {
	create, del := m.Cmd&dmsg.FlagCreate != 0, m.Cmd&dmsg.FlagDelete != 0
	reply := m.Cmd&dmsg.FlagReply != 0
	base := dmsg.Base(m.Cmd)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case base == dmsg.LnkSpan && !reply:
		if s, err := m.Span(); err == nil && create && !del {
			l.spans[s.FsLabel] = m.MsgID
		}
		if del {
			for k, v := range l.spans {
				if v == m.MsgID {
					delete(l.spans, k)
				}
			}
		}
	case base == dmsg.LnkCirc && create && !reply:
		l.circIn = append(l.circIn, m.MsgID)
		if del {
			l.circEnd[m.MsgID] = m.Error
		}
	case reply && create && !del && m.MsgID >= 100:
		l.circUp[m.MsgID] = true
	case reply && del && m.MsgID >= 100:
		// The far side ended a LNK_CIRC we opened: close ours too.
		if _, ended := l.circEnd[m.MsgID]; !ended {
			id := m.MsgID
			l.replies.Go(func() { l.send(&dmsg.Msg{Header: dmsg.Header{MsgID: id, Cmd: dmsg.LnkError | dmsg.FlagDelete}}) })
		}
		l.circEnd[m.MsgID] = m.Error
	}
	// A router closing a transaction of its own (DELETE, not REPLY) on a
	// LNK_CIRC it opened on us ends the circuit: answer the DELETE.
	if del && !reply && base != dmsg.LnkSpan {
		for _, id := range l.circIn {
			if id == m.MsgID {
				l.circEnd[id] = m.Error
				l.replies.Go(func() {
					l.send(&dmsg.Msg{Header: dmsg.Header{MsgID: id,
						Cmd: dmsg.LnkError | dmsg.FlagDelete | dmsg.FlagReply | dmsg.FlagRevTrans}})
				})
			}
		}
	}
}

// wait polls cond on every change the leaf sees, up to timeout.
func (l *leaf) wait(what string, timeout time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		ok := cond()
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-l.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			l.t.Fatalf("leaf: timed out after %v waiting for %s", timeout, what)
		}
	}
}
