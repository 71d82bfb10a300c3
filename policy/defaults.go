package policy

import (
	"fmt"
	"strings"
	"time"
)

// Layer 3 of the loader: defaults.

// Defaults of the keys a file may leave out (documented in
// contrib/uplinkd.toml). applyDefaults is the one place they are applied;
// nothing that uses a Config applies a default of its own.
const (
	DefaultConfigPath     = "/etc/uplinkd/uplinkd.toml"
	DefaultControlSocket  = "/run/uplinkd/uplinkd.sock"
	DefaultStateDir       = "/var/lib/uplinkd"
	DefaultHookDir        = "/etc/uplinkd/hooks.d"
	DefaultTable          = 157
	DefaultPriority       = 32600
	DefaultStickyPriority = 32000
	DefaultMinSync        = time.Duration(0)
	DefaultLogLevel       = LogInfo
	DefaultLastResort     = LastResortLink

	// An uplink without table or rule_priority gets table
	// DefaultTableBase+N and rule priority DefaultRulePriorityBase+
	// DefaultRulePriorityStep×N, N its 1-based position among the
	// [[uplink]]s (DefaultUplinkTable, DefaultRulePriority). With at most
	// MaxUplinks uplinks that is tables 1001..1255, clear of the kernel's
	// (253..255) and of default_table 157, and priorities 1100..26500,
	// after the usual [[rule]] priorities (the seed's 100) and before the
	// sticky rules (32000) and the default-route rules (32600).
	DefaultTableBase        = 1000
	DefaultRulePriorityBase = 1000
	DefaultRulePriorityStep = 100

	DefaultTier     = 1
	DefaultWeight   = 1
	DefaultSNAT     = SNATSNAT
	DefaultRPFilter = RPFilterLoose

	DefaultProbeMethod      = ProbeICMP
	DefaultCheckInterval    = time.Second
	DefaultCheckTimeout     = 800 * time.Millisecond
	DefaultCheckReliability = 1
	DefaultCheckDown        = 3
	DefaultCheckRetries     = 2
	DefaultCheckUp          = 3
	DefaultCheckHoldDown    = 30 * time.Second
	DefaultCheckMaxLoss     = 1.0 // any loss: loss alone never fails a round
	DefaultTrafficWindow    = 300 * time.Millisecond
	DefaultCheckWarnLoss    = 1.0 // never degrades for loss
	DefaultDegraded         = DegradedLowerWeight
	DefaultDegradedWeight   = 25 // percent: a degraded uplink takes a quarter of its share

	DefaultReconnectAfter   = 10 * time.Second
	DefaultReconnectBackoff = 5 * time.Second
	DefaultMaxBackoff       = 5 * time.Minute
	DefaultReconnectTimeout = 30 * time.Second
	DefaultDialTimeout      = 30 * time.Second

	DefaultPublishTTL         = 60 * time.Second
	DefaultPublishSettle      = 2 * time.Second
	DefaultPublishMinInterval = 30 * time.Second
	DefaultPublishRefresh     = 600 * time.Hour // 25 days
	DefaultPublishTimeout     = 10 * time.Second
	DefaultRFC2136Port        = "53"

	DefaultDHCPMode            = DHCPOff
	DefaultDHCPLease           = time.Hour
	DefaultDHCPMaxLease        = 24 * time.Hour
	DefaultDHCPConflictCheck   = true
	DefaultDHCPRestartInterval = 10 * time.Second

	DefaultBackend         = BackendNFTables
	DefaultIPTablesVariant = IPTablesAuto
	DefaultPolicy          = PolicyAccept
	DefaultDenyAction      = DenyDrop
	DefaultServiceProto    = ProtoTCP
	DefaultBalance         = BalanceSourceHash
	DefaultBackendWeight   = 1
	DefaultServiceInterval = 2 * time.Second
	DefaultServiceTimeout  = time.Second
	DefaultServiceDown     = 2
	DefaultServiceUp       = 2

	// DefaultLostUplinkWeight: with keepalived's `weight 1`, a gateway that
	// lost one tier-1 uplink drops 50 below its configured priority.
	DefaultLostUplinkWeight = -50
	DefaultHAMode           = HAActive
)

// DefaultUplinkTable is the table of the n-th (1-based) uplink when the
// file leaves table out.
func DefaultUplinkTable(n int) int { return DefaultTableBase + n }

// DefaultRulePriority is the rule priority of the n-th (1-based) uplink
// when the file leaves rule_priority out.
func DefaultRulePriority(n int) int {
	return DefaultRulePriorityBase + DefaultRulePriorityStep*n
}

// setDefault fills in a key the file does not set. A key set to its zero
// value keeps it, so that `down = 0` is reported instead of silently becoming 3.
func setDefault[T any](l *loader, path string, p *T, def T) {
	if !l.set(path) {
		*p = def
	}
}

// inferUplinkKind guesses an uplink's kind from the usual interface names.
func inferUplinkKind(iface string) Kind {
	switch {
	case strings.HasPrefix(iface, "ppp"):
		return KindPPP
	case strings.HasPrefix(iface, "wl"):
		return KindWLAN
	default:
		return KindEthernet
	}
}

// applyDefaults gives every key the file leaves out its default. It runs
// before validation, which therefore sees the values the daemon will use.
func (l *loader) applyDefaults(c *Config) {
	d := &c.Daemon
	setDefault(l, "daemon.control_socket", &d.ControlSocket, DefaultControlSocket)
	setDefault(l, "daemon.state_dir", &d.StateDir, DefaultStateDir)
	setDefault(l, "daemon.hook_dir", &d.HookDir, DefaultHookDir)
	setDefault(l, "daemon.default_table", &d.DefaultTable, DefaultTable)
	setDefault(l, "daemon.default_priority", &d.DefaultPriority, DefaultPriority)
	setDefault(l, "daemon.log_level", &d.LogLevel, DefaultLogLevel)
	setDefault(l, "daemon.last_resort", &d.LastResort, DefaultLastResort)
	setDefault(l, "daemon.min_sync_interval", &d.MinSyncInterval, DefaultMinSync)
	setDefault(l, "daemon.sticky_priority", &d.StickyPriority, DefaultStickyPriority)

	lan := &c.LAN
	hasLAN := lan.Interface != ""
	setDefault(l, "lan.masquerade", &lan.Masquerade, hasLAN)
	setDefault(l, "lan.forwarding", &lan.Forwarding, hasLAN)
	setDefault(l, "lan.remove_default_route", &lan.RemoveDefaultRoute, true)
	setDefault(l, "lan.ipv6.mode", &lan.IPv6.Mode, LAN6Off)
	if v := &lan.IPv6; v.Announce {
		setDefault(l, "lan.ipv6.max_interval", &v.MaxInterval, DefaultRAMaxInterval)
		setDefault(l, "lan.ipv6.min_interval", &v.MinInterval, max(3*time.Second, v.MaxInterval/3))
		setDefault(l, "lan.ipv6.router_lifetime", &v.RouterLifetime, 3*v.MaxInterval)
		setDefault(l, "lan.ipv6.router_preference", &v.RouterPreference, PreferenceMedium)
	}
	if dh := lan.DHCP; dh != nil {
		setDefault(l, "lan.dhcp.mode", &dh.Mode, DefaultDHCPMode)
		switch dh.Mode {
		case DHCPOff:
		case DHCPService:
			setDefault(l, "lan.dhcp.restart_interval", &dh.RestartInterval, DefaultDHCPRestartInterval)
		default: // embedded, or a mode the validator will report
			setDefault(l, "lan.dhcp.lease", &dh.Lease, DefaultDHCPLease)
			setDefault(l, "lan.dhcp.max_lease", &dh.MaxLease, DefaultDHCPMaxLease)
			setDefault(l, "lan.dhcp.conflict_check", &dh.ConflictCheck, DefaultDHCPConflictCheck)
		}
	}

	// HA keys get defaults only when HA is on: with it off, a Config holds
	// zero HA values that nothing reads.
	haOn := c.HA.Enabled()
	if haOn {
		setDefault(l, "ha.lost_uplink_weight", &c.HA.LostUplinkWeight, DefaultLostUplinkWeight)
	}

	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		p := fmt.Sprintf("uplink[%d]", i)
		setDefault(l, p+".interface", &u.Interface, u.Name)
		setDefault(l, p+".kind", &u.Kind, inferUplinkKind(u.Interface))
		u.TableDefaulted = !l.set(p + ".table")
		setDefault(l, p+".table", &u.Table, DefaultUplinkTable(i+1))
		u.RulePriorityDefaulted = !l.set(p + ".rule_priority")
		setDefault(l, p+".rule_priority", &u.RulePriority, DefaultRulePriority(i+1))
		setDefault(l, p+".snat", &u.SNAT, DefaultSNAT)
		setDefault(l, p+".tier", &u.Tier, DefaultTier)
		setDefault(l, p+".weight", &u.Weight, DefaultWeight)
		setDefault(l, p+".rp_filter", &u.RPFilter, DefaultRPFilter)
		if haOn {
			setDefault(l, p+".ha.mode", &u.HA.Mode, DefaultHAMode)
			// Only the preferred tier counts by default: losing a backup
			// line should not hand the LAN gateway to the other box.
			haWeight := 0
			if u.Tier == 1 {
				haWeight = c.HA.LostUplinkWeight
			}
			setDefault(l, p+".ha.weight", &u.HA.Weight, haWeight)
		}
		if ch := u.Check; ch != nil {
			q := p + ".check"
			setDefault(l, q+".method", &ch.Method, DefaultProbeMethod)
			setDefault(l, q+".interval", &ch.Interval, DefaultCheckInterval)
			setDefault(l, q+".timeout", &ch.Timeout, DefaultCheckTimeout)
			setDefault(l, q+".reliability", &ch.Reliability, DefaultCheckReliability)
			setDefault(l, q+".down", &ch.Down, DefaultCheckDown)
			setDefault(l, q+".retries", &ch.Retries, DefaultCheckRetries)
			setDefault(l, q+".up", &ch.Up, DefaultCheckUp)
			setDefault(l, q+".hold_down", &ch.HoldDown, DefaultCheckHoldDown)
			setDefault(l, q+".max_loss", &ch.MaxLoss, DefaultCheckMaxLoss)
			// A shorter interval shortens the default window with it
			// (never below the window's least value).
			setDefault(l, q+".traffic_window", &ch.TrafficWindow, max(min(DefaultTrafficWindow, ch.Interval), 100*time.Millisecond))
			setDefault(l, q+".warn_loss", &ch.WarnLoss, DefaultCheckWarnLoss)
			setDefault(l, q+".degraded", &ch.Degraded, DefaultDegraded)
			setDefault(l, q+".degraded_weight", &ch.DegradedWeight, DefaultDegradedWeight)
		}
		if r := u.Reconnect; r != nil {
			// The default commands come from hooks.DefaultCommands, at run time.
			q := p + ".reconnect"
			setDefault(l, q+".reconnect_after", &r.ReconnectAfter, DefaultReconnectAfter)
			setDefault(l, q+".backoff", &r.Backoff, DefaultReconnectBackoff)
			setDefault(l, q+".max_backoff", &r.MaxBackoff, DefaultMaxBackoff)
			setDefault(l, q+".timeout", &r.Timeout, DefaultReconnectTimeout)
			setDefault(l, q+".dial_timeout", &r.DialTimeout, DefaultDialTimeout)
		}
		n := map[PublishKind]int{}
		for j := range u.Publish {
			pub := &u.Publish[j]
			q := fmt.Sprintf("%s.publish[%d]", p, j)
			n[pub.Kind]++
			setDefault(l, q+".name", &pub.Name, fmt.Sprintf("%s-%d", pub.Kind, n[pub.Kind]))
			if pub.Kind == PublishRFC2136 {
				setDefault(l, q+".ttl", &pub.TTL, DefaultPublishTTL)
			}
			setDefault(l, q+".settle", &pub.Settle, DefaultPublishSettle)
			setDefault(l, q+".min_interval", &pub.MinInterval, DefaultPublishMinInterval)
			setDefault(l, q+".refresh", &pub.Refresh, DefaultPublishRefresh)
			setDefault(l, q+".timeout", &pub.Timeout, DefaultPublishTimeout)
			setDefault(l, q+".family", &pub.Family, FamilyIPv4)
		}
	}

	f := &c.Firewall
	setDefault(l, "firewall.backend", &f.Backend, DefaultBackend)
	setDefault(l, "firewall.iptables_variant", &f.IPTablesVariant, DefaultIPTablesVariant)
	setDefault(l, "firewall.input_policy", &f.InputPolicy, DefaultPolicy)
	setDefault(l, "firewall.forward_policy", &f.ForwardPolicy, DefaultPolicy)
	for i := range f.Deny {
		setDefault(l, fmt.Sprintf("firewall.deny[%d].action", i), &f.Deny[i].Action, DefaultDenyAction)
	}
	for i := range c.Services {
		s := &c.Services[i]
		p := fmt.Sprintf("service[%d]", i)
		setDefault(l, p+".proto", &s.Proto, DefaultServiceProto)
		setDefault(l, p+".balance", &s.Balance, DefaultBalance)
		for j := range s.Backends {
			setDefault(l, fmt.Sprintf("%s.backends[%d].weight", p, j), &s.Backends[j].Weight, DefaultBackendWeight)
		}
		// A UDP service cannot be checked by a TCP connect to its own port:
		// its check is on only when it names a TCP port to try.
		q := p + ".check"
		setDefault(l, q+".enabled", &s.Check.Enabled, s.Proto != ProtoUDP || l.set(q+".port"))
		setDefault(l, q+".interval", &s.Check.Interval, DefaultServiceInterval)
		setDefault(l, q+".timeout", &s.Check.Timeout, DefaultServiceTimeout)
		setDefault(l, q+".down", &s.Check.Down, DefaultServiceDown)
		setDefault(l, q+".up", &s.Check.Up, DefaultServiceUp)
		// Hairpin needs to know which sources are LAN clients.
		setDefault(l, p+".hairpin", &s.Hairpin, hasLAN && len(lan.Networks) > 0)
	}
}
