package ratelog

import (
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newObserved(window time.Duration) (*Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return New(zap.New(core), window), logs
}

func TestAFloodOfOneKindWritesTheFirstLineAndOneSummary(t *testing.T) {
	l, logs := newObserved(time.Hour)
	for i := range 1000 {
		l.Warn("refused", "span refused", zap.Int("i", i))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines during the window, want 1", n)
	}
	l.Close()
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("%d lines after Close, want 2", len(all))
	}
	sum := all[1].ContextMap()
	if sum["repeated"] != int64(999) || sum["i"] != int64(999) {
		t.Fatalf("summary fields %v: want repeated=999 and the last event's fields", sum)
	}
	if all[1].Level != zapcore.WarnLevel {
		t.Fatalf("summary level %v", all[1].Level)
	}
}

func TestKindsAreCountedApart(t *testing.T) {
	l, logs := newObserved(time.Hour)
	defer l.Close()
	l.Warn("a", "first a")
	l.Warn("b", "first b")
	l.Info("a", "second a")
	if n := logs.Len(); n != 2 {
		t.Fatalf("%d lines, want one per kind", n)
	}
}

func TestTheSummaryIsWrittenWhenTheWindowEnds(t *testing.T) {
	l, logs := newObserved(20 * time.Millisecond)
	defer l.Close()
	l.Warn("k", "event")
	l.Warn("k", "event")
	l.Warn("k", "event")
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterField(zap.Int("repeated", 2)).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary line: %v", logs.All())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAQuietKindLogsEveryEventAgain(t *testing.T) {
	l, logs := newObserved(time.Millisecond)
	defer l.Close()
	l.Warn("k", "event")
	time.Sleep(5 * time.Millisecond)
	l.Warn("k", "event")
	if n := logs.FilterMessage("event").Len(); n != 2 {
		t.Fatalf("%d lines, want 2: events a window apart are both written", n)
	}
}

func TestEventsAfterCloseAndOnANilLoggerAreDropped(t *testing.T) {
	l, logs := newObserved(time.Hour)
	l.Close()
	l.Warn("k", "late")
	var nilLogger *Logger
	nilLogger.Warn("k", "nothing")
	nilLogger.Close()
	if logs.Len() != 0 {
		t.Fatalf("lines written: %v", logs.All())
	}
}
