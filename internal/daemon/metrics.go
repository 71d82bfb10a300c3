package daemon

import (
	"context"
	"fmt"
	"net"

	"github.com/uplinkd/uplinkd/firewall"
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
	reg.SetSources(metrics.Sources{
		Services:   d.serviceMetrics,
		Publishers: d.publisherMetrics,
		DHCP:       d.dhcpMetrics,
		Traffic:    d.trafficMetrics,
		LAN6:       d.lan6Metrics,
	})
	d.log.Info("metrics endpoint listening", "event", "metrics-listen", "addr", ln.Addr().String())
	d.wg.Go(func() {
		if err := metrics.ServeListener(ctx, ln, reg); err != nil {
			d.log.Error("metrics endpoint stopped", "event", "metrics-listen", "reason", err.Error())
		}
	})
	return nil
}

// serviceMetrics is metrics.Sources.Services: every backend of every
// [[service]], as the status shows it.
func (d *Daemon) serviceMetrics() []metrics.Backend {
	var out []metrics.Backend
	for _, s := range d.ServiceStatus() {
		for _, b := range s.Backends {
			out = append(out, metrics.Backend{Service: s.Name, Address: b.Address.String(), Healthy: b.Healthy})
		}
	}
	return out
}

// publisherMetrics is metrics.Sources.Publishers.
func (d *Daemon) publisherMetrics() []metrics.Publisher {
	p := d.x.pub.Load()
	if p == nil {
		return nil
	}
	var out []metrics.Publisher
	for _, s := range p.m.Status() {
		out = append(out, metrics.Publisher{Uplink: s.Uplink, Name: s.Name, Result: s.Result, PublishedAt: s.PublishedAt})
	}
	return out
}

// dhcpMetrics is metrics.Sources.DHCP.
func (d *Daemon) dhcpMetrics() (metrics.DHCP, bool) {
	r := d.x.dhcpStatus.Load()
	if r == nil {
		return metrics.DHCP{}, false
	}
	s := r.srv.Status()
	return metrics.DHCP{Mode: s.Mode, Listening: s.Listening, Binds: s.Binds, InUse: s.InUse, Free: s.Free,
		Resting: s.Bad, Dropped: s.Dropped, Restarts: s.Restarts}, true
}

// trafficMetrics is metrics.Sources.Traffic: the counters of the uplinks
// in the latest status snapshot, read at the scrape.
func (d *Daemon) trafficMetrics() []metrics.Traffic {
	st := d.x.status.Load()
	if st == nil {
		return nil
	}
	cp := *st
	d.addTraffic(&cp)
	var out []metrics.Traffic
	for _, u := range cp.Uplinks {
		if u.Traffic == nil {
			continue
		}
		for _, dir := range firewall.Directions {
			c := trafficDir(u.Traffic, dir)
			out = append(out, metrics.Traffic{Uplink: u.Name, Direction: dir, Packets: c.Packets, Bytes: c.Bytes})
		}
	}
	return out
}
