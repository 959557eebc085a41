package router

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/metrics"
)

// Reload applies a new, validated configuration. Options that cannot change
// in a running daemon refuse the whole reload, naming them, and leave the
// running configuration intact. It returns the changes applied. Keepalive
// and the per-link budgets (queue, slow-consumer grace, transactions per
// link, link rate) apply to links set up from now on; admission limits
// and the router-wide transaction pool at once.
func (r *Router) Reload(newer *config.Config) ([]string, error) {
	old := r.Config()
	changes, restart := old.Diff(newer)
	if len(restart) > 0 {
		r.metrics.ConfigReload(metrics.ReloadRefused)
		return nil, fmt.Errorf("reload refused: %s cannot change without a restart", strings.Join(restart, ", "))
	}
	if len(changes) == 0 {
		r.metrics.ConfigReload(metrics.ReloadUnchanged)
		return nil, nil
	}
	if err := r.engine.Reconfigure(r.spanConfig(newer, r.engine.Rnss())); err != nil {
		r.metrics.ConfigReload(metrics.ReloadRefused)
		return nil, fmt.Errorf("reload refused: %w", err)
	}
	r.metrics.ConfigReload(metrics.ReloadApplied)
	r.cfg.Store(newer)
	r.reloadTrust(old, newer)
	r.reloadVolconf(old, newer)
	r.circuits.SetLimits(r.circuitConfig(newer))
	r.txPool.SetMax(newer.Limits.MaxTransactions)
	r.media.Set("config", newer.Targets())
	r.media.KickAll()
	for _, c := range changes {
		r.log.Info("configuration changed", zap.String("change", c))
	}
	return changes, nil
}

// ReloadInvalid counts a reload whose file did not load or validate; the
// running configuration stays in force.
func (r *Router) ReloadInvalid() { r.metrics.ConfigReload(metrics.ReloadInvalid) }
