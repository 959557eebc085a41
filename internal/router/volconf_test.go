package router_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// mountConn is the LNK_CONN of a HAMMER2 mount of media.
func mountConn(media uuid.UUID) dmsg.Conn {
	return dmsg.Conn{MediaID: media, PeerType: dmsg.PeerHammer2, PeerMask: ^uint64(0), ProtoVersion: 1, FsLabel: "mount"}
}

// dialMount connects a raw peer to addr that opens a HAMMER2 mount's
// LNK_CONN (msgid 0x1000) for media and waits for the router's answer.
func dialMount(t *testing.T, p *rawPeer, media uuid.UUID) *rawPeer {
	t.Helper()
	p.send(connMsg(mountConn(media), false, 0x1000))
	p.Expect("the router's LNK_CONN", isConnCreate)
	return p
}

// volconfSlot sends, inside the peer's LNK_CONN, a LNK_VOLCONF setting
// slot index to path ("" clears it), and waits until the router handled
// it (barrier).
func volconfSlot(p *rawPeer, index uint32, path string) {
	p.tb.Helper()
	v := dmsg.VolConf{Index: index, Copy: dmsg.VolCopy{Flags: dmsg.VolCopyEnabled, Path: path}}
	if path != "" {
		v.Copy.CopyID = 1
	}
	m := dmsg.NewVolConfMsg(0, &v)
	m.MsgID = 0x1000
	p.send(m)
	p.Barrier()
}

// counter returns the value of the counter name{label=value}, 0 when it
// was never counted.
func counter(t *testing.T, r *testRouter, name, label, value string) float64 {
	t.Helper()
	mfs, err := r.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// volconfTargets returns the outbound targets the router keeps for peers'
// LNK_VOLCONF, from its dmsgd_target_dials_total series.
func volconfTargets(t *testing.T, r *testRouter) []string {
	t.Helper()
	mfs, err := r.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "dmsgd_target_dials_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var target, media string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "target":
					target = l.GetValue()
				case "media":
					media = l.GetValue()
				}
			}
			if strings.HasPrefix(media, "volconf:") {
				out = append(out, target)
			}
		}
	}
	return out
}

// LNK_VOLCONF makes the router connect where it says, so it is obeyed
// only from the links volconf.from admits. A refused one is counted and
// the router dials nothing: the test's own listener sees no connection
// and the router keeps no target for it. An admitted one dials the
// listener, which shows it would have seen the refused ones.
func TestAVolconfIsObeyedOnlyFromTheLinksVolconfFromAdmits(t *testing.T) {
	media := uuid.MustParse("11223344-5566-7788-99aa-bbccddeeff00")
	kr, kp := newNodeKey(t, "r"), newNodeKey(t, "mount")
	tests := []struct {
		name  string
		from  string
		tls   bool // the peer is a pinned TLS peer, not plain TCP on loopback
		obeys bool
	}{
		{"off refuses a loopback peer", config.PrivilegedOff, false, false},
		{"pinned refuses a plain loopback peer", config.PrivilegedPinned, false, false},
		{"loopback, the default, obeys a loopback peer", config.PrivilegedLoopback, false, true},
		{"pinned obeys a pinned TLS peer", config.PrivilegedPinned, true, true},
		{"all obeys a pinned TLS peer", config.PrivilegedAll, true, true},
		{"off refuses a pinned TLS peer", config.PrivilegedOff, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spy := newDialSpy(t)
			opts := []routerOption{func(c *config.Config) { c.VolConf.From = tc.from }}
			if tc.tls {
				opts = append(opts, withTLS(kr, map[string]nodeKey{"mount": kp}))
			}
			r := newRouter(t, "r", opts...)
			var p *rawPeer
			if tc.tls {
				p = dialRawTLS(t, listenAddr(r, "tls://"), kp)
			} else {
				p = dialRaw(t, r.tcpURL(), true)
			}
			dialMount(t, p, media)
			volconfSlot(p, 3, "span:"+spy.addr())
			if !tc.obeys {
				if got := volconfTargets(t, r); len(got) != 0 {
					t.Fatalf("a refused LNK_VOLCONF left targets %v", got)
				}
				if got := counter(t, r, "dmsgd_trust_refusals_total", "kind", "volconf"); got != 1 {
					t.Fatalf("dmsgd_trust_refusals_total{kind=volconf} = %v, want 1", got)
				}
				time.Sleep(100 * time.Millisecond) // no keeper exists; a margin for a dial that should not be
				if n := spy.dials.Load(); n != 0 {
					t.Fatalf("a refused LNK_VOLCONF made the router connect %d time(s)", n)
				}
				return
			}
			eventually(t, "the router dials the slot's target", func() error {
				if spy.dials.Load() == 0 {
					return fmt.Errorf("no connection yet; targets %v", volconfTargets(t, r))
				}
				return nil
			})
		})
	}
}

// What peers' LNK_VOLCONF make the router hold is budgeted: at most
// limits.max_volconf_targets slots over all links, a link holding no more
// than are still free, so one link cannot take them all. A refused slot
// is counted as that limit; a cleared slot makes room again.
func TestVolconfSlotsAreBudgetedPerLinkAndInTotal(t *testing.T) {
	r := newRouter(t, "r", func(c *config.Config) { c.Limits.MaxVolconfTargets = 4 })
	spies := make([]*dialSpy, 6)
	for i := range spies {
		spies[i] = newDialSpy(t)
	}
	a := dialMount(t, dialRaw(t, r.tcpURL(), true), uuid.New())
	for i := range 4 {
		volconfSlot(a, uint32(i), "span:"+spies[i].addr())
	}
	if got := volconfTargets(t, r); len(got) != 2 {
		t.Fatalf("one link alone holds %d of 4 slots (%v), want 2: no more than is still free", len(got), got)
	}
	b := dialMount(t, dialRaw(t, r.tcpURL(), true), uuid.New())
	volconfSlot(b, 0, "span:"+spies[4].addr())
	volconfSlot(b, 1, "span:"+spies[5].addr())
	if got := volconfTargets(t, r); len(got) != 3 {
		t.Fatalf("after a second link: %d slots held (%v), want 3", len(got), got)
	}
	if got := testnet.LimitHits(r.Metrics(), "max_volconf_targets"); got != 3 {
		t.Fatalf("dmsgd_limit_refusals_total{limit=max_volconf_targets} = %v, want 3", got)
	}
	volconfSlot(a, 0, "")
	volconfSlot(a, 1, "")
	volconfSlot(b, 1, "span:"+spies[5].addr())
	if got := volconfTargets(t, r); len(got) != 2 {
		t.Fatalf("after clearing two slots and setting one: %d held (%v), want 2", len(got), got)
	}
	b.Close()
	eventually(t, "the closed link's slots go", func() error {
		if got := volconfTargets(t, r); len(got) != 0 {
			return fmt.Errorf("targets %v", got)
		}
		return nil
	})
}

// A reload that makes volconf.from stop admitting a link drops what its
// LNK_VOLCONF asked for: the router stops keeping those targets.
func TestAReloadOfVolconfFromDropsTheTargetsOfLinksNoLongerAdmitted(t *testing.T) {
	spy := newDialSpy(t)
	r := newRouter(t, "r")
	p := dialMount(t, dialRaw(t, r.tcpURL(), true), uuid.New())
	volconfSlot(p, 0, "span:"+spy.addr())
	eventually(t, "the target dialled", func() error {
		if spy.dials.Load() == 0 {
			return fmt.Errorf("no dial")
		}
		return nil
	})
	newer := *r.Config()
	newer.VolConf.From = config.PrivilegedOff
	if _, err := r.Reload(&newer); err != nil {
		t.Fatal(err)
	}
	if got := volconfTargets(t, r); len(got) != 0 {
		t.Fatalf("targets after the reload: %v", got)
	}
	volconfSlot(p, 1, "span:"+spy.addr())
	if got := volconfTargets(t, r); len(got) != 0 {
		t.Fatalf("targets after a LNK_VOLCONF under volconf.from off: %v", got)
	}
}

// A peer repeating refused LNK_VOLCONFs writes a few lines, not one each;
// the metric counts every one.
func TestAFloodOfRefusedVolconfsWritesAFewLines(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, testLogger(t).Core()))
	tr := testnet.Start(t, "r", log, func(c *config.Config) { c.VolConf.From = config.PrivilegedOff })
	r := &testRouter{Router: tr, tb: t, label: "r", cfg: tr.Cfg, port: tr.Port, socket: tr.Socket}
	p := dialMount(t, dialRaw(t, r.tcpURL(), true), uuid.New())
	const n = 500
	for i := range n {
		v := dmsg.VolConf{Index: uint32(i % 256), Copy: dmsg.VolCopy{CopyID: 1, Path: fmt.Sprintf("span:127.0.0.1:%d", 1+i)}}
		m := dmsg.NewVolConfMsg(0, &v)
		m.MsgID = 0x1000
		p.send(m)
	}
	p.Barrier()
	if got := counter(t, r, "dmsgd_trust_refusals_total", "kind", "volconf"); got != n {
		t.Fatalf("dmsgd_trust_refusals_total{kind=volconf} = %v, want %d", got, n)
	}
	if lines := logs.FilterMessageSnippet("LNK_VOLCONF").Len(); lines > 2 {
		t.Errorf("%d refused LNK_VOLCONFs wrote %d lines", n, lines)
	}
}

// A slot whose target the router may not dial (plain TCP off loopback
// without tls.insecure_plain_tcp, span+tls: without a key pair) is
// ignored as it arrives: no target is kept, so nothing is redialled, no
// slot of the budget is taken, and the link stays up.
func TestAVolconfSlotTheTransportRuleRefusesIsIgnored(t *testing.T) {
	r := newRouter(t, "r")
	p := dialMount(t, dialRaw(t, r.tcpURL(), true), uuid.New())
	volconfSlot(p, 0, "span:192.0.2.7:987")
	volconfSlot(p, 1, "span+tls:127.0.0.1:987")
	if got := volconfTargets(t, r); len(got) != 0 {
		t.Fatalf("targets kept for refused slots: %v", got)
	}
	spy := newDialSpy(t)
	volconfSlot(p, 2, "span:"+spy.addr())
	eventually(t, "a loopback slot on the same link dialled", func() error {
		if spy.dials.Load() == 0 {
			return fmt.Errorf("no dial; targets %v", volconfTargets(t, r))
		}
		return nil
	})
	if got := volconfTargets(t, r); len(got) != 1 {
		t.Fatalf("targets %v, want the loopback one alone", got)
	}
}
