package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/dhcpd"
	"github.com/uplinkd/uplinkd/policy"
)

// dhcpRuntime is the running LAN DHCP side ([lan.dhcp] mode embedded or
// service) and what it was last told about the LAN link.
type dhcpRuntime struct {
	srv    *dhcpd.Server
	spec   dhcpd.Spec
	cancel context.CancelFunc
	done   chan struct{}
	told   lanSeen
}

// lanSeen is the LAN link as a pass saw it.
type lanSeen struct {
	known bool
	index int
	up    bool
	addr  netip.Addr // primary IPv4 address
}

// dhcpSpec builds the dhcpd.Spec of cfg; ok is false for mode off (or no
// [lan.dhcp]). netnsFD is the namespace the server's sockets open in.
func dhcpSpec(cfg *policy.Config, netnsFD int) (spec dhcpd.Spec, ok bool, err error) {
	dh := cfg.LAN.DHCP
	if dh == nil || dh.Mode == policy.DHCPOff || dh.Mode == "" {
		return spec, false, nil
	}
	spec = dhcpd.Spec{
		Mode: string(dh.Mode), Interface: cfg.LAN.Interface,
		Lease: dh.Lease, MaxLease: dh.MaxLease,
		Router: dh.Router, DNS: dh.DNS, NTP: dh.NTP, Domain: dh.Domain,
		StateDir: cfg.Daemon.StateDir, ConflictCheck: dh.ConflictCheck,
		Service: dhcpd.Service{Unit: dh.Unit, Command: dh.Command, MinInterval: dh.RestartInterval},
		NetNS:   netnsFD,
	}
	if len(dh.Range) == 2 {
		spec.Range = [2]netip.Addr{dh.Range[0], dh.Range[1]}
	}
	for _, h := range dh.Hosts {
		mac, err := net.ParseMAC(h.MAC)
		if err != nil {
			return spec, false, fmt.Errorf("host %q: %w", h.Name, err)
		}
		spec.Hosts = append(spec.Hosts, dhcpd.Host{Name: h.Name, MAC: mac, IP: h.IP})
	}
	return spec, true, nil
}

// startDHCP starts the DHCP server of cfg on a goroutine Run owns.
func (d *Daemon) startDHCP(ctx context.Context, cfg *policy.Config) {
	spec, ok, err := dhcpSpec(cfg, d.netnsFD())
	if err != nil || !ok {
		return // CheckConfig reported err already
	}
	srv, err := dhcpd.New(spec, d.log)
	if err != nil {
		d.log.Error("dhcp not started", "event", "dhcp", "iface", spec.Interface, "reason", err.Error())
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &dhcpRuntime{srv: srv, spec: spec, cancel: cancel, done: make(chan struct{})}
	d.wg.Go(func() {
		defer close(r.done)
		if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("dhcp stopped", "event", "dhcp", "iface", spec.Interface, "reason", err.Error())
		}
	})
	d.x.dhcp = r
	d.x.dhcpStatus.Store(r)
	// The server learns the LAN link's state from the next pass.
}

// stopDHCP ends the server and waits for it, so that a new one can bind
// port 67 and own the lease file.
func (d *Daemon) stopDHCP() {
	r := d.x.dhcp
	if r == nil {
		return
	}
	d.x.dhcp = nil
	d.x.dhcpStatus.Store(nil)
	r.cancel()
	r.srv.Close()
	<-r.done
}

// reloadDHCP recreates the server when a reload changed its spec.
func (d *Daemon) reloadDHCP(ctx context.Context, cfg *policy.Config) {
	spec, ok, _ := dhcpSpec(cfg, d.netnsFD())
	if r := d.x.dhcp; r != nil && ok && reflect.DeepEqual(r.spec, spec) {
		return
	}
	if d.x.dhcp == nil && !ok {
		return
	}
	d.stopDHCP()
	d.startDHCP(ctx, cfg)
}

// noteLAN records the LAN link of the pass's snapshot.
func (d *Daemon) noteLAN(obs policy.Observed) {
	name := d.cfg.LAN.Interface
	l, ok := obs.Links[name]
	seen := lanSeen{known: true}
	if ok {
		seen.index, seen.up = l.Index, l.Up && l.Carrier
		for _, a := range obs.Addrs[name] {
			if a.Prefix.Addr().Is4() {
				seen.addr = a.Prefix.Addr()
				break
			}
		}
	}
	d.x.lan = seen
}

// passDHCP tells the DHCP server what the pass saw of the LAN link: its
// state when it changed (down and up again when the interface was
// re-created, its ifindex changed), and a re-bind when its address changed.
func (d *Daemon) passDHCP() {
	r, cur := d.x.dhcp, d.x.lan
	if r == nil || !cur.known {
		return
	}
	told := r.told
	r.told = cur
	switch {
	case !told.known:
		// The embedded server binds at its start by itself; only a LAN
		// link that is down already needs telling. A supervised service
		// is started (if it is not running) once its LAN link is seen up.
		if !cur.up || r.spec.Mode == dhcpd.ModeService {
			r.srv.LinkChanged(cur.up)
		}
		return
	case cur.index != told.index && told.index != 0 && cur.index != 0:
		r.srv.LinkChanged(false)
		r.srv.LinkChanged(cur.up)
		return
	case cur.up != told.up:
		r.srv.LinkChanged(cur.up)
		return
	}
	if cur.up && cur.addr != told.addr {
		r.srv.Rebind()
	}
}

func dhcpStatus(s dhcpd.Status) *control.DHCP {
	out := &control.DHCP{
		Mode: s.Mode, Interface: s.Interface, Listening: s.Listening, Binds: s.Binds,
		InUse: s.InUse, Free: s.Free, Bad: s.Bad, StaticHosts: s.StaticHosts, Dropped: s.Dropped,
		Restarts: s.Restarts, LastRestart: s.LastRestart, LastError: s.LastError, LastErrorAt: s.LastErrorAt,
	}
	for _, l := range s.Leases {
		out.Leases = append(out.Leases, control.DHCPLease{IP: l.IP, MAC: l.MAC, Hostname: l.Hostname,
			State: l.State, Expires: l.Expires, Static: l.Static})
	}
	return out
}
