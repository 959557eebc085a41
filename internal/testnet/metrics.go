package testnet

import "github.com/dmsgd/dmsgd/internal/metrics"

// LimitHits returns how many refusals m counted for limit (the config
// key under limits:, such as "max_circuits"): the value of
// dmsgd_limit_refusals_total{limit=limit}, 0 when none was counted.
func LimitHits(m *metrics.Metrics, limit string) float64 {
	mfs, err := m.Registry().Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != "dmsgd_limit_refusals_total" {
			continue
		}
		for _, c := range mf.GetMetric() {
			for _, l := range c.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return c.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
