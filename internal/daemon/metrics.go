package daemon

import (
	"context"
	"fmt"
	"net"

	"github.com/uplinkd/uplinkd/internal/metrics"
)

// startMetrics opens [daemon] metrics_listen and serves the Prometheus
// endpoint on a goroutine Run owns. Without metrics_listen the registry
// stays nil and every recorder call returns at once. The address is bound
// here, so a taken port fails the start instead of going unnoticed; a
// reload that changes it is logged and needs a restart.
func (d *Daemon) startMetrics(ctx context.Context) error {
	addr, ln := d.cfg.Daemon.MetricsListen, d.opts.MetricsListener
	if ln == nil {
		if addr == "" {
			return nil
		}
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics_listen %s: %w", addr, err)
		}
	}
	d.x.metrics = metrics.New()
	d.x.metricsAddr = ln.Addr()
	reg := d.x.metrics
	d.OnHARole(reg.SetHARole) // HA: the role as a metric
	d.log.Info("metrics endpoint listening", "event", "metrics-listen", "addr", ln.Addr().String())
	d.wg.Go(func() {
		if err := metrics.ServeListener(ctx, ln, reg); err != nil {
			d.log.Error("metrics endpoint stopped", "event", "metrics-listen", "reason", err.Error())
		}
	})
	return nil
}
