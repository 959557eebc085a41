package router

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Links from the shell socket are `dmsgd tree` and `dmsgd shell` calls: a
// monitoring script may make one a second. Their comings and goings (link
// up, peer connected, span conn up and down, link down, each command) are
// logged at debug so they do not flood the log; warnings and errors keep
// their level.

// quietLogger returns log with its info entries demoted to debug.
func quietLogger(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return quietCore{c} }))
}

// quietCore writes info entries as debug ones.
type quietCore struct{ zapcore.Core }

func demote(l zapcore.Level) zapcore.Level {
	if l == zapcore.InfoLevel {
		return zapcore.DebugLevel
	}
	return l
}

func (c quietCore) Enabled(l zapcore.Level) bool { return c.Core.Enabled(demote(l)) }

func (c quietCore) With(fields []zapcore.Field) zapcore.Core { return quietCore{c.Core.With(fields)} }

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	e.Level = demote(e.Level)
	return c.Core.Check(e, ce)
}

// Quiet tells the span engine to log this link's LNK_CONN coming and
// going at debug (span.QuietPeer): it is a shell client's.
func (l *link) Quiet() bool { return l.opts.shellSocket }
