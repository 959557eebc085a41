// Package span owns the span engine of docs/PROTOCOL.md section 4: the
// router's model of the cluster (clusters, nodes, received advertisements, relays),
// relay selection (best K per node and neighbor, with the LNK_CONN
// filters), withdrawal cascades, and the router's own advertisement. It
// also ranks verified advertisements (docs/PROTOCOL.md 11.3) before any other:
// the daemon checks signatures and tells the engine what it found (a
// Proof); the engine does no cryptography (verify.go).
//
// It does not own sockets, framing or the transaction state machine. The
// daemon tells the Engine what happened on a link (a peer's LNK_CONN
// arrived or closed, a LNK_SPAN was received or withdrawn, the peer
// DELETEd one of our relays) and the Engine answers by opening and closing
// LNK_SPAN transactions through the Peer and SpanTx interfaces. That keeps
// the engine deterministic and lets tests drive hundreds of routers in one
// process over an in-memory network.
//
// Concurrency: one mutex per Engine (the "cluster mutex") guards all of its
// state. Every exported method takes it, so the methods may be called from
// any goroutine. Peer and SpanTx methods are called with the mutex held;
// they must only enqueue and return, and must never call back into the
// Engine (that would deadlock) or block on a socket (that would stall every
// link of the router). A neighbor coming up or going down is handled in
// steps that release the mutex in between (steps.go), so no call holds it
// for a whole table; the work of every call is billed to the neighbor
// that caused it (Neighbor.TakeWork) for the daemon to charge to its peer.
// Lock order: the cluster mutex is taken before any lock the Peer and
// SpanTx methods take (a link's queue); the daemon never calls the engine
// with one of those held, and the source buckets of the router (churn.go
// there) are taken with no engine lock held.
//
// Cost: every event recomputes only the (node, neighbor) pairs it can
// affect. A span add or withdrawal touches one node on every neighbor; a
// refused relay touches one pair; a neighbor coming up or going down
// touches every node on that one neighbor. Nothing rescans the whole
// tree, so the cost of one span event does not grow with the number of
// nodes a router holds.
//
// Budgets (budget.go): nodes, received spans and relays are bounded over
// all neighbors, and spans per neighbor and per node. Each is charged
// to the neighbor that asked for it, no neighbor may hold more than
// is still free (a router's twice that), and a span beyond a budget is
// refused before anything is allocated; a neighbor that keeps sending
// spans past its budget is told to close (ErrRefusalFlood). A relay beyond
// the relay budget is not refused but delayed: its node waits on a list of
// the neighbor it is charged to and is re-selected as relays close. Our
// own advertisement is never held back.
//
// Handles: *Neighbor, *Advert and *Relay are the engine's handles for a
// neighbor, a received span and a relay. Calls naming a handle that is
// already gone (a link withdrawn by ConnDown, a relay we closed) are no-ops,
// so the daemon may report every transaction it terminates without tracking
// which the engine has already dropped.
package span
