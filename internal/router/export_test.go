package router

// HopSignatures returns how many relay hops the router signed and how
// many it copied from the signatures it made before.
func (r *Router) HopSignatures() (signed, reused uint64) {
	return r.signer.hopStats.signed.Load(), r.signer.hopStats.reused.Load()
}

// OnHopSign makes f run on the link's writer before each hop signature
// the router makes.
func (r *Router) OnHopSign(f func()) { r.signer.onSign.Store(&f) }
