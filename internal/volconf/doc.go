// Package volconf owns dmsgd's outbound links: the set of targets a router
// must keep a link to, from its config file's static media and from the
// LNK_VOLCONF messages of its peers (docs/PROTOCOL.md section 6). Each target
// keeps one link, redialled with exponential backoff and jitter while it is
// wanted and closed when it no longer is. Setting one source's targets
// costs what that source holds, whatever the others hold, and the lines
// about the targets of a source a peer controls are rate-limited.
//
// It also owns the bookkeeping of peers' LNK_VOLCONF (Slots): each media's
// copy slots, the LNK_CONNs that keep them, and a slot budget no one peer
// can take from the others. Whom to obey, and how large the budget is,
// are the router's business.
//
// volconf decides when to dial and for how long to keep trying; how a link
// is dialled and run is its Connect function's business.
package volconf
