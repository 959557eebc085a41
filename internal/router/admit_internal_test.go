package router

import (
	"net"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
)

// testLimits are small admission limits for the admitter's tests.
func testLimits() *config.Limits {
	return &config.Limits{MaxLinks: 4, MaxPendingLinks: 3, MaxLinksPerSource: 2, MaxShellLinks: 1,
		AcceptRatePerSource: 2, HandshakeTimeout: time.Second}
}

func TestTheAdmitterCountsEachClassAgainstItsOwnLimits(t *testing.T) {
	lim := testLimits()
	var ad admitter
	now := time.Now()
	admit := func(class linkClass, src string) (*admission, string) {
		a, displaced, why := ad.admit(lim, class, src, now)
		if why != nil {
			return nil, why.limit
		}
		if displaced != nil {
			t.Fatalf("a link of %s displaced a pending one", src)
		}
		return a, ""
	}
	a1, _ := admit(classNetwork, "10.0.0.1")
	a2, _ := admit(classNetwork, "10.0.0.1")
	if _, why := admit(classNetwork, "10.0.0.1"); why != "max_links_per_source" {
		t.Fatalf("third link of one source: refused by %q, want max_links_per_source", why)
	}
	admit(classNetwork, "10.0.0.2")
	ad.connected(a1) // the pending pool (pending_internal_test.go) has room again
	admit(classNetwork, "10.0.0.3")
	// 10.0.0.3 holds as many pending links as any source: it may not take
	// one's slot (pending_internal_test.go).
	if _, why := admit(classNetwork, "10.0.0.3"); why != "max_links" {
		t.Fatalf("fifth link: refused by %q, want max_links", why)
	}
	// The reserve: the shell socket has its own limit, configured targets
	// none, whatever the network links hold.
	sh, why := admit(classShell, "")
	if why != "" {
		t.Fatalf("shell link refused by %q with the network links full", why)
	}
	if _, why := admit(classShell, ""); why != "max_shell_links" {
		t.Fatalf("second shell link: refused by %q, want max_shell_links", why)
	}
	for range 10 {
		if _, why := admit(classReserved, ""); why != "" {
			t.Fatalf("a configured target refused by %q", why)
		}
	}
	ad.release(sh)
	ad.release(sh) // twice: nothing more
	if _, why := admit(classShell, ""); why != "" {
		t.Fatalf("shell link refused by %q after one was released", why)
	}
	ad.release(a1)
	ad.connected(a2) // a pending slot is free again too
	if _, why := admit(classNetwork, "10.0.0.1"); why != "" {
		t.Fatalf("a link of 10.0.0.1 refused by %q after one of its links went", why)
	}
}

// A source opens links at its accept rate once its burst is spent: the
// next one waits for its turn, and one whose turn is further away than
// the handshake timeout is refused.
func TestASourceOpensLinksAtItsAcceptRate(t *testing.T) {
	lim := testLimits()
	lim.MaxPendingLinks, lim.MaxLinks = 100, 100
	var ad admitter
	now := time.Now()
	turn := func() (time.Duration, string) {
		a, _, why := ad.admit(lim, classNetwork, "10.0.0.1", now)
		if why != nil {
			t.Fatalf("admit: refused by %s", why.limit)
		}
		defer ad.release(a) // only the rate matters here
		wait, why := ad.turn(a, lim, lim.HandshakeTimeout, now)
		if why != nil {
			return 0, why.limit
		}
		return wait, ""
	}
	for i := range 2 { // the burst: max_links_per_source
		if wait, _ := turn(); wait != 0 {
			t.Fatalf("link %d of the burst waits %v", i, wait)
		}
	}
	if wait, _ := turn(); wait != 500*time.Millisecond {
		t.Fatalf("the link after the burst waits %v, want 500ms at 2 a second", wait)
	}
	if wait, _ := turn(); wait != time.Second {
		t.Fatalf("the next waits %v, want 1s", wait)
	}
	if _, why := turn(); why != "accept_rate_per_source" {
		t.Fatalf("a turn 1.5s away with a 1s handshake timeout: refused by %q, want accept_rate_per_source", why)
	}
	now = now.Add(10 * time.Second)
	if wait, _ := turn(); wait != 0 {
		t.Fatalf("after a quiet while a link waits %v", wait)
	}
}

func TestSourcesAreAddressesAndIPv6Prefixes(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "@", Net: "unix"}, ""},
	} {
		if got := sourceOf(fakeConn{remote: tc.addr}); got != tc.want {
			t.Errorf("source of %v = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// fakeConn is a net.Conn that only has a remote address.
type fakeConn struct {
	net.Conn
	remote net.Addr
}

func (c fakeConn) RemoteAddr() net.Addr { return c.remote }
