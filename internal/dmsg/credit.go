package dmsg

// LNK_CREDIT is the message of the CIRC_WINDOW extension
// (docs/PROTOCOL.md 11.2): a one-way message on a circuit that grants the
// receiver more bytes it may send on that circuit, on that link. It is
// sent only on links where both LNK_CONNs name CapCircWindow.

// LnkCredit is the base command of LNK_CREDIT: LNK command 0x014, a
// 128-byte extended header.
const LnkCredit uint32 = 0x00001402

// CreditSize is the extended header size of LNK_CREDIT.
const CreditSize = 128

// MaxMsgSize is the largest message on the wire: the largest extended
// header and the largest aux data.
const MaxMsgSize = MaxHeaderSize + MaxAuxSize

// MinCircWindow is the smallest circ_window a LNK_CONN may declare with
// CapCircWindow; a smaller one does not put the extension in force. A
// receiver grants credit back at the latest once it has taken in half its
// window, so a sender waiting for credit always gets at least half a
// window: that must hold the largest message.
const MinCircWindow = 2 * MaxMsgSize

// Credit is the body of a LNK_CREDIT.
type Credit struct {
	// Increment is how many more bytes of encoded messages (extended
	// header and padded aux data) the receiver may send on the circuit.
	Increment uint64
}

// LNK_CREDIT field offsets (message offsets, base header included).
const (
	creditIncrement = 0x40
)

// MarshalTo writes c into a 128-byte extended header, leaving the base
// header alone.
func (c *Credit) MarshalTo(hdr []byte) {
	b := hdr[:CreditSize]
	clear(b[BaseHeaderSize:])
	le.PutUint64(b[creditIncrement:], c.Increment)
}

func (c *Credit) unmarshal(b []byte) {
	c.Increment = le.Uint64(b[creditIncrement:])
}

// Credit decodes a LNK_CREDIT body.
func (m *Msg) Credit() (Credit, error) {
	var c Credit
	if Base(m.Cmd) != LnkCredit {
		return c, &ErrLayout{Want: LnkCredit, Got: Base(m.Cmd)}
	}
	c.unmarshal(m.ext(CreditSize))
	return c, nil
}

// NewCreditMsg builds the one-way LNK_CREDIT granting n more bytes on
// circuit; revCirc is set when the circuit is one the receiver opened.
func NewCreditMsg(circuit uint64, revCirc bool, n uint64) *Msg {
	m := NewMsg(LnkCredit)
	m.Circuit = circuit
	if revCirc {
		m.Cmd |= FlagRevCirc
	}
	(&Credit{Increment: n}).MarshalTo(m.Ext)
	return m
}

// IsCredit reports whether a message with this header is a well-formed
// LNK_CREDIT: one-way (msgid 0, neither CREATE nor DELETE), on a circuit,
// without aux data. Receivers drop any other message of that command.
func IsCredit(h *Header) bool {
	return Base(h.Cmd) == LnkCredit && h.MsgID == 0 && h.Circuit != 0 && h.AuxBytes == 0 &&
		h.Cmd&(FlagCreate|FlagDelete) == 0
}
