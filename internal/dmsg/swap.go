package dmsg

import "math/bits"

// intField is one multi-byte integer of an extended header.
type intField struct {
	off, size int
}

// extInts lists the integer fields of each known extended header, so that a
// message from an opposite-endian sender can be brought to our byte order
// once, in the Decoder. UUIDs, labels and byte fields are never swapped
// (docs/PROTOCOL.md 1.2). Commands not listed carry no integers past the base
// header, or are opaque to dmsgd and are relayed as received.
var extInts = map[uint32][]intField{
	LnkConn: {
		{connPeerMask, 8}, {connProtoVer, 2}, {connStatus, 4},
		{connRnss, 4}, {connCaps, 4}, {connWindow, 4}, {connPfsMask, 8},
	},
	LnkConnV2: {
		{connPeerMask, 8}, {connProtoVer, 2}, {connStatus, 4}, {connRnss, 4},
	},
	LnkSpan: {
		{spanProtoVer, 2}, {spanStatus, 4}, {spanReserved, 8},
		{spanDist, 4}, {spanRnss, 4},
	},
	LnkCirc:   {{circReserved01, 8}, {circTarget, 8}},
	LnkCredit: {{creditIncrement, 8}},
	LnkVolConf: {
		{volCopy + copyFlags, 2}, {volIndex, 4}, {volUnused, 4},
	},
}

// swapExt byte-swaps, in place, the integer fields of an extended header of
// base command cmd.
func swapExt(cmd uint32, ext []byte) {
	for _, f := range extInts[cmd] {
		b := ext[f.off : f.off+f.size]
		switch f.size {
		case 2:
			le.PutUint16(b, bits.ReverseBytes16(le.Uint16(b)))
		case 4:
			le.PutUint32(b, bits.ReverseBytes32(le.Uint32(b)))
		case 8:
			le.PutUint64(b, bits.ReverseBytes64(le.Uint64(b)))
		}
	}
}
