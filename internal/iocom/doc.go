// Package iocom owns one DMSG link: the framing I/O over a byte stream, the
// outbound queue and its batching writer, the transaction state machine
// (docs/PROTOCOL.md section 3) scoped per circuit, keepalive, and link loss.
//
// A Link runs exactly two goroutines: a reader that decodes frames, runs the
// state machine and calls handlers, and a writer that drains the outbound
// queue into the socket, flushing only when the queue is empty. Every
// handler of a Link runs on its reader goroutine, one message at a time,
// and never with an iocom lock held, so handlers may send on any Link.
//
// Circuit traffic a router relays skips the state machine (relay.go): the
// reader offers each circuit message to the Forward hook with only its
// header decoded, copies a relayed one as bytes into the outbound link's
// queue, and when its input is drained writes small queues to the other
// socket itself, without waiting, instead of waking that link's writer.
// Whoever holds a Link's write lock owns its socket's write side.
//
// The outbound queue has a control class, written first, and a class for
// circuit data (queue.go), so that the link's own traffic never waits
// behind circuits. With per-circuit flow control in force (window.go,
// docs/PROTOCOL.md 11.2) a circuit scope sends within the credit its peer
// granted and grants credit as its handlers take messages in; a router
// keeps a relayed circuit's messages that do not fit its next hop's
// credit in a Hold (hold.go) and queues them as credit arrives.
//
// A Link spends only its own peer's budgets, each enforced before what it
// bounds is allocated: the bytes queued for the peer (budget.go: the
// reader stops while answers to the peer exceed the budget, a peer that
// does not keep up is closed as a slow consumer), the transactions the
// peer holds open (txbudget.go, per link and in a pool shared by all
// links), and the work its messages make the reader do (rate.go: a peer
// past its rate waits, alone). Keepalive counts whole messages, so a
// trickle of bytes does not keep a link alive. What a peer can repeat at
// will is logged through the shared rate-limited event log and counted
// (report.go).
//
// A protocol violation, a framing error, a keepalive timeout, a spent
// budget or a panic in a handler closes only that Link: every transaction
// still open on it is then terminated exactly once, children first and
// LNK_CONN last, with a synthesized ABORT|DELETE carrying LOSTLINK.
//
// iocom knows nothing of spans or routing; it must not import the span or
// circuit packages.
package iocom
