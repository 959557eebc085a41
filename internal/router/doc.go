// Package router is the dmsgd daemon: it binds listeners, admits
// connections (admit.go: link classes, per-source caps and rates, pending
// links and their deadlines; pending.go: the pending slots shared fairly
// among sources), turns every accepted or dialled stream into
// an iocom link with its peer's budgets, runs the LNK_CONN and
// LNK_SPAN transactions of each link against the span engine, serves the
// debug shell on links allowed to use it, keeps outbound links through
// volconf, and shuts all of it down in order, within the caller's
// context (lifecycle.go: Serve, Shutdown and Close in net/http's
// shape). It charges the span engine's work to the peer that caused it,
// per link and per source address (churn.go).
//
// It exists as its own package because this wiring is a responsibility
// none of the others may take: iocom must not know about spans, the span
// engine must not know about sockets, and the shell only renders what it
// is handed. The router owns no protocol logic of its own beyond that
// wiring and the LNK_CONN exchange (docs/PROTOCOL.md 4.1 and 10).
package router
