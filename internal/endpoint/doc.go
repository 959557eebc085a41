// Package endpoint is a DMSG endpoint: one node at the far end of a link
// to a router, as a leaf, a client or a tool sees it. It owns the
// endpoint's side of the protocol on top of an iocom.Link:
//
//   - introducing the node with LNK_CONN and answering the router's
//     LNK_CONN (endpoint.go), which also puts per-circuit flow control
//     (docs/PROTOCOL.md 11.2) in force when both sides offer it;
//   - advertising and withdrawing the node's own advertisements, and
//     keeping the relays the router sends it (advertisements of other
//     nodes), with a way to wait for changes (adverts.go);
//   - opening circuits toward a span and accepting circuits aimed at the
//     node's own advertisements, with transactions and one-way messages inside
//     (circuit.go);
//   - running debug shell commands, on the link itself or inside a
//     circuit, with the output bounded (shell.go).
//
// Everything on the wire goes through the iocom.Link, so its state
// machine, keepalive, budgets and flow control hold for an endpoint as for
// a router. Handlers an endpoint calls run on the link's reader goroutine,
// as iocom's do.
//
// The package is what dmsgd's own clients are made of: `dmsgd tree`,
// `dmsgd shell` and `dmsgd map`, the router's `@node` command (which opens
// its circuit on a router link with OpenCircuit) and the test peers that
// behave. Peers that must misbehave on the wire use internal/dmsgtest
// instead. It imports nothing of dmsgd but the codec (internal/dmsg) and
// iocom, whose types its API shows; made public together with them, it
// needs nothing else.
package endpoint
