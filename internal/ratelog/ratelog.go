// Package ratelog owns how dmsgd logs events a peer can repeat at will:
// refusals, protocol violations, limits hit. The first event of a kind in
// a window is written at once, with the fields of that event (the link
// and peer it came from); later ones in the same window are only counted,
// and one summary line per kind and window reports how many there were.
// A flood therefore writes at most two lines per kind and window, however
// fast it comes, while an operator still sees the first offender of each
// kind and the size of the rest.
//
// Kinds must be constants of the calling code, never text a peer chose:
// every kind keeps a small record for the life of the Logger.
package ratelog

import (
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultWindow is the window of a Logger built with a zero window.
const DefaultWindow = 10 * time.Second

// Logger writes rate-limited lines to a zap logger. A nil *Logger drops
// everything; the zero value is not usable, call New.
type Logger struct {
	log    *zap.Logger
	window time.Duration

	mu     sync.Mutex
	kinds  map[string]*kind
	closed bool
}

// kind is the state of one kind of event.
type kind struct {
	level      zapcore.Level
	msg        string
	until      time.Time   // end of the current window: events before it are counted
	suppressed int         // counted since the last line
	last       []zap.Field // fields of the last counted event
	timer      *time.Timer // writes the summary at until
}

// New returns a Logger writing to log, one window per kind; window 0 is
// DefaultWindow.
func New(log *zap.Logger, window time.Duration) *Logger {
	if log == nil {
		log = zap.NewNop()
	}
	if window <= 0 {
		window = DefaultWindow
	}
	return &Logger{log: log, window: window, kinds: make(map[string]*kind)}
}

// Warn logs msg with fields at warn level, or counts it if a line of kind
// was written less than a window ago.
func (l *Logger) Warn(kind, msg string, fields ...zap.Field) {
	l.write(zapcore.WarnLevel, kind, msg, fields)
}

// Info is Warn at info level.
func (l *Logger) Info(kind, msg string, fields ...zap.Field) {
	l.write(zapcore.InfoLevel, kind, msg, fields)
}

func (l *Logger) write(level zapcore.Level, name, msg string, fields []zap.Field) {
	if l == nil || !l.log.Core().Enabled(level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	k := l.kinds[name]
	if k == nil {
		k = &kind{}
		l.kinds[name] = k
	}
	if now.Before(k.until) {
		k.suppressed++
		k.level, k.msg, k.last = level, msg, fields
		if k.timer == nil {
			k.timer = time.AfterFunc(k.until.Sub(now), func() { l.summarize(name) })
		}
		l.mu.Unlock()
		return
	}
	k.until = now.Add(l.window)
	l.mu.Unlock()
	if ce := l.log.Check(level, msg); ce != nil {
		ce.Write(fields...)
	}
}

// summarize writes the summary line of a kind whose window ended with
// events counted, and opens a new window, so that a flood that goes on is
// reported once per window.
func (l *Logger) summarize(name string) {
	l.mu.Lock()
	k := l.kinds[name]
	k.timer = nil
	n, level, msg, last := k.suppressed, k.level, k.msg, k.last
	k.suppressed, k.last = 0, nil
	if n > 0 && !l.closed {
		k.until = time.Now().Add(l.window)
	}
	l.mu.Unlock()
	if n == 0 {
		return
	}
	if ce := l.log.Check(level, msg+" (repeated)"); ce != nil {
		ce.Write(append(last, zap.Int("repeated", n), zap.Duration("within", l.window))...)
	}
}

// Close writes the summaries still pending and stops the timers. Events
// after Close are dropped.
func (l *Logger) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	var pending []string
	for name, k := range l.kinds {
		if k.timer != nil {
			k.timer.Stop()
			k.timer = nil
		}
		if k.suppressed > 0 {
			pending = append(pending, name)
		}
	}
	l.mu.Unlock()
	for _, name := range pending {
		l.summarize(name)
	}
}
