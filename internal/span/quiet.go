package span

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// QuietPeer may be implemented by a Peer whose neighbor's comings and
// goings are routine, such as a debug shell client: the engine then logs
// them at debug instead of info, so a monitoring script polling the shell
// does not flood the log.
type QuietPeer interface {
	Peer
	Quiet() bool
}

// logConn logs a neighbor event of p at info, or at debug for a quiet
// peer.
func (e *Engine) logConn(p Peer, msg string, fields ...zap.Field) {
	lvl := zapcore.InfoLevel
	if q, ok := p.(QuietPeer); ok && q.Quiet() {
		lvl = zapcore.DebugLevel
	}
	if ce := e.log.Check(lvl, msg); ce != nil {
		ce.Write(fields...)
	}
}
