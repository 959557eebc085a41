package dmsgtest

import "github.com/dmsgd/dmsgd/internal/dmsg"

// The messages raw peers send most, built as docs/PROTOCOL.md sections 2,
// 3 and 7 lay them out. Each is a new message the caller may change.

// Ack answers the far end's transaction msgid and keeps it open:
// LNK_ERROR|CREATE|REPLY|REVTRANS (0xa80fff01).
func Ack(msgid uint64) *dmsg.Msg { return Answer(msgid, dmsg.FlagCreate, 0) }

// Refuse answers the far end's transaction msgid by ending it with code:
// LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS (0xe80fff01), as shells do.
func Refuse(msgid uint64, code uint32) *dmsg.Msg {
	return Answer(msgid, dmsg.FlagCreate|dmsg.FlagDelete, code)
}

// Answer replies inside the far end's transaction msgid: flags among
// CREATE and DELETE, with error code.
func Answer(msgid uint64, flags, code uint32) *dmsg.Msg {
	return &dmsg.Msg{Header: dmsg.Header{MsgID: msgid, Error: code,
		Cmd: dmsg.LnkError | flags | dmsg.FlagReply | dmsg.FlagRevTrans}}
}

// CloseTx ends, from our side, a transaction we opened with msgid.
func CloseTx(msgid uint64) *dmsg.Msg {
	return &dmsg.Msg{Header: dmsg.Header{MsgID: msgid, Cmd: dmsg.LnkError | dmsg.FlagDelete}}
}

// ShellLine is a DBG_SHELL command line; an empty one asks for the prompt.
func ShellLine(line string) *dmsg.Msg {
	m := dmsg.NewMsg(dmsg.DbgShell)
	if line != "" {
		m.SetAux(append([]byte(line), 0))
	}
	return m
}

// Ping is a LNK_PING asking for an answer.
func Ping() *dmsg.Msg { return &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing}} }

// Pong answers a LNK_PING.
func Pong() *dmsg.Msg { return &dmsg.Msg{Header: dmsg.Header{Cmd: dmsg.LnkPing | dmsg.FlagReply}} }
