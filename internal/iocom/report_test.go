package iocom_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
	"github.com/dmsgd/dmsgd/internal/metrics"
	"github.com/dmsgd/dmsgd/internal/ratelog"
)

// Many links breaking the protocol write a bounded number of warnings
// (the shared event log counts the rest), and every link still gets its
// own "link down" line at info. Links closed for a violation are counted
// by the router that reaps them, not here: once.
func TestViolationsOfManyLinksAreCountedNotLoggedEach(t *testing.T) {
	guard(t)
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	events := ratelog.New(log, time.Minute)
	defer events.Close()
	m := metrics.New()
	const links = 20
	for i := range links {
		conn, p := newRawLink(t, iocom.Config{ID: "bad", Logger: log, Events: events, Metrics: m})
		if i%2 == 0 {
			// A DELETE for a transaction that does not exist.
			p.mustSend(msg(dmsg.LnkError|dmsg.FlagDelete, 7))
		} else {
			p.WriteRaw(make([]byte, dmsg.BaseHeaderSize)) // bad magic
		}
		waitDone(t, conn)
	}
	warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warns) > 2 {
		t.Errorf("%d warnings for %d bad links, want one per kind: %v", len(warns), links, warns)
	}
	if downs := logs.FilterMessage("link down").FilterLevelExact(zapcore.InfoLevel).Len(); downs != links {
		t.Errorf("%d \"link down\" info lines, want one per link (%d)", downs, links)
	}
	for _, kind := range []string{"transaction", "framing"} {
		if got := counter(t, m, "dmsgd_protocol_errors_total", "kind", kind); got != 0 {
			t.Errorf("iocom counted %v protocol errors of kind %s, which the router counts when it reaps the link", got, kind)
		}
	}
}
