package main

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dmsgd/dmsgd/internal/config"
)

// newLogger builds the one logger dmsgd passes down, writing to w
// (normally os.Stderr). The format is log.format when it was set (file,
// environment or --log-format); otherwise console when w is a terminal and
// JSON for everything else (journald, files, pipes). Sampling is off: an
// operator must never lose a topology line. The returned level changes
// the logger's level live, as a reload of log.level does.
func newLogger(cfg *config.Config, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := parseLogLevel(cfg.Log.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, err
	}
	atom := zap.NewAtomicLevelAt(level)
	terminal := isTerminal(w)
	format := cfg.Log.Format
	if !cfg.IsSet("log.format") && terminal {
		format = config.LogConsole
	}

	var enc zapcore.Encoder
	switch format {
	case config.LogConsole:
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		if terminal {
			ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(ec)
	case config.LogJSON:
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	default:
		return nil, zap.AtomicLevel{}, fmt.Errorf("log format %q: must be json or console", format)
	}

	sink := zapcore.Lock(zapcore.AddSync(w))
	core := zapcore.NewCore(enc, sink, atom)
	logger := zap.New(core,
		zap.ErrorOutput(sink),
		zap.AddCaller(),
		zap.AddStacktrace(zapcore.DPanicLevel),
	)
	return logger, atom, nil
}

// parseLogLevel parses a log.level value.
func parseLogLevel(s string) (zapcore.Level, error) {
	switch s {
	case config.LogDebug, config.LogInfo, config.LogWarn, config.LogError:
		l, err := zapcore.ParseLevel(s)
		if err != nil {
			return 0, fmt.Errorf("log level %q: %w", s, err)
		}
		return l, nil
	}
	return 0, fmt.Errorf("log level %q: must be debug, info, warn or error", s)
}

// isTerminal reports whether w is a character device other than the null
// device, which is how a terminal looks without a terminal library.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}
