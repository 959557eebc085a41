package dmsg

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

var le = binary.LittleEndian

// Extended header sizes in bytes.
const (
	ConnSize    = 512
	ConnV2Size  = 384
	SpanSize    = 448
	CircSize    = 128
	VolConfSize = 512
)

// Peer types (docs/PROTOCOL.md 2.5).
const (
	PeerNone    uint8 = 0
	PeerRouter  uint8 = 1
	PeerBlock   uint8 = 2
	PeerHammer2 uint8 = 3
	PeerClient  uint8 = 63
	MaxPeerType       = 63
)

// Conn is the body of a LNK_CONN. Both wire forms decode into it: the
// 512-byte dmsgd form (LnkConn) and the 384-byte libdmsg 2014+ form
// (LnkConnV2), whose peer_id/peer_label map to PfsFsid/FsLabel and which has
// no pfs_mask and no cluster filters.
type Conn struct {
	MediaID      uuid.UUID
	PfsClid      uuid.UUID // cluster filter (nil = any)
	PfsFsid      uuid.UUID // the sender's own node id
	PeerMask     uint64    // bit N: send me spans of peer_type N
	PeerType     uint8
	PfsType      uint8
	ProtoVersion uint16
	Status       uint32
	Rnss         uint32
	PfsMask      uint64 // bit N: send me spans of pfs_type N; 0 = all
	ClLabel      string // cluster label filter (empty = any)
	FsLabel      string // the sender's node label

	// Caps are the dmsgd extensions the sender speaks (Cap*), carried in
	// reserved bytes of the dmsgd form only (docs/PROTOCOL.md 11.1): an
	// extension is used on a link only when both LNK_CONNs name it, so
	// peers that leave the bytes zero never see one.
	Caps uint32
	// CircWindow is the window the sender grants its peer on every
	// circuit of the link when both name CapCircWindow
	// (docs/PROTOCOL.md 11.2).
	CircWindow uint32
}

// Capability bits of Conn.Caps (docs/PROTOCOL.md 11.1).
const (
	// CapCircWindow: per-circuit flow control (LNK_CREDIT).
	CapCircWindow uint32 = 1 << 0
	// CapSignedSpans: signed router advertisements.
	CapSignedSpans uint32 = 1 << 1
)

// Shared reports whether both LNK_CONNs of a link name capability cap.
func (c *Conn) Shared(peer *Conn, cap uint32) bool {
	return c.Caps&cap != 0 && peer.Caps&cap != 0
}

// LNK_CONN field offsets (message offsets, base header included).
const (
	connMediaID   = 0x40
	connPfsClid   = 0x50
	connPfsFsid   = 0x60
	connPeerMask  = 0x70
	connPeerType  = 0x78
	connPfsType   = 0x79
	connProtoVer  = 0x7A
	connStatus    = 0x7C
	connRnss      = 0x80
	connCaps      = 0x84 // dmsgd extension: in the reserved bytes
	connWindow    = 0x88 // dmsgd extension: in the reserved bytes
	connPfsMask   = 0xC0
	connClLabel   = 0xC8
	connFsLabel   = 0x148
	connV2PeerID  = 0x50
	connV2Label   = 0xC4
	connV2Reserve = 0x60
)

// MarshalTo writes c as a dmsgd (0x1108) LNK_CONN body into hdr, a full
// 512-byte extended header whose first 64 bytes are left alone.
func (c *Conn) MarshalTo(hdr []byte) {
	b := hdr[:ConnSize]
	clear(b[BaseHeaderSize:])
	putUUID(b[connMediaID:], c.MediaID)
	putUUID(b[connPfsClid:], c.PfsClid)
	putUUID(b[connPfsFsid:], c.PfsFsid)
	le.PutUint64(b[connPeerMask:], c.PeerMask)
	b[connPeerType] = c.PeerType
	b[connPfsType] = c.PfsType
	le.PutUint16(b[connProtoVer:], c.ProtoVersion)
	le.PutUint32(b[connStatus:], c.Status)
	le.PutUint32(b[connRnss:], c.Rnss)
	le.PutUint32(b[connCaps:], c.Caps)
	le.PutUint32(b[connWindow:], c.CircWindow)
	le.PutUint64(b[connPfsMask:], c.PfsMask)
	putLabel(b[connClLabel:connClLabel+LabelSize], c.ClLabel)
	putLabel(b[connFsLabel:connFsLabel+LabelSize], c.FsLabel)
}

// MarshalV2To writes c in the 384-byte libdmsg 2014+ form (0x1106). Fields
// that form lacks (pfs_clid, pfs_type, pfs_mask, cl_label) are not sent,
// nor are the dmsgd extensions: a libdmsg peer never sees one.
func (c *Conn) MarshalV2To(hdr []byte) {
	b := hdr[:ConnV2Size]
	clear(b[BaseHeaderSize:])
	putUUID(b[connMediaID:], c.MediaID)
	putUUID(b[connV2PeerID:], c.PfsFsid)
	le.PutUint64(b[connPeerMask:], c.PeerMask)
	b[connPeerType] = c.PeerType
	le.PutUint16(b[connProtoVer:], c.ProtoVersion)
	le.PutUint32(b[connStatus:], c.Status)
	le.PutUint32(b[connRnss:], c.Rnss)
	putLabel(b[connV2Label:connV2Label+LabelSize], c.FsLabel)
}

func (c *Conn) unmarshal(b []byte) {
	c.MediaID = getUUID(b[connMediaID:])
	c.PfsClid = getUUID(b[connPfsClid:])
	c.PfsFsid = getUUID(b[connPfsFsid:])
	c.PeerMask = le.Uint64(b[connPeerMask:])
	c.PeerType = b[connPeerType]
	c.PfsType = b[connPfsType]
	c.ProtoVersion = le.Uint16(b[connProtoVer:])
	c.Status = le.Uint32(b[connStatus:])
	c.Rnss = le.Uint32(b[connRnss:])
	c.Caps = le.Uint32(b[connCaps:])
	c.CircWindow = le.Uint32(b[connWindow:])
	c.PfsMask = le.Uint64(b[connPfsMask:])
	c.ClLabel = getLabel(b[connClLabel : connClLabel+LabelSize])
	c.FsLabel = getLabel(b[connFsLabel : connFsLabel+LabelSize])
}

func (c *Conn) unmarshalV2(b []byte) {
	*c = Conn{
		MediaID:      getUUID(b[connMediaID:]),
		PfsFsid:      getUUID(b[connV2PeerID:]),
		PeerMask:     le.Uint64(b[connPeerMask:]),
		PeerType:     b[connPeerType],
		ProtoVersion: le.Uint16(b[connProtoVer:]),
		Status:       le.Uint32(b[connStatus:]),
		Rnss:         le.Uint32(b[connRnss:]),
		FsLabel:      getLabel(b[connV2Label : connV2Label+LabelSize]),
	}
}

// Span is the body of a LNK_SPAN: one advertisement of a node.
type Span struct {
	PfsClid      uuid.UUID // cluster id
	PfsFsid      uuid.UUID // node id
	PfsType      uint8
	PeerType     uint8
	ProtoVersion uint16
	Status       uint32
	Reserved     uint64
	Dist         uint32
	Rnss         uint32
	Media        [56]byte // peer-type specific
	ClLabel      string
	FsLabel      string
}

const (
	spanPfsClid  = 0x40
	spanPfsFsid  = 0x50
	spanPfsType  = 0x60
	spanPeerType = 0x61
	spanProtoVer = 0x62
	spanStatus   = 0x64
	spanReserved = 0x68
	spanDist     = 0x70
	spanRnss     = 0x74
	spanMedia    = 0x78
	spanClLabel  = 0xB0
	spanFsLabel  = 0x130
)

// MarshalTo writes s into a 448-byte extended header, leaving the base
// header alone.
func (s *Span) MarshalTo(hdr []byte) {
	b := hdr[:SpanSize]
	clear(b[BaseHeaderSize:])
	putUUID(b[spanPfsClid:], s.PfsClid)
	putUUID(b[spanPfsFsid:], s.PfsFsid)
	b[spanPfsType] = s.PfsType
	b[spanPeerType] = s.PeerType
	le.PutUint16(b[spanProtoVer:], s.ProtoVersion)
	le.PutUint32(b[spanStatus:], s.Status)
	le.PutUint64(b[spanReserved:], s.Reserved)
	le.PutUint32(b[spanDist:], s.Dist)
	le.PutUint32(b[spanRnss:], s.Rnss)
	copy(b[spanMedia:spanMedia+len(s.Media)], s.Media[:])
	putLabel(b[spanClLabel:spanClLabel+LabelSize], s.ClLabel)
	putLabel(b[spanFsLabel:spanFsLabel+LabelSize], s.FsLabel)
}

func (s *Span) unmarshal(b []byte) {
	s.PfsClid = getUUID(b[spanPfsClid:])
	s.PfsFsid = getUUID(b[spanPfsFsid:])
	s.PfsType = b[spanPfsType]
	s.PeerType = b[spanPeerType]
	s.ProtoVersion = le.Uint16(b[spanProtoVer:])
	s.Status = le.Uint32(b[spanStatus:])
	s.Reserved = le.Uint64(b[spanReserved:])
	s.Dist = le.Uint32(b[spanDist:])
	s.Rnss = le.Uint32(b[spanRnss:])
	copy(s.Media[:], b[spanMedia:])
	s.ClLabel = getLabel(b[spanClLabel : spanClLabel+LabelSize])
	s.FsLabel = getLabel(b[spanFsLabel : spanFsLabel+LabelSize])
}

// Circ is the body of a LNK_CIRC.
type Circ struct {
	Reserved01 uint64
	Target     uint64 // msgid of a LNK_SPAN the sender received on this link
}

const (
	circReserved01 = 0x40
	circTarget     = 0x48
)

// MarshalTo writes c into a 128-byte extended header.
func (c *Circ) MarshalTo(hdr []byte) {
	b := hdr[:CircSize]
	clear(b[BaseHeaderSize:])
	le.PutUint64(b[circReserved01:], c.Reserved01)
	le.PutUint64(b[circTarget:], c.Target)
}

func (c *Circ) unmarshal(b []byte) {
	c.Reserved01 = le.Uint64(b[circReserved01:])
	c.Target = le.Uint64(b[circTarget:])
}

// VolCopy is one volume copy slot of a LNK_VOLCONF.
type VolCopy struct {
	CopyID        uint8 // 0 = slot unused
	InProg        uint8
	ChainTo       uint8
	ChainFrom     uint8
	Flags         uint16 // VolCopyEnabled
	Error         uint8
	Priority      uint8
	RemotePfsType uint8
	PfsClid       uuid.UUID
	Label         string // 16-byte field
	Path          string // 64-byte field, e.g. "span:host:987"
}

// VolCopyEnabled is the enabled bit of VolCopy.Flags.
const VolCopyEnabled uint16 = 0x0001

// VolConf is the body of a LNK_VOLCONF.
type VolConf struct {
	Copy    VolCopy
	Index   uint32 // slot 0..255
	Unused  uint32
	MediaID uuid.UUID
}

const (
	volCopy    = 0x40
	volIndex   = 0xC0
	volUnused  = 0xC4
	volMediaID = 0xC8

	// offsets relative to the copy spec
	copyID        = 0x00
	copyInProg    = 0x01
	copyChainTo   = 0x02
	copyChainFrom = 0x03
	copyFlags     = 0x04
	copyError     = 0x06
	copyPriority  = 0x07
	copyRemoteTyp = 0x08
	copyPfsClid   = 0x20
	copyLabel     = 0x30
	copyPath      = 0x40
	copyLabelSize = 16
	copyPathSize  = 64
)

// MarshalTo writes v into a 512-byte extended header.
func (v *VolConf) MarshalTo(hdr []byte) {
	b := hdr[:VolConfSize]
	clear(b[BaseHeaderSize:])
	c := b[volCopy : volCopy+128]
	c[copyID] = v.Copy.CopyID
	c[copyInProg] = v.Copy.InProg
	c[copyChainTo] = v.Copy.ChainTo
	c[copyChainFrom] = v.Copy.ChainFrom
	le.PutUint16(c[copyFlags:], v.Copy.Flags)
	c[copyError] = v.Copy.Error
	c[copyPriority] = v.Copy.Priority
	c[copyRemoteTyp] = v.Copy.RemotePfsType
	putUUID(c[copyPfsClid:], v.Copy.PfsClid)
	putLabel(c[copyLabel:copyLabel+copyLabelSize], v.Copy.Label)
	putLabel(c[copyPath:copyPath+copyPathSize], v.Copy.Path)
	le.PutUint32(b[volIndex:], v.Index)
	le.PutUint32(b[volUnused:], v.Unused)
	putUUID(b[volMediaID:], v.MediaID)
}

func (v *VolConf) unmarshal(b []byte) {
	c := b[volCopy : volCopy+128]
	v.Copy = VolCopy{
		CopyID:        c[copyID],
		InProg:        c[copyInProg],
		ChainTo:       c[copyChainTo],
		ChainFrom:     c[copyChainFrom],
		Flags:         le.Uint16(c[copyFlags:]),
		Error:         c[copyError],
		Priority:      c[copyPriority],
		RemotePfsType: c[copyRemoteTyp],
		PfsClid:       getUUID(c[copyPfsClid:]),
		Label:         getLabel(c[copyLabel : copyLabel+copyLabelSize]),
		Path:          getLabel(c[copyPath : copyPath+copyPathSize]),
	}
	v.Index = le.Uint32(b[volIndex:])
	v.Unused = le.Uint32(b[volUnused:])
	v.MediaID = getUUID(b[volMediaID:])
}

// ErrLayout is returned when a message's extended header is not the layout
// the caller asked for.
type ErrLayout struct {
	Want, Got uint32 // base commands
}

func (e *ErrLayout) Error() string {
	return fmt.Sprintf("extended header is %s (%#08x), want %s", CmdString(e.Got), e.Got, CmdString(e.Want))
}
