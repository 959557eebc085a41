// Package shell owns the debug shell of docs/PROTOCOL.md section 7: the command
// interpreter a router runs for each shell peer (help, tree, ping, span,
// links, circuits, @node; commands.go declares each once, with its class
// and help) and the three renderings of a router's view of the cluster — the
// section 7 text dump, the JSON document of docs/INTERFACE.md and a Graphviz
// DOT graph. Its client side (`dmsgd tree`, `dmsgd shell`, `@node`) is
// internal/endpoint's.
//
// The package does not read router state itself: the router hands it a
// Tree, and carries its output over DBG_SHELL messages. It must not import
// the span engine or the router.
package shell
