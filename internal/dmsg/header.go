package dmsg

import (
	"encoding/binary"
	"fmt"
)

// Framing constants of docs/PROTOCOL.md section 1.
const (
	Magic        = 0x4832 // "H2", sender has our (little-endian) byte order
	MagicSwapped = 0x3248 // sender is opposite-endian

	Align          = 64      // headers and aux data are padded to this
	BaseHeaderSize = 64      // the base header, the smallest extended header
	MaxHeaderSize  = 2048    // size field 32
	MaxAuxSize     = 1 << 20 // aligned aux data limit
	MaxHeaderUnits = MaxHeaderSize / Align
)

// Flags of the cmd field (docs/PROTOCOL.md 1.3).
const (
	FlagCreate   uint32 = 0x80000000
	FlagDelete   uint32 = 0x40000000
	FlagReply    uint32 = 0x20000000
	FlagAbort    uint32 = 0x10000000
	FlagRevTrans uint32 = 0x08000000
	FlagRevCirc  uint32 = 0x04000000
	FlagFlag1    uint32 = 0x02000000
	FlagFlag0    uint32 = 0x01000000

	FlagsMask uint32 = 0xFF000000
	ProtoMask uint32 = 0x00F00000
	CmdMask   uint32 = 0x000FFF00
	SizeMask  uint32 = 0x000000FF
	BaseMask  uint32 = 0x00FFFFFF // protocol | command | size: the "base command"
)

// Protocols of the cmd field.
const (
	ProtoLNK uint32 = 0x00000000
	ProtoDBG uint32 = 0x00100000
	ProtoHM2 uint32 = 0x00200000
	ProtoBLK uint32 = 0x00500000
	ProtoVOP uint32 = 0x00600000
)

// Base commands (protocol | command | size) of docs/PROTOCOL.md section 2.
const (
	LnkPad      uint32 = 0x00000001
	LnkPing     uint32 = 0x00000101
	LnkAuth     uint32 = 0x00001002
	LnkConn     uint32 = 0x00001108 // dmsgd's 512-byte LNK_CONN
	LnkConnV2   uint32 = 0x00001106 // libdmsg 2014+ 384-byte LNK_CONN (section 10)
	LnkSpan     uint32 = 0x00001207
	LnkCirc     uint32 = 0x00001302
	LnkVolConf  uint32 = 0x00002008
	LnkError    uint32 = 0x000FFF01
	DbgShell    uint32 = 0x00100101
	lnkConnBase uint32 = 0x00001100 // LNK_CONN command number, any size
)

// ShellPrompt ends the output of every debug shell command (docs/PROTOCOL.md
// section 7): a shell client reads DBG_SHELL replies until one carries
// exactly this text.
const ShellPrompt = "debug> "

// Error codes (docs/PROTOCOL.md section 8). 0x00..0x1F are local link errors.
const (
	ErrNone     uint32 = 0x00
	ErrNoSupp   uint32 = 0x20
	ErrLostLink uint32 = 0x21
	ErrIO       uint32 = 0x22
	ErrParam    uint32 = 0x23
	ErrCantCirc uint32 = 0x24
)

// Header is the 64-byte base header with every field by name. Magic is not
// kept: decoded headers are always in host form and encoded ones are always
// little-endian.
type Header struct {
	Reserved02 uint16
	Salt       uint32 // low byte: message sequence; set by the Encoder
	MsgID      uint64
	Circuit    uint64
	Reserved18 uint64
	Cmd        uint32
	AuxCRC     uint32
	AuxBytes   uint32
	Error      uint32
	AuxDescr   uint64
	Reserved38 uint32
	HdrCRC     uint32 // set by the Encoder, checked by the Decoder
}

// Base header field offsets.
const (
	offMagic      = 0x00
	offReserved02 = 0x02
	offSalt       = 0x04
	offMsgID      = 0x08
	offCircuit    = 0x10
	offReserved18 = 0x18
	offCmd        = 0x20
	offAuxCRC     = 0x24
	offAuxBytes   = 0x28
	offError      = 0x2C
	offAuxDescr   = 0x30
	offReserved38 = 0x38
	offHdrCRC     = 0x3C
)

// put writes h into b[0:64] little-endian, with the magic.
func (h *Header) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint16(b[offMagic:], Magic)
	le.PutUint16(b[offReserved02:], h.Reserved02)
	le.PutUint32(b[offSalt:], h.Salt)
	le.PutUint64(b[offMsgID:], h.MsgID)
	le.PutUint64(b[offCircuit:], h.Circuit)
	le.PutUint64(b[offReserved18:], h.Reserved18)
	le.PutUint32(b[offCmd:], h.Cmd)
	le.PutUint32(b[offAuxCRC:], h.AuxCRC)
	le.PutUint32(b[offAuxBytes:], h.AuxBytes)
	le.PutUint32(b[offError:], h.Error)
	le.PutUint64(b[offAuxDescr:], h.AuxDescr)
	le.PutUint32(b[offReserved38:], h.Reserved38)
	le.PutUint32(b[offHdrCRC:], h.HdrCRC)
}

// get reads h from b[0:64], byte-swapping every field for an
// opposite-endian sender.
func (h *Header) get(b []byte, swapped bool) {
	if !swapped {
		h.getLE(b)
		return
	}
	h.Reserved02 = u16(b[offReserved02:], swapped)
	h.Salt = u32(b[offSalt:], swapped)
	h.MsgID = u64(b[offMsgID:], swapped)
	h.Circuit = u64(b[offCircuit:], swapped)
	h.Reserved18 = u64(b[offReserved18:], swapped)
	h.Cmd = u32(b[offCmd:], swapped)
	h.AuxCRC = u32(b[offAuxCRC:], swapped)
	h.AuxBytes = u32(b[offAuxBytes:], swapped)
	h.Error = u32(b[offError:], swapped)
	h.AuxDescr = u64(b[offAuxDescr:], swapped)
	h.Reserved38 = u32(b[offReserved38:], swapped)
	h.HdrCRC = u32(b[offHdrCRC:], swapped)
}

// getLE is get for a sender of our byte order, every message but the
// rare opposite-endian one: straight loads, no branch per field.
func (h *Header) getLE(b []byte) {
	b = b[:BaseHeaderSize]
	le := binary.LittleEndian
	h.Reserved02 = le.Uint16(b[offReserved02:])
	h.Salt = le.Uint32(b[offSalt:])
	h.MsgID = le.Uint64(b[offMsgID:])
	h.Circuit = le.Uint64(b[offCircuit:])
	h.Reserved18 = le.Uint64(b[offReserved18:])
	h.Cmd = le.Uint32(b[offCmd:])
	h.AuxCRC = le.Uint32(b[offAuxCRC:])
	h.AuxBytes = le.Uint32(b[offAuxBytes:])
	h.Error = le.Uint32(b[offError:])
	h.AuxDescr = le.Uint64(b[offAuxDescr:])
	h.Reserved38 = le.Uint32(b[offReserved38:])
	h.HdrCRC = le.Uint32(b[offHdrCRC:])
}

// u16, u32 and u64 read a header field, little-endian unless swapped.
// They are plain functions, not a binary.ByteOrder, so that they inline:
// every received message goes through them.
func u16(b []byte, swapped bool) uint16 {
	if swapped {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func u32(b []byte, swapped bool) uint32 {
	if swapped {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func u64(b []byte, swapped bool) uint64 {
	if swapped {
		return binary.BigEndian.Uint64(b)
	}
	return binary.LittleEndian.Uint64(b)
}

// Base returns the base command (protocol | command | size) of cmd.
func Base(cmd uint32) uint32 { return cmd & BaseMask }

// HeaderBytes returns the extended header size in bytes that cmd declares.
func HeaderBytes(cmd uint32) int { return int(cmd&SizeMask) * Align }

// AlignUp rounds n up to a multiple of 64.
func AlignUp(n int) int { return (n + Align - 1) &^ (Align - 1) }

// Has reports whether every bit of flags is set in cmd.
func Has(cmd, flags uint32) bool { return cmd&flags == flags }

var cmdNames = map[uint32]string{
	LnkPad:     "LNK_PAD",
	LnkPing:    "LNK_PING",
	LnkAuth:    "LNK_AUTH",
	LnkConn:    "LNK_CONN",
	LnkConnV2:  "LNK_CONN(v2)",
	LnkSpan:    "LNK_SPAN",
	LnkCirc:    "LNK_CIRC",
	LnkVolConf: "LNK_VOLCONF",
	LnkCredit:  "LNK_CREDIT",
	LnkError:   "LNK_ERROR",
	DbgShell:   "DBG_SHELL",
}

var flagNames = []struct {
	bit  uint32
	name string
}{
	{FlagCreate, "CREATE"}, {FlagDelete, "DELETE"}, {FlagReply, "REPLY"},
	{FlagAbort, "ABORT"}, {FlagRevTrans, "REVTRANS"}, {FlagRevCirc, "REVCIRC"},
	{FlagFlag1, "FLAG1"}, {FlagFlag0, "FLAG0"},
}

// CmdString renders cmd as NAME|FLAG|FLAG, for logs.
func CmdString(cmd uint32) string {
	s, ok := cmdNames[Base(cmd)]
	if !ok {
		s = fmt.Sprintf("cmd%#08x", Base(cmd))
	}
	for _, f := range flagNames {
		if cmd&f.bit != 0 {
			s += "|" + f.name
		}
	}
	return s
}

var errNames = map[uint32]string{
	ErrNoSupp: "NOSUPP", ErrLostLink: "LOSTLINK", ErrIO: "IO",
	ErrParam: "PARAM", ErrCantCirc: "CANTCIRC",
}

// ErrorString names a DMSG error code.
func ErrorString(code uint32) string {
	if code == 0 {
		return "OK"
	}
	if s, ok := errNames[code]; ok {
		return s
	}
	return fmt.Sprintf("error%#x", code)
}
