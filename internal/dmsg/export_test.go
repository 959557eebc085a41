package dmsg

// SetSeq primes d to expect seq as the sequence number of the next message,
// as if it had already read that many messages from the stream. Tests only.
func (d *Decoder) SetSeq(seq uint8) { d.seq = seq }
