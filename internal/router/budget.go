package router

import (
	"github.com/dmsgd/dmsgd/internal/circ"
)

// Circuits returns the router's circuit relay, which also counts the
// circuits ending here against limits.max_circuits.
func (r *Router) Circuits() *circ.Switch { return r.circuits }
