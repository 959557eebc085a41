package e2e

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/dmsgtest"
)

// upstream is the far end of a link the target keeps to a configured
// target (media in its config): a listener the test owns that speaks DMSG
// politely, can drop the link on demand, and notes each time the target
// connects. A configured outbound link belongs to the reserve floods
// cannot take: it must come back while the router's slots are full.
type upstream struct {
	l    net.Listener
	port int
	wg   sync.WaitGroup

	mu  sync.Mutex
	cur *dmsgtest.Peer
	ups []time.Time // when the target's LNK_CONN arrived, per link
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{l: l, port: l.Addr().(*net.TCPAddr).Port}
	u.wg.Go(u.acceptLoop)
	return u
}

func (u *upstream) acceptLoop() {
	for {
		nc, err := u.l.Accept()
		if err != nil {
			return
		}
		p := dmsgtest.NewPeer(nc)
		u.mu.Lock()
		if u.cur != nil {
			u.cur.Close() // one link at a time, as the target keeps one
		}
		u.cur = p
		u.mu.Unlock()
		u.wg.Go(func() { u.serve(p) })
	}
}

func (u *upstream) serve(p *dmsgtest.Peer) {
	defer p.Close()
	var pl politeness
	if p.Send(leafConn(1, "upstream", dmsg.PeerRouter, ^uint64(0))) != nil {
		return
	}
	p.Run(func(m *dmsg.Msg) {
		create, _ := pl.handle(p, m)
		if b := dmsg.Base(m.Cmd); create && (b == dmsg.LnkConn || b == dmsg.LnkConnV2) {
			u.mu.Lock()
			u.ups = append(u.ups, time.Now())
			u.mu.Unlock()
		}
	})
}

// drop closes the current link, as a network failure would.
func (u *upstream) drop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur != nil {
		u.cur.Close()
		u.cur = nil
	}
}

// upSince returns when the target first connected after t.
func (u *upstream) upSince(t time.Time) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, at := range u.ups {
		if at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (u *upstream) close() {
	u.l.Close()
	u.drop()
	u.wg.Wait()
}
