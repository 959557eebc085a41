// Package circ owns virtual circuits as a router relays them (docs/PROTOCOL.md
// section 5): setting a circuit up hop by hop from the span a LNK_CIRC
// targets, the per-link circuit tables, forwarding every message of a
// circuit with its circuit id rewritten, per-circuit flow control, and
// teardown in both directions, including aborts when the span under a
// circuit is withdrawn or a link under it dies.
//
// Admission (admit.go): every circuit a peer opens, relayed further or
// ending at this router, takes a slot of limits.max_circuits and of its
// link's limits.max_circuits_per_link, reserved atomically before the
// target is looked up; a LNK_CIRC beyond them is refused with CANTCIRC.
//
// Forwarding runs on the reader goroutine of the arriving link and takes
// only that link's table lock (a read lock): never the span engine's
// cluster mutex. Flow control is per circuit, hop and direction (flow.go,
// docs/PROTOCOL.md 11.2): a router forwards within the credit the next hop
// granted, holds the rest in the circuit and grants upstream as it writes
// downstream, so a stalled circuit never holds up its links; toward and
// from links without the extension it keeps DMSG's old backpressure on
// that link alone. The router tells circ which span a target names
// through a Resolver, and which spans went away through SpanGone.
package circ
