package daemon

import (
	"reflect"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/publish"
)

// publishing is the running address publishers ([[uplink.publish]]) and
// the specs they were made from, to tell whether a reload changed them.
type publishing struct {
	m     *publish.Manager
	specs []publish.Spec
}

// publishSpecs maps the config's publishers to package publish's specs.
func publishSpecs(cfg *policy.Config) []publish.Spec {
	var specs []publish.Spec
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		for _, p := range u.Publish {
			specs = append(specs, publish.Spec{
				Uplink: u.Name, Iface: u.Interface, Name: p.Name, Kind: publish.Kind(p.Kind),
				Command: p.Command, URL: p.URL, Server: p.ServerAddr, Hostname: p.Hostname,
				Username: p.Username, PasswordFile: p.PasswordFile, CAFile: p.CAFile,
				Zone: p.Zone, KeyFile: p.KeyFile, TTL: p.TTL, Settle: p.Settle,
				MinInterval: p.MinInterval, Refresh: p.Refresh, Timeout: p.Timeout,
				IPv6: p.Family == policy.FamilyIPv6,
			})
		}
	}
	return specs
}

// startPublishing creates the publish manager of cfg (none without
// publishers). Every result fires the `publish` hook event; Fire only
// queues, so the publisher's goroutine never waits for a hook.
func (d *Daemon) startPublishing(cfg *policy.Config) {
	specs := publishSpecs(cfg)
	if len(specs) == 0 {
		return
	}
	m, err := publish.NewManager(specs, publish.Options{
		StateDir: cfg.Daemon.StateDir, Version: d.opts.Version, Log: d.log,
		OnResult: func(ev publish.Event) {
			d.x.metrics.PublishResult(ev.Uplink, ev.Publisher, ev.Result)
			d.fireOutside(ev.HookEvent())
		},
	})
	if err != nil {
		// CheckConfig passed moments ago; a secret file changed since.
		d.log.Error("address publishers not started", "event", "publish", "reason", err.Error())
		return
	}
	d.x.pub.Store(&publishing{m: m, specs: specs})
}

// reloadPublishing replaces the publishers when a reload changed them; an
// unchanged set keeps its timers and settle windows.
func (d *Daemon) reloadPublishing(cfg *policy.Config) {
	old := d.x.pub.Load()
	specs := publishSpecs(cfg)
	if old != nil && reflect.DeepEqual(old.specs, specs) {
		return
	}
	if old != nil {
		d.x.pub.Store(nil)
		// Close cancels a publish in flight and waits for it: in the
		// background, the loop never waits for a publisher. The new
		// manager publishes again what the old one had not.
		d.wg.Go(old.m.Close)
	}
	d.startPublishing(cfg)
	if p := d.x.pub.Load(); p != nil {
		// The new manager learns the current addresses now, not a pass later.
		for name, st := range d.rec.lastStates {
			p.m.Update(name, st.Addr)
			p.m.UpdateIPv6(name, st.IPv6.Addr)
		}
	}
}

func publisherStatus(in []publish.Status) []control.Publisher {
	out := make([]control.Publisher, len(in))
	for i, p := range in {
		out[i] = control.Publisher{
			Uplink: p.Uplink, Name: p.Name, Kind: string(p.Kind), Address: p.Address,
			PublishedAt: p.PublishedAt, Pending: p.Pending, Result: p.Result, Reply: p.Reply,
			Reason: p.Reason, LastAttempt: p.LastAttempt, NextTry: p.NextTry,
		}
	}
	return out
}
