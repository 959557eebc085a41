package circ

import "github.com/dmsgd/dmsgd/internal/metrics"

// abortReason names the error a circuit was aborted with, for the reason
// label of dmsgd_circuits_closed_total ("aborted" when it carried none).
func abortReason(code uint32) string {
	if code == 0 {
		return "aborted"
	}
	return metrics.ErrorReason(code)
}
