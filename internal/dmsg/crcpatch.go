package dmsg

// A router relaying a frame changes a few bytes of its header: the salt
// (SealFrames), the circuit and the REVCIRC flag (SetFrameCircuit).
// CRC-32C is affine: for headers of one length, crc(a ^ b) = crc(a) ^
// crc(b) ^ crc(0), so the new hdr_crc is the old one XOR what the changed
// bytes contribute. For the 64-byte base header, the header of almost
// every relayed message, those contributions are tabled per byte
// position: a dozen lookups instead of a CRC over the whole header. Other
// headers are resealed with a full CRC.

// patchPos are the header offsets whose bytes a router changes.
var patchPos = [...]int{
	offSalt, offSalt + 1, offSalt + 2, offSalt + 3,
	offCircuit, offCircuit + 1, offCircuit + 2, offCircuit + 3,
	offCircuit + 4, offCircuit + 5, offCircuit + 6, offCircuit + 7,
	offCmd + 3, // the flags byte, REVCIRC among them
}

// Slots of patchTab.
const (
	patchSalt    = 0
	patchCircuit = 4
	patchFlags   = 12
)

// patchTab[i][v] is what byte patchPos[i] changing by XOR v changes in
// the CRC of a base header.
var patchTab [len(patchPos)][256]uint32

func init() {
	var h [BaseHeaderSize]byte
	zero := CRC(h[:])
	for i, pos := range patchPos {
		for v := range 256 {
			h[pos] = byte(v)
			patchTab[i][v] = CRC(h[:]) ^ zero
		}
		h[pos] = 0
	}
}

// patchCRC returns crc changed for the bytes of a base header from slot
// first on changing by XOR d (little-endian). Only bytes that change cost
// anything: a circuit id usually differs from the one it replaces in its
// low bytes only.
func patchCRC(crc uint32, first int, d uint64) uint32 {
	for i := first; d != 0; i++ {
		crc ^= patchTab[i][byte(d)]
		d >>= 8
	}
	return crc
}
