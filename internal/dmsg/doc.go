// Package dmsg owns the DMSG wire format: the 64-byte base header, command
// constants and flags, the typed extended headers of every command dmsgd
// speaks (LNK_CONN in both generations, LNK_SPAN, LNK_CIRC, LNK_VOLCONF),
// the signed router advertisement a LNK_SPAN may carry (sig.go),
// CRC-32C sealing and checking, the per-link salt sequence, opposite-endian
// input and the limits that must be checked before memory is committed.
//
// It knows nothing about sockets, transactions or routing: an Encoder writes
// messages to an io.Writer and a Decoder reads them from an io.Reader. Both
// keep the per-direction message sequence of one link, so each link owns one
// of each.
package dmsg
