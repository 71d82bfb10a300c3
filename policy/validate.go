package policy

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Layer 4 of the loader (after defaults.go): the semantic checks, each
// reported at the key that is wrong.

// probeTargetForms says, per probe method, what a target must look like.
var probeTargetForms = map[ProbeMethod]struct {
	valid func(string) bool
	want  string
}{
	ProbeICMP: {isIPv4Addr, "an IPv4 address"},
	ProbeTCP:  {isHostPort, "HOST:PORT"},
	ProbeDNS:  {func(s string) bool { return isIPv4Addr(s) || isIPv4Port(s) }, "an IPv4 address or IPv4:PORT (IPv6: an address or [IPv6]:PORT)"},
	ProbeHTTP: {isHTTPURL, "an http:// or https:// URL"},
}

// NoUplinksWarning is the warning for a file without [[uplink]].
const NoUplinksWarning = "no [[uplink]]: `uplinkd run` refuses to start until one is configured"

// validate checks everything the types cannot express. Defaults are
// already applied, so it sees the values the daemon will use.
func (l *loader) validate(c *Config) {
	l.daemon(&c.Daemon)
	l.lan(c)
	l.lan6(c)
	// Mark rules and the uplinks' source rules share one priority space: the
	// kernel orders two rules of one priority by insertion, which uplinkd
	// does not control.
	priorities, tables := map[string]string{}, map[string]string{}
	l.uplinks(c, tables, priorities)
	l.rules(c, priorities)
	l.defaultedNumbers(c, tables, priorities)
	l.stickyPriorities(c, priorities)
	l.defaultRules(c, priorities)
	l.lan6MainPriority(c, priorities)
	l.firewall(c)
	l.services(c)
	l.ha(c)
	if len(c.Uplinks) == 0 && !c.Daemon.AllowNoUplinks {
		l.warnf("", "%s", NoUplinksWarning)
	}
}

// stickyPriorities checks that the per-uplink sticky rules (one priority per
// uplink from sticky_priority on) clash with no configured rule priority.
// The clash is reported where the user can fix it: at sticky_priority when
// the file sets it, else at the rule priority that falls in the range.
func (l *loader) stickyPriorities(c *Config, priorities map[string]string) {
	if len(c.Uplinks) > MaxUplinks {
		l.errorf(fmt.Sprintf("uplink[%d]", MaxUplinks), "at most %d uplinks fit in the connection mark (got %d)", MaxUplinks, len(c.Uplinks))
	}
	n := max(len(c.Uplinks), 1)
	first := c.Daemon.StickyPriority
	last := first + n - 1
	if !l.countAt("daemon.sticky_priority", first, int64(32765-n+1)) {
		return
	}
	for p := first; p <= last; p++ {
		at, ok := priorities[strconv.Itoa(p)]
		if !ok {
			continue
		}
		if l.set("daemon.sticky_priority") {
			l.errorf("daemon.sticky_priority", "the sticky connection rules use priorities %d..%d (sticky_priority), which clashes with rule priority %d at line %d",
				first, last, p, l.line(at))
		} else {
			l.errorf(at, "priority %d clashes with the sticky connection rules, which use priorities %d..%d (set [daemon] sticky_priority to move them)",
				p, first, last)
		}
		return
	}
}

func (l *loader) daemon(d *Daemon) {
	l.absPath("daemon.control_socket", d.ControlSocket)
	l.absPath("daemon.state_dir", d.StateDir)
	l.absPath("daemon.hook_dir", d.HookDir)
	if d.MetricsListen != "" && !isListenAddr(d.MetricsListen) {
		l.errorf("daemon.metrics_listen", "metrics_listen must be HOST:PORT or :PORT, or empty to disable (got %q)", d.MetricsListen)
	}
	enum(l, "daemon.log_level", d.LogLevel, LogDebug, LogInfo, LogWarn, LogError)
	enum(l, "daemon.last_resort", d.LastResort, LastResortLink, LastResortNone)
	l.duration("daemon.min_sync_interval", d.MinSyncInterval)
}

// isListenAddr accepts HOST:PORT and :PORT (every address).
func isListenAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	return err == nil && perr == nil && p >= 1 && p <= 65535
}

func (l *loader) lan(c *Config) {
	lan := &c.LAN
	l.iface("lan.interface", lan.Interface)
	if len(c.Uplinks) == 0 && l.set("lan") && !c.Daemon.AllowNoUplinks {
		l.errorf("lan", "[lan] without any [[uplink]]: there is nothing to route the LAN to")
	}
	if lan.Interface == "" && l.set("lan.masquerade") {
		l.errorf("lan.masquerade", "masquerade needs [lan] interface: without it uplinkd does not know which traffic is the LAN's")
	}
	for i, n := range lan.Networks {
		p := fmt.Sprintf("lan.networks[%d]", i)
		switch a := n.Masked().Addr(); {
		case l.bare[p]:
			l.errorf(p, "networks[%d] must be an IPv4 prefix such as \"10.0.0.0/24\" (got %q)", i, n.Addr())
		case n.Bits() < 8 || a.As4()[0] == 0 || a.IsLoopback() || a.IsMulticast() || a.As4()[0] >= 240:
			l.errorf(p, "networks[%d] must be %s (got %s)", i, limitOf("lan.networks[]").RangeText(), n)
		}
	}
	if lan.DHCP == nil {
		return
	}
	d := lan.DHCP
	// An unknown mode is reported, and the embedded keys still checked.
	modeOK := enum(l, "lan.dhcp.mode", d.Mode, DHCPEmbedded, DHCPService, DHCPOff)
	// Keys of another mode would be silently ignored: they are errors.
	embeddedKeys := []string{"range", "hosts", "lease", "max_lease", "router", "dns", "ntp", "domain", "conflict_check"}
	serviceKeys := []string{"unit", "command", "restart_interval"}
	var foreign []string
	switch d.Mode {
	case DHCPOff:
		foreign = append(embeddedKeys, serviceKeys...)
	case DHCPEmbedded:
		foreign = serviceKeys
	case DHCPService:
		foreign = embeddedKeys
	}
	for _, k := range foreign {
		if modeOK && l.set("lan.dhcp."+k) {
			l.errorf("lan.dhcp."+k, "%s does not apply to mode %s", k, d.Mode)
		}
	}
	if modeOK && d.Mode != DHCPOff && lan.Interface == "" {
		l.errorf("lan.dhcp.mode", "mode %s needs [lan] interface", d.Mode)
	}
	if d.Mode == DHCPService {
		if (d.Unit == "") == (len(d.Command) == 0) {
			l.errorf("lan.dhcp.mode", "mode service needs exactly one of unit or command")
		}
		l.argv("lan.dhcp.command", d.Command, false)
		l.length("lan.dhcp.unit", "", d.Unit)
		l.duration("lan.dhcp.restart_interval", d.RestartInterval)
	}
	if modeOK && d.Mode != DHCPEmbedded {
		return
	}
	if modeOK {
		l.required("lan.dhcp.range", l.set("lan.dhcp.range"))
	}
	if l.set("lan.dhcp.range") {
		switch {
		case len(d.Range) != 2:
			l.errorf("lan.dhcp.range", "range must be two IPv4 addresses, first and last (got %d)", len(d.Range))
		case !d.Range[0].IsValid() || !d.Range[1].IsValid():
			l.errorf("lan.dhcp.range", "range must be two IPv4 addresses, first and last")
		case d.Range[0].Compare(d.Range[1]) > 0:
			l.errorf("lan.dhcp.range", "range starts after it ends (%s > %s)", d.Range[0], d.Range[1])
		case len(lan.Networks) > 0 && !slices.ContainsFunc(lan.Networks, func(p netip.Prefix) bool {
			return p.Masked().Contains(d.Range[0]) && p.Masked().Contains(d.Range[1])
		}):
			l.errorf("lan.dhcp.range", "range %s..%s is not inside one of lan.networks", d.Range[0], d.Range[1])
		case ipv4Num(d.Range[1])-ipv4Num(d.Range[0]) >= 1<<16:
			l.errorf("lan.dhcp.range", "range %s..%s holds %d addresses, at most 65536 fit in the pool", d.Range[0], d.Range[1], ipv4Num(d.Range[1])-ipv4Num(d.Range[0])+1)
		default:
			for i, a := range d.Range {
				if n, edge := subnetEdge(lan.Networks, a); edge {
					l.errorf(fmt.Sprintf("lan.dhcp.range[%d]", i), "range includes %s, the network or broadcast address of %s: no client can use it", a, n)
				}
			}
		}
	}
	names, macs, ips := map[string]string{}, map[string]string{}, map[string]string{}
	for i := range d.Hosts {
		h := &d.Hosts[i]
		p := fmt.Sprintf("lan.dhcp.hosts[%d]", i)
		if h.Name != "" && l.name(p+".name", h.Name) {
			l.unique(names, h.Name, p+".name", fmt.Sprintf("host name %q", h.Name))
		}
		if l.required(p+".mac", h.MAC != "") {
			if mac, ok := canonicalMAC(h.MAC); ok {
				h.MAC = mac
				l.unique(macs, mac, p+".mac", "host mac "+mac)
			} else {
				l.errorf(p+".mac", "mac must be a MAC address such as \"dc:a6:32:90:31:cc\" (got %q)", h.MAC)
			}
		}
		if l.required(p+".ip", h.IP.IsValid()) && l.unicast(p+".ip", h.IP) {
			l.unique(ips, h.IP.String(), p+".ip", fmt.Sprintf("host ip %s", h.IP))
		}
	}
	l.duration("lan.dhcp.lease", d.Lease)
	l.duration("lan.dhcp.max_lease", d.MaxLease)
	if d.MaxLease > 0 && d.MaxLease < d.Lease {
		l.errorf("lan.dhcp.max_lease", "max_lease %s is shorter than lease %s", d.MaxLease, d.Lease)
	}
	for _, k := range []struct {
		key   string
		addrs []netip.Addr
	}{{"router", d.Router}, {"dns", d.DNS}, {"ntp", d.NTP}} {
		for i, a := range k.addrs {
			if !a.Is4() {
				l.errorf(fmt.Sprintf("lan.dhcp.%s[%d]", k.key, i), "%s[%d] must be an IPv4 address (got %s)", k.key, i, a)
			} else {
				l.unicast(fmt.Sprintf("lan.dhcp.%s[%d]", k.key, i), a)
			}
		}
	}
	if d.Domain != "" && l.length("lan.dhcp.domain", "", d.Domain) && !domainRE.MatchString(d.Domain) {
		l.errorf("lan.dhcp.domain", "domain %q is not a domain name", d.Domain)
	}
	for i, h := range d.Hosts {
		if h.IP.IsValid() && len(lan.Networks) > 0 && !slices.ContainsFunc(lan.Networks, func(p netip.Prefix) bool { return p.Masked().Contains(h.IP) }) {
			l.errorf(fmt.Sprintf("lan.dhcp.hosts[%d].ip", i), "host ip %s is not inside one of lan.networks", h.IP)
		}
	}
}

// domainRE is a DNS domain name: dot-separated labels of letters, digits
// and inner hyphens.
var domainRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func (l *loader) uplinks(c *Config, tables, priorities map[string]string) {
	names, ifaces := map[string]string{}, map[string]string{}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		p := fmt.Sprintf("uplink[%d]", i)
		if l.required(p+".name", u.Name != "") && l.name(p+".name", u.Name) {
			l.unique(names, u.Name, p+".name", fmt.Sprintf("uplink name %q", u.Name))
		}
		l.unicast(p+".gateway", u.Gateway)
		l.ipv6(p, u)
		l.delegatedPrefix(c, i)
		switch {
		case u.Interface != "":
			l.iface(p+".interface", u.Interface)
			l.unique(ifaces, u.Interface, p+".interface", fmt.Sprintf("interface %q", u.Interface))
			if u.Interface == c.LAN.Interface {
				l.errorf(p+".interface", "interface %q is the [lan] interface: an uplink is a way out, not the LAN", u.Interface)
			}
		case l.set(p + ".interface"):
			l.errorf(p+".interface", "interface must not be empty")
		}
		enum(l, p+".kind", u.Kind, KindPPP, KindWLAN, KindEthernet)
		// Explicit numbers first; the defaulted ones are checked against
		// all of them in defaultedNumbers.
		if !u.TableDefaulted && u.Table != 0 {
			l.unique(tables, strconv.Itoa(u.Table), p+".table", fmt.Sprintf("table %d", u.Table))
		}
		if !u.RulePriorityDefaulted && l.count(p+".rule_priority", u.RulePriority) {
			l.unique(priorities, strconv.Itoa(u.RulePriority), p+".rule_priority", fmt.Sprintf("rule priority %d", u.RulePriority))
		}
		enum(l, p+".snat", u.SNAT, SNATSNAT, SNATMasquerade, SNATOff)
		l.count(p+".tier", u.Tier)
		l.count(p+".weight", u.Weight)
		enum(l, p+".rp_filter", u.RPFilter, RPFilterOff, RPFilterLoose, RPFilterStrict)
		if u.Check != nil {
			l.check(p+".check", u.Check, u.IPv6)
		}
		if u.Reconnect != nil {
			l.reconnect(p+".reconnect", u.Reconnect, u.Kind)
		}
		if u.Firewall != nil {
			l.uplinkFirewall(p+".firewall", u.Firewall)
		}
		pubNames := map[string]string{}
		for j := range u.Publish {
			q := fmt.Sprintf("%s.publish[%d]", p, j)
			l.publish(q, &u.Publish[j])
			if u.Publish[j].Family == FamilyIPv6 && !u.IPv6 {
				l.errorf(q+".family", "family = %q publishes the uplink's IPv6 address and needs ipv6 = true on the uplink", FamilyIPv6)
			}
			if u.Publish[j].Name != "" && l.name(q+".name", u.Publish[j].Name) {
				l.unique(pubNames, u.Publish[j].Name, q+".name", fmt.Sprintf("publish name %q", u.Publish[j].Name))
			}
		}
		for j, h := range u.Hooks {
			l.hook(fmt.Sprintf("%s.hook[%d]", p, j), h, u.IPv6)
		}
	}
}

// ipv6 checks the uplink's IPv6 keys: gateway6 only with ipv6 on, and a
// next hop the kernel accepts (unicast: link-local, unique local or global).
func (l *loader) ipv6(p string, u *Uplink) {
	if !u.Gateway6.IsValid() {
		return
	}
	if !u.IPv6 {
		l.errorf(p+".gateway6", "gateway6 needs ipv6 = true on the uplink")
		return
	}
	if !u.Gateway6.IsGlobalUnicast() && !u.Gateway6.IsLinkLocalUnicast() {
		l.errorf(p+".gateway6", "gateway6 must be a link-local or global unicast address, not %s", u.Gateway6)
	}
}

// delegatedPrefix checks uplink i's static delegation: only where it is
// used (ipv6 on, [lan.ipv6] mode prefix or npt), at most a /64 (the LAN
// needs one), unicast, not another uplink's, and large enough for the
// [lan.ipv6] subnet in mode npt.
func (l *loader) delegatedPrefix(c *Config, i int) {
	u := &c.Uplinks[i]
	d := u.DelegatedPrefix
	if !d.IsValid() {
		return
	}
	p := fmt.Sprintf("uplink[%d].delegated_prefix", i)
	mode := c.LAN.IPv6.Mode
	switch {
	case !u.IPv6:
		l.errorf(p, "delegated_prefix needs ipv6 = true on the uplink")
	case mode == LAN6Off:
		l.errorf(p, "delegated_prefix needs [lan.ipv6] mode prefix or npt: with mode %s nothing uses it", mode)
	case d.Bits() > 64 || d.Bits() == 0:
		l.errorf(p, "delegated_prefix %s is longer than /64 (or is ::/0): a LAN needs a whole /64", d)
	case !d.Addr().IsGlobalUnicast() || d.Addr().IsLinkLocalUnicast():
		l.errorf(p, "delegated_prefix %s must be global unicast or unique local", d)
	case (mode == LAN6NPT || c.LAN.IPv6.Announce) && !lanSubnetFits(d, c.LAN.IPv6.Subnet):
		l.errorf(p, "delegated_prefix %s holds %d /64s: [lan.ipv6] subnet %d is not one of them", d, uint64(1)<<(64-d.Bits()), c.LAN.IPv6.Subnet)
	default:
		for j, o := range c.Uplinks[:i] {
			if o.DelegatedPrefix.IsValid() && o.DelegatedPrefix.Overlaps(d) {
				l.errorf(p, "delegated_prefix %s overlaps uplink[%d] %q's %s", d, j, o.Name, o.DelegatedPrefix)
				return
			}
		}
		if in := c.LAN.IPv6.Prefix; in.IsValid() && in.Overlaps(d) {
			l.errorf(p, "delegated_prefix %s overlaps [lan.ipv6] prefix %s: the inside prefix would be rewritten into itself", d, in)
		}
	}
}

// lan6 checks [lan.ipv6]: the keys of its mode only, a /64 inside prefix
// in mode npt, and an uplink with ipv6 on to route the LAN to.
func (l *loader) lan6(c *Config) {
	v := &c.LAN.IPv6
	if !enum(l, "lan.ipv6.mode", v.Mode, LAN6Off, LAN6Prefix, LAN6NPT) {
		return
	}
	if v.Mode != LAN6NPT {
		for _, k := range []string{"prefix", "subnet"} {
			// Mode prefix announces the subnet-th /64 of each delegation.
			if k == "subnet" && v.Mode == LAN6Prefix {
				if v.Announce {
					l.count("lan.ipv6.subnet", v.Subnet)
				} else if l.set("lan.ipv6.subnet") {
					l.errorf("lan.ipv6.subnet", "subnet applies to mode npt, or to mode prefix with announce = true")
				}
				continue
			}
			if l.set("lan.ipv6." + k) {
				l.errorf("lan.ipv6."+k, "%s applies to mode npt only (mode is %s)", k, v.Mode)
			}
		}
	}
	if v.Mode == LAN6Off {
		for _, k := range []string{"announce", "rdnss", "dnssl", "min_interval", "max_interval", "router_lifetime", "router_preference"} {
			if l.set("lan.ipv6." + k) {
				l.errorf("lan.ipv6."+k, "%s needs [lan.ipv6] mode prefix or npt (mode is off)", k)
			}
		}
		return
	}
	l.announce(c)
	if len(c.Uplinks) > 0 && !c.IPv6On() {
		l.errorf("lan.ipv6.mode", "mode %s needs an [[uplink]] with ipv6 = true", v.Mode)
	}
	if v.Mode != LAN6NPT {
		return
	}
	l.count("lan.ipv6.subnet", v.Subnet)
	if !l.required("lan.ipv6.prefix", v.Prefix.IsValid()) {
		return
	}
	switch a := v.Prefix.Addr(); {
	case v.Prefix.Bits() != 64:
		l.errorf("lan.ipv6.prefix", "prefix %s must be a /64: NPTv6 rewrites the network part of a /64 and keeps the interface identifier", v.Prefix)
	case !a.IsGlobalUnicast() || a.IsLinkLocalUnicast():
		l.errorf("lan.ipv6.prefix", "prefix %s must be unique local (fd00::/8) or global unicast", v.Prefix)
	}
}

// announce checks the router advertisement keys of [lan.ipv6]: only with
// announce on, a LAN interface to send on, and the RFC 4861 6.2.1 bounds
// between the intervals and the router lifetime.
func (l *loader) announce(c *Config) {
	v := &c.LAN.IPv6
	if !v.Announce {
		for _, k := range []string{"rdnss", "dnssl", "min_interval", "max_interval", "router_lifetime", "router_preference"} {
			if l.set("lan.ipv6." + k) {
				l.errorf("lan.ipv6."+k, "%s applies only with announce = true", k)
			}
		}
		return
	}
	if c.LAN.Interface == "" {
		l.errorf("lan.ipv6.announce", "announce needs [lan] interface: the advertisements leave on it")
	}
	enum(l, "lan.ipv6.router_preference", v.RouterPreference, PreferenceLow, PreferenceMedium, PreferenceHigh)
	if l.count("lan.ipv6.rdnss", len(v.RDNSS)) {
		for i, a := range v.RDNSS {
			if p := fmt.Sprintf("lan.ipv6.rdnss[%d]", i); !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast() {
				l.errorf(p, "rdnss[%d] must be a unicast IPv6 address (got %s)", i, a)
			}
		}
	}
	if l.count("lan.ipv6.dnssl", len(v.DNSSL)) {
		for i, d := range v.DNSSL {
			p := fmt.Sprintf("lan.ipv6.dnssl[%d]", i)
			if l.length(p, "", d) && !domainRE.MatchString(d) {
				l.errorf(p, "dnssl[%d] %q is not a domain name", i, d)
			}
		}
	}
	okMax := l.duration("lan.ipv6.max_interval", v.MaxInterval)
	if l.duration("lan.ipv6.min_interval", v.MinInterval) && okMax && v.MinInterval > v.MaxInterval*3/4 {
		l.errorf("lan.ipv6.min_interval", "min_interval %s is more than 3/4 of max_interval %s (RFC 4861 6.2.1)", v.MinInterval, v.MaxInterval)
	}
	if l.duration("lan.ipv6.router_lifetime", v.RouterLifetime) && okMax && v.RouterLifetime < v.MaxInterval {
		l.errorf("lan.ipv6.router_lifetime", "router_lifetime %s is shorter than max_interval %s: hosts would drop the router between two advertisements (RFC 4861 6.2.1)", v.RouterLifetime, v.MaxInterval)
	}
}

func (l *loader) check(p string, c *Check, ipv6 bool) {
	enum(l, p+".method", c.Method, ProbeICMP, ProbeTCP, ProbeDNS, ProbeHTTP)
	if l.required(p+".targets", len(c.Targets) > 0) {
		l.count(p+".targets", len(c.Targets))
	}
	if form, ok := probeTargetForms[c.Method]; ok {
		for i, t := range c.Targets {
			q := fmt.Sprintf("%s.targets[%d]", p, i)
			if !l.length(q, "", t) {
				continue
			}
			if a, ok := ProbeTargetAddr(c.Method, t); ok && a.Is6() && !a.Is4In6() {
				// An IPv6 target is an IPv6 health probe (docs/ipv6.md).
				switch {
				case !ipv6:
					l.errorf(q, "targets[%d] is an IPv6 address (%s) but the uplink has ipv6 off; set ipv6 = true or use an IPv4 target", i, a)
				case !a.IsGlobalUnicast() || a.Zone() != "":
					l.errorf(q, "targets[%d] must be a global unicast IPv6 address without a zone (got %q)", i, t)
				}
				continue
			}
			if a, err := netip.ParseAddr(t); err == nil && !isUnicast(a) {
				l.unicast(q, a)
				continue
			}
			if !form.valid(t) {
				l.errorf(fmt.Sprintf("%s.targets[%d]", p, i), "targets[%d] must be %s for method %q (got %q)", i, form.want, c.Method, t)
			}
		}
	}
	l.duration(p+".interval", c.Interval)
	l.duration(p+".timeout", c.Timeout)
	if c.Timeout > c.Interval {
		// Point at what the user wrote: a default timeout is not the mistake.
		at := p + ".timeout"
		if !l.set(at) {
			at = p + ".interval"
		}
		l.errorf(at, "timeout %s must not exceed interval %s", c.Timeout, c.Interval)
	}
	l.countAt(p+".reliability", c.Reliability, int64(max(len(c.Targets), 1)))
	l.count(p+".down", c.Down)
	l.count(p+".retries", c.Retries)
	l.count(p+".up", c.Up)
	// 0s is allowed: fail back at once.
	l.duration(p+".hold_down", c.HoldDown)
	if !(c.MaxLoss >= 0 && c.MaxLoss <= 1) {
		l.errorf(p+".max_loss", "max_loss must be between 0 and 1 (got %v)", c.MaxLoss)
	}
	if l.set(p + ".max_latency") {
		l.duration(p+".max_latency", c.MaxLatency)
	}
	l.degradedCheck(p, c)
	if l.duration(p+".traffic_window", c.TrafficWindow) && c.TrafficWindow > c.Interval && (c.TrafficTrigger || l.set(p+".traffic_window")) {
		at := p + ".traffic_window"
		if !l.set(at) {
			at = p + ".interval"
		}
		l.errorf(at, "traffic_window %s must not exceed interval %s", c.TrafficWindow, c.Interval)
	}
}

// degradedCheck validates the degraded level's keys (warn_loss,
// warn_latency, degraded, degraded_weight): a warning threshold sits below
// the matching failure threshold, and the action keys do nothing without a
// warning threshold, so they are refused there.
func (l *loader) degradedCheck(p string, c *Check) {
	if !(c.WarnLoss >= 0 && c.WarnLoss <= 1) {
		l.errorf(p+".warn_loss", "warn_loss must be between 0 and 1 (got %v)", c.WarnLoss)
	} else if l.set(p+".warn_loss") && c.MaxLoss < 1 && c.WarnLoss >= c.MaxLoss {
		l.errorf(p+".warn_loss", "warn_loss %v must be below max_loss %v: an uplink is degraded before it fails", c.WarnLoss, c.MaxLoss)
	}
	if l.set(p+".warn_latency") && l.duration(p+".warn_latency", c.WarnLatency) && c.MaxLatency > 0 && c.WarnLatency >= c.MaxLatency {
		l.errorf(p+".warn_latency", "warn_latency %s must be below max_latency %s: an uplink is degraded before it fails", c.WarnLatency, c.MaxLatency)
	}
	enum(l, p+".degraded", c.Degraded, DegradedLowerWeight, DegradedLeave)
	l.count(p+".degraded_weight", c.DegradedWeight)
	if !c.Warns() {
		for _, k := range []string{"degraded", "degraded_weight"} {
			if l.set(p + "." + k) {
				l.errorf(p+"."+k, "%s does nothing without warn_loss or warn_latency: set one of them, or remove %s", k, k)
			}
		}
	} else if c.Degraded == DegradedLeave && l.set(p+".degraded_weight") {
		l.errorf(p+".degraded_weight", "degraded_weight does nothing with degraded = %q: a degraded uplink leaves the default route", DegradedLeave)
	}
}

func (l *loader) reconnect(p string, r *Reconnect, kind Kind) {
	if r.Peer != "" && kind != KindPPP {
		l.errorf(p+".peer", "peer is only used by kind %q; set command instead", KindPPP)
	}
	l.argv(p+".command", r.Command, false)
	l.argv(p+".stop_command", r.StopCommand, false)
	l.duration(p+".reconnect_after", r.ReconnectAfter)
	l.duration(p+".backoff", r.Backoff)
	l.duration(p+".max_backoff", r.MaxBackoff)
	if r.MaxBackoff < r.Backoff {
		l.errorf(p+".max_backoff", "max_backoff %s must not be less than backoff %s", r.MaxBackoff, r.Backoff)
	}
	l.duration(p+".timeout", r.Timeout)
	l.duration(p+".dial_timeout", r.DialTimeout)
}

// limitDay is the longest unit both firewall backends can express a rate in;
// a window they can express exactly divides it.
const limitDay = 24 * 60 * 60

func (l *loader) uplinkFirewall(p string, f *UplinkFirewall) {
	for i, a := range f.Allow {
		q := fmt.Sprintf("%s.allow[%d]", p, i)
		if l.required(q+".proto", a.Proto != "") {
			enum(l, q+".proto", a.Proto, ProtoTCP, ProtoUDP, ProtoSCTP)
		}
		l.required(q+".ports", len(a.Ports) > 0)
		l.ports(q+".ports", a.Ports)
	}
	for i, lim := range f.Limit {
		q := fmt.Sprintf("%s.limit[%d]", p, i)
		if l.required(q+".proto", lim.Proto != "") {
			enum(l, q+".proto", lim.Proto, ProtoTCP, ProtoUDP, ProtoSCTP)
		}
		if l.required(q+".port", l.set(q+".port")) && lim.Port == 0 {
			l.errorf(q+".port", "port must be 1..65535 (got 0)")
		}
		l.limitWindow(q, lim.Hits, lim.Seconds)
	}
}

// limitWindow checks the hits and seconds of a per-source limit (in
// [uplink.firewall] and [[service]]), which both firewall backends must
// express exactly.
func (l *loader) limitWindow(q string, hits, seconds int) {
	if l.required(q+".hits", l.set(q+".hits")) {
		l.count(q+".hits", hits)
	}
	if l.required(q+".seconds", l.set(q+".seconds")) && l.count(q+".seconds", seconds) {
		if limitDay%seconds != 0 {
			l.errorf(q+".seconds", "seconds = %d cannot be enforced exactly: nftables and iptables hashlimit count a rate per second, minute, hour or day, so the window must divide 86400 (nearest: %s)",
				seconds, nearestDivisors(seconds))
		}
	}
}

// nearestDivisors names the windows next to s that divide a day.
func nearestDivisors(s int) string {
	if s > limitDay {
		return strconv.Itoa(limitDay)
	}
	lo, hi := s, s
	for limitDay%lo != 0 {
		lo--
	}
	for limitDay%hi != 0 {
		hi++
	}
	return fmt.Sprintf("%d or %d", lo, hi)
}

// publishKeys lists, per kind, the keys beyond name, kind, settle,
// min_interval, refresh and timeout that a [[uplink.publish]] may set.
var publishKeys = map[PublishKind][]string{
	PublishCommand: {"command"},
	PublishDynDNS2: {"server", "hostname", "username", "password_file", "ca_file"},
	PublishRFC2136: {"server", "hostname", "zone", "key_file", "ttl"},
}

var publishKindKeys = []string{"command", "server", "hostname", "username", "password_file", "ca_file", "zone", "key_file", "ttl"}

func (l *loader) publish(p string, pub *Publish) {
	if !l.required(p+".kind", pub.Kind != "") || !enum(l, p+".kind", pub.Kind, PublishCommand, PublishDynDNS2, PublishRFC2136) {
		return
	}
	for _, k := range publishKindKeys {
		if l.set(p+"."+k) && !slices.Contains(publishKeys[pub.Kind], k) {
			l.errorf(p+"."+k, "%s does not apply to kind %q", k, pub.Kind)
		}
	}
	switch pub.Kind {
	case PublishCommand:
		l.argv(p+".command", pub.Command, true)
	case PublishDynDNS2:
		if l.required(p+".server", pub.Server != "") {
			if u, err := parseHTTPURL(pub.Server); err != nil {
				l.errorf(p+".server", "server must be an http:// or https:// URL (got %q)", pub.Server)
			} else {
				pub.URL = u
			}
		}
		l.fqdn(p+".hostname", &pub.Hostname, true)
		if l.required(p+".username", pub.Username != "") {
			l.length(p+".username", "", pub.Username)
		}
		l.required(p+".password_file", pub.PasswordFile != "")
		l.absPath(p+".password_file", pub.PasswordFile)
		l.absPath(p+".ca_file", pub.CAFile)
	case PublishRFC2136:
		if l.required(p+".server", pub.Server != "") {
			if addr, ok := dnsServerAddr(pub.Server); ok {
				pub.ServerAddr = addr
			} else {
				l.errorf(p+".server", "server must be HOST or HOST:PORT (got %q)", pub.Server)
			}
		}
		host := l.fqdn(p+".hostname", &pub.Hostname, true)
		if zone := l.fqdn(p+".zone", &pub.Zone, true); host && zone &&
			!strings.EqualFold(pub.Hostname, pub.Zone) && !strings.HasSuffix(strings.ToLower(pub.Hostname), "."+strings.ToLower(pub.Zone)) {
			l.errorf(p+".hostname", "hostname %q is not in zone %q", pub.Hostname, pub.Zone)
		}
		l.required(p+".key_file", pub.KeyFile != "")
		l.absPath(p+".key_file", pub.KeyFile)
		l.duration(p+".ttl", pub.TTL)
		if pub.TTL%1e9 != 0 {
			l.errorf(p+".ttl", "ttl must be whole seconds (got %s)", pub.TTL)
		}
	}
	l.duration(p+".settle", pub.Settle)
	l.duration(p+".min_interval", pub.MinInterval)
	l.duration(p+".refresh", pub.Refresh) // 0: never refresh
	l.duration(p+".timeout", pub.Timeout)
	enum(l, p+".family", pub.Family, FamilyIPv4, FamilyIPv6)
}

// fqdn checks a required DNS name and stores it without a trailing dot.
func (l *loader) fqdn(path string, v *string, need bool) bool {
	if need && !l.required(path, *v != "") {
		return false
	}
	if !isFQDN(*v) {
		l.errorf(path, "%s must be a fully qualified domain name such as \"home.example.net\" (got %q)", pathKey(path), *v)
		return false
	}
	*v = strings.TrimSuffix(*v, ".")
	return true
}

func (l *loader) hook(p string, h Hook, ipv6 bool) {
	l.required(p+".on", len(h.On) > 0)
	for i, ev := range h.On {
		q := fmt.Sprintf("%s.on[%d]", p, i)
		if enum(l, q, ev, HookEvents...) && !ipv6 && (ev == "probe6-down" || ev == "probe6-up") {
			// It could never run: only an uplink with ipv6 on has IPv6 health.
			l.errorf(q, "on[%d] = %q is the uplink's IPv6 health and needs ipv6 = true on the uplink", i, ev)
		}
	}
	l.argv(p+".command", h.Command, true)
	if l.set(p + ".timeout") {
		l.duration(p+".timeout", h.Timeout)
	}
}

func (l *loader) rules(c *Config, priorities map[string]string) {
	names, marks := map[string]string{}, map[uint32]int{}
	uplinkIface := map[string]string{}
	for _, u := range c.Uplinks {
		uplinkIface[u.Interface] = u.Name
	}
	for i, r := range c.Rules {
		p := fmt.Sprintf("rule[%d]", i)
		if l.required(p+".name", r.Name != "") && l.name(p+".name", r.Name) {
			l.unique(names, r.Name, p+".name", fmt.Sprintf("rule name %q", r.Name))
		}
		if l.required(p+".uplink", r.Uplink != "") && c.UplinkByName(r.Uplink) == nil {
			l.errorf(p+".uplink", "unknown uplink %q", r.Uplink)
		}
		if l.required(p+".mark", l.set(p+".mark")) {
			j, seen := marks[r.Mark]
			switch {
			case r.Mark == 0:
				l.errorf(p+".mark", "mark must not be 0 (unmarked traffic has mark 0)")
			case r.Mark > UserMarkMask:
				// fwmark M/0xffff with M above the mask would match every
				// packet whose low bits equal M's (65536: every unmarked one).
				l.errorf(p+".mark", "mark must be 1..%d: rule marks live in the low 16 bits of the packet mark (got %d)", UserMarkMask, r.Mark)
			case !seen:
				marks[r.Mark] = i
			case c.Rules[j].Uplink != r.Uplink:
				l.errorf(p+".mark", "mark %d already sends traffic via uplink %q (rule %q)", r.Mark, c.Rules[j].Uplink, c.Rules[j].Name)
			}
		}
		if l.required(p+".priority", l.set(p+".priority")) && l.count(p+".priority", r.Priority) {
			l.unique(priorities, strconv.Itoa(r.Priority), p+".priority", fmt.Sprintf("rule priority %d", r.Priority))
		}
		if r.Proto != "" || l.set(p+".proto") {
			enum(l, p+".proto", r.Proto, ProtoTCP, ProtoUDP)
		} else if len(r.Ports) > 0 {
			l.errorf(p+".ports", "ports need proto = \"tcp\" or \"udp\"")
		}
		l.ports(p+".ports", r.Ports)
		if l.set(p+".uid") && l.set(p+".user") {
			l.errorf(p+".user", "set uid or user, not both")
		}
		l.iface(p+".in_interface", r.InIface)
		if r.InIface != "" {
			local := ""
			for _, k := range []string{"uid", "user", "gid"} {
				if l.set(p + "." + k) {
					local = k
					break
				}
			}
			if local != "" {
				l.errorf(p+".in_interface", "in_interface (forwarded traffic) and %s (the host's own traffic) never match together", local)
			} else if name, ok := uplinkIface[r.InIface]; ok {
				// Traffic arriving from an uplink is never marked: its
				// replies would be routed by an uplink table.
				l.errorf(p+".in_interface", "in_interface %q is uplink %q: only traffic from the LAN can be routed by mark", r.InIface, name)
			}
		}
	}
}

func (l *loader) firewall(c *Config) {
	f := &c.Firewall
	enum(l, "firewall.backend", f.Backend, BackendNFTables, BackendIPTables)
	enum(l, "firewall.iptables_variant", f.IPTablesVariant, IPTablesAuto, IPTablesLegacy, IPTablesNFT)
	enum(l, "firewall.input_policy", f.InputPolicy, PolicyAccept, PolicyDrop)
	enum(l, "firewall.forward_policy", f.ForwardPolicy, PolicyAccept, PolicyDrop)
	if f.ForwardPolicy == PolicyDrop && f.Backend == BackendIPTables && c.LAN.IPv6.Mode == LAN6NPT {
		// ip6tables' NPT is stateless and runs after connection tracking:
		// the replies to the outside /64 never match the LAN host's
		// connection, so a stateful forward drop would drop every one.
		l.errorf("firewall.forward_policy", "forward_policy = \"drop\" with backend = \"iptables\" and [lan.ipv6] mode npt would drop every IPv6 reply to the LAN (ip6tables' NPT is stateless: connection tracking sees the replies as new); use the nftables backend")
	}
	for i := range f.Deny {
		d := &f.Deny[i]
		p := fmt.Sprintf("firewall.deny[%d]", i)
		if !l.set(p+".source") && d.MAC == "" {
			l.errorf(p, "deny needs a source or a mac")
		}
		switch {
		case d.Source.IsValid() && d.Source.Addr().Is6():
			l.denySource6(p+".source", d.Source, c)
		case d.Source.IsValid():
			l.denySource(p+".source", d.Source, c.LAN.Networks)
		}
		if d.MAC != "" {
			if mac, ok := canonicalMAC(d.MAC); ok {
				d.MAC = mac
			} else {
				l.errorf(p+".mac", "mac must be a MAC address such as \"dc:a6:32:90:31:cc\" (got %q)", d.MAC)
			}
		}
		enum(l, p+".action", d.Action, DenyReject, DenyDrop)
	}
}

func (l *loader) services(c *Config) {
	names, ports := map[string]string{}, map[string]string{}
	for i := range c.Services {
		s := &c.Services[i]
		p := fmt.Sprintf("service[%d]", i)
		if l.required(p+".name", s.Name != "") && l.name(p+".name", s.Name) {
			l.unique(names, s.Name, p+".name", fmt.Sprintf("service name %q", s.Name))
		}
		l.required(p+".uplinks", len(s.Uplinks) > 0)
		protoOK := enum(l, p+".proto", s.Proto, ProtoTCP, ProtoUDP)
		portOK := false
		if l.required(p+".port", l.set(p+".port")) {
			if portOK = s.Port != 0; !portOK {
				l.errorf(p+".port", "port must be 1..65535 (got 0)")
			}
		}
		for j, u := range s.Uplinks {
			q := fmt.Sprintf("%s.uplinks[%d]", p, j)
			if c.UplinkByName(u) == nil {
				l.errorf(q, "unknown uplink %q", u)
			} else if protoOK && portOK {
				l.unique(ports, fmt.Sprintf("%s/%s/%d", u, s.Proto, s.Port), q, fmt.Sprintf("service on uplink %q %s port %d", u, s.Proto, s.Port))
			}
		}
		l.serviceBackends(c, p, s)
		enum(l, p+".balance", s.Balance, BalanceWeighted, BalanceSourceHash)
		l.serviceCheck(p+".check", s)
		if s.Limit != nil {
			l.limitWindow(p+".limit", s.Limit.Hits, s.Limit.Seconds)
		}
		if s.Hairpin && (c.LAN.Interface == "" || len(c.LAN.Networks) == 0) {
			l.errorf(p+".hairpin", "hairpin needs [lan] interface and networks: only connections from the LAN networks are hairpinned")
		}
	}
}

func (l *loader) serviceBackends(c *Config, p string, s *Service) {
	if !l.required(p+".backends", len(s.Backends) > 0) {
		return
	}
	seen := map[string]string{}
	weights := make([]int, 0, len(s.Backends))
	for j, b := range s.Backends {
		q := fmt.Sprintf("%s.backends[%d]", p, j)
		if !b.Address.IsValid() {
			if !l.set(q + ".address") {
				// A malformed address was reported by decode.
				l.errorf(q, "missing \"address\" in backends[%d]", j)
			}
			continue
		}
		l.unique(seen, b.Address.String(), q, fmt.Sprintf("backend %s", b.Address))
		l.unicast(q+".address", b.Address.Addr())
		if nets := c.LAN.Networks; len(nets) > 0 && !slices.ContainsFunc(nets, func(n netip.Prefix) bool { return n.Masked().Contains(b.Address.Addr()) }) {
			l.errorf(q+".address", "backend %s is not inside [lan] networks", b.Address)
		}
		if l.count(q+".weight", b.Weight) {
			weights = append(weights, b.Weight)
		}
	}
	if s.Balance == BalanceSourceHash && len(weights) == len(s.Backends) {
		if n := SourceHashSlots(weights); n > MaxSourceHashSlots {
			l.errorf(p+".backends", "source-hash spreads clients over the weights divided by their common divisor, at most %d slots (got %d): use smaller weights", MaxSourceHashSlots, n)
		}
	}
}

// SourceHashSlots is how many hash buckets a source-hash service with these
// weights needs: their sum divided by their greatest common divisor.
func SourceHashSlots(weights []int) int {
	g, sum := 0, 0
	for _, w := range weights {
		g = gcd(g, w)
		sum += w
	}
	if g == 0 {
		return 0
	}
	return sum / g
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (l *loader) serviceCheck(p string, s *Service) {
	ch := &s.Check
	if s.Proto == ProtoUDP && ch.Enabled && ch.Port == 0 && l.set(p+".enabled") {
		l.errorf(p+".enabled", "a udp service is checked by a TCP connect to another port: set [service.check] port")
	}
	if l.set(p+".port") && ch.Port == 0 {
		l.errorf(p+".port", "port must be 1..65535 (got 0)")
	}
	l.duration(p+".interval", ch.Interval)
	l.duration(p+".timeout", ch.Timeout)
	if ch.Timeout > ch.Interval && ch.Interval > 0 {
		l.errorf(p+".timeout", "timeout %s must not exceed interval %s", ch.Timeout, ch.Interval)
	}
	l.count(p+".down", ch.Down)
	l.count(p+".up", ch.Up)
}

// defaultedNumbers checks the tables and rule priorities the loader chose
// for uplinks that leave them out (DefaultUplinkTable, DefaultRulePriority)
// against every number the file sets explicitly, uplinks' and [[rule]]s'
// alike. Defaults never move to dodge a clash (a number must not depend on
// what other keys happen to say): a clash is an error at the uplink without
// the key, which is where setting it fixes the file.
func (l *loader) defaultedNumbers(c *Config, tables, priorities map[string]string) {
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		p := fmt.Sprintf("uplink[%d]", i)
		if u.TableDefaulted {
			key := strconv.Itoa(u.Table)
			if at, ok := tables[key]; ok {
				l.errorf(p+".table", "uplink %q has no table, and its default %d (%d + its position %d) is the table set at line %d: set table here",
					u.Name, u.Table, DefaultTableBase, i+1, l.line(at))
			} else {
				tables[key] = p + ".table"
			}
		}
		if u.RulePriorityDefaulted {
			key := strconv.Itoa(u.RulePriority)
			if at, ok := priorities[key]; ok {
				l.errorf(p+".rule_priority", "uplink %q has no rule_priority, and its default %d (%d + %d × its position %d) is the priority set at line %d: set rule_priority here",
					u.Name, u.RulePriority, DefaultRulePriorityBase, DefaultRulePriorityStep, i+1, l.line(at))
			} else {
				priorities[key] = p + ".rule_priority"
			}
		}
	}
}

// defaultRules checks that uplinkd's default table and the two rules that
// lead to it (default_priority: `lookup main suppress_prefixlength 0`,
// default_priority+1: `lookup <default_table>`) clash with no uplink table,
// configured rule priority or sticky rule.
func (l *loader) defaultRules(c *Config, priorities map[string]string) {
	d := &c.Daemon
	for i, u := range c.Uplinks {
		if u.Table != 0 && u.Table == d.DefaultTable {
			path := fmt.Sprintf("uplink[%d].table", i)
			if l.set("daemon.default_table") {
				path = "daemon.default_table"
			}
			l.errorf(path, "table %d is both uplinkd's default table (default_table) and uplink %q's table; choose another", d.DefaultTable, u.Name)
		}
	}
	first := d.DefaultPriority
	if !l.count("daemon.default_priority", first) {
		return
	}
	sticky, n := d.StickyPriority, max(len(c.Uplinks), 1)
	for _, p := range []int{first, first + 1} {
		if at, ok := priorities[strconv.Itoa(p)]; ok {
			l.errorf("daemon.default_priority", "the default-route rules use priorities %d and %d (default_priority), which clashes with rule priority %d at line %d",
				first, first+1, p, l.line(at))
			return
		}
		if p >= sticky && p < sticky+n {
			l.errorf("daemon.default_priority", "the default-route rules use priorities %d and %d (default_priority), which clashes with the sticky rules (priorities %d..%d from sticky_priority)",
				first, first+1, sticky, sticky+n-1)
			return
		}
	}
}

// lan6MainPriority checks the priority of mode prefix's `from <delegated
// prefix> lookup main suppress_prefixlength 0` rules (LAN6MainPriority:
// the lowest rule_priority among the uplinks with ipv6 on, minus 1): at
// least 1 (priority 0 is the kernel's `lookup local`), and no priority
// that another rule of uplinkd uses (a configured or defaulted rule
// priority, the default-route rules, the sticky rules), since the kernel
// orders two rules of one priority by insertion. As for the sticky rules,
// the clash is reported where the user can fix it: at that uplink's
// rule_priority when the file sets it, else at the key it clashes with.
func (l *loader) lan6MainPriority(c *Config, priorities map[string]string) {
	if c.LAN.IPv6.Mode != LAN6Prefix {
		return
	}
	prio, i, ok := LAN6MainPriority(c)
	if !ok {
		return
	}
	u := &c.Uplinks[i]
	at := fmt.Sprintf("uplink[%d].rule_priority", i)
	lim := limitOf(limitKey(at))
	if int64(u.RulePriority) < lim.Min || int64(u.RulePriority) > lim.Max {
		return // reported at the key already
	}
	rules := fmt.Sprintf("the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority %d (the lowest rule_priority of an uplink with ipv6 on, %d of uplink %q, minus 1)",
		prio, u.RulePriority, u.Name)
	if prio < 1 {
		l.errorf(at, "rule_priority %d leaves no priority for %s: priorities start at 1 (0 is the kernel's lookup local), set rule_priority to 2 or more", u.RulePriority, rules)
		return
	}
	// clash is what prio clashes with, as the message at the uplink says
	// it; theirs is the message at the other key.
	d := &c.Daemon
	sticky, n := d.StickyPriority, max(len(c.Uplinks), 1)
	var clash, other, theirs string
	switch {
	case priorities[strconv.Itoa(prio)] != "":
		other = priorities[strconv.Itoa(prio)]
		clash = fmt.Sprintf("rule priority %d at line %d", prio, l.line(other))
		theirs = fmt.Sprintf("priority %d clashes with %s", prio, rules)
	case prio == d.DefaultPriority || prio == d.DefaultPriority+1:
		other = "daemon.default_priority"
		clash = fmt.Sprintf("the default-route rules (priorities %d and %d, default_priority)", d.DefaultPriority, d.DefaultPriority+1)
		theirs = fmt.Sprintf("the default-route rules use priorities %d and %d (default_priority), which clashes with %s", d.DefaultPriority, d.DefaultPriority+1, rules)
	case prio >= sticky && prio < sticky+n:
		other = "daemon.sticky_priority"
		clash = fmt.Sprintf("the sticky connection rules (priorities %d..%d, sticky_priority)", sticky, sticky+n-1)
		theirs = fmt.Sprintf("the sticky connection rules use priorities %d..%d (sticky_priority), which clashes with %s", sticky, sticky+n-1, rules)
	default:
		return
	}
	if u.RulePriorityDefaulted && l.set(other) {
		l.errorf(other, "%s", theirs)
		return
	}
	l.errorf(at, "%s clash with %s: choose another rule_priority", rules, clash)
}

// MinHAWeight is the lowest weight keepalived adds to a priority: a track
// file value below -253 puts the VRRP instance into FAULT.
const MinHAWeight = -254

// ha checks [ha] and every [uplink.ha]. Without a track file HA is off, and
// a key that would then do nothing is an error rather than ignored.
func (l *loader) ha(c *Config) {
	on := c.HA.Enabled()
	if l.set("ha.track_file") {
		if !on {
			l.errorf("ha.track_file", "track_file must not be empty (leave out [ha] to turn HA off)")
		}
		l.absPath("ha.track_file", c.HA.TrackFile)
	}
	if !on && l.set("ha.lost_uplink_weight") {
		l.errorf("ha.lost_uplink_weight", "lost_uplink_weight has no effect without [ha] track_file")
	}
	l.count("ha.lost_uplink_weight", c.HA.LostUplinkWeight)
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		p := fmt.Sprintf("uplink[%d].ha", i)
		if !on {
			if l.set(p) {
				l.errorf(p, "[uplink.ha] has no effect without [ha] track_file")
			}
			continue
		}
		enum(l, p+".mode", u.HA.Mode, HAActive, HAExclusive)
		l.count(p+".weight", u.HA.Weight)
		if u.HA.Mode != HAExclusive {
			continue
		}
		// Only the MASTER may hold the session: uplinkd must be the one
		// that dials it (reconnect command) and hangs it up (stop command).
		switch {
		case u.Reconnect == nil:
			l.errorf(p+".mode", "mode \"exclusive\" needs [uplink.reconnect]: only the MASTER dials the uplink, so uplinkd must dial and stop it")
		case u.Kind != KindPPP && len(u.Reconnect.Command) == 0:
			l.errorf(p+".mode", "mode \"exclusive\" needs [uplink.reconnect] command for kind %q (only ppp has a default dial and hang-up)", u.Kind)
		case u.Kind != KindPPP && len(u.Reconnect.StopCommand) == 0:
			l.errorf(p+".mode", "mode \"exclusive\" needs [uplink.reconnect] stop_command: a BACKUP must hang the uplink up")
		case u.Kind == KindPPP && len(u.Reconnect.Command) > 0 && len(u.Reconnect.StopCommand) == 0:
			l.errorf(p+".mode", "mode \"exclusive\" needs [uplink.reconnect] stop_command with a custom command: a BACKUP must hang the uplink up")
		}
	}
}

// denySource refuses a deny prefix that would cut off the LAN or the
// host's own loopback traffic: a deny drops input and forwarding from every
// interface, so 0.0.0.0/0 (seen in the field) silently dropped everything,
// the LAN's traffic and the admin's ssh included. An admin who denies a
// range means hosts outside, or single LAN hosts; one who means "drop
// everything from outside" sets the uplink's firewall or input_policy.
func (l *loader) denySource(path string, src netip.Prefix, lan []netip.Prefix) {
	src = src.Masked()
	switch {
	case src.Bits() == 0:
		l.errorf(path, "source %s would drop all input and forwarding, the LAN's and the host's own included: deny the hosts or ranges you mean (input_policy = \"drop\" and [uplink.firewall] close the uplinks)", src)
		return
	case src.Contains(netip.AddrFrom4([4]byte{127, 0, 0, 1})):
		l.errorf(path, "source %s covers the loopback network: the host's own traffic would be dropped", src)
		return
	}
	for i, n := range lan {
		if n = n.Masked(); src.Bits() <= n.Bits() && src.Contains(n.Addr()) {
			l.errorf(path, "source %s covers all of lan.networks[%d] (%s): the whole LAN would be cut off; deny single hosts or smaller ranges", src, i, n)
			return
		}
	}
}

// linkLocal6 holds the addresses neighbour discovery, router
// advertisements and DHCPv6 come from.
var linkLocal6 = netip.MustParsePrefix("fe80::/10")

// denySource6 is denySource for an IPv6 source: it filters the IPv6 side of
// the firewall, which exists only with an uplink with ipv6 on; and it must
// cover neither everything, nor loopback, nor the link-local network (the
// ISP router's advertisements and neighbour discovery), nor a whole LAN
// /64: the [lan.ipv6] prefix (mode npt) or the LAN's /64 of a configured
// delegated_prefix (the /64 of [lan.ipv6] subnet; with mode prefix the
// whole delegation may be the LAN's, so covering it is refused too).
func (l *loader) denySource6(path string, src netip.Prefix, c *Config) {
	src = src.Masked()
	switch {
	case !c.IPv6On():
		l.errorf(path, "source %s is IPv6: uplinkd filters IPv6 only with an [[uplink]] with ipv6 = true", src)
		return
	case src.Bits() == 0:
		l.errorf(path, "source %s would drop all IPv6 input and forwarding, the LAN's and the host's own included: deny the hosts or ranges you mean (input_policy = \"drop\" and [uplink.firewall] close the uplinks)", src)
		return
	case src.Contains(netip.IPv6Loopback()):
		l.errorf(path, "source %s covers the loopback address ::1: the host's own traffic would be dropped", src)
		return
	case src.Bits() <= linkLocal6.Bits() && src.Contains(linkLocal6.Addr()):
		l.errorf(path, "source %s covers the link-local network fe80::/10: router advertisements, neighbour discovery and DHCPv6 would be dropped", src)
		return
	}
	covers := func(n netip.Prefix) bool { return n.IsValid() && src.Bits() <= n.Bits() && src.Contains(n.Addr()) }
	if in := c.LAN.IPv6.Prefix; covers(in) {
		l.errorf(path, "source %s covers all of [lan.ipv6] prefix %s: the whole LAN would be cut off; deny single hosts or smaller ranges", src, in)
		return
	}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		d := u.DelegatedPrefix
		if !d.IsValid() || !u.IPv6 || c.LAN.IPv6.Mode == LAN6Off {
			continue
		}
		// The subnet-th /64 is the LAN's in mode npt and with announce;
		// otherwise the LAN may use any /64 of the delegation.
		lan, ok := LANSubnet6(d, c.LAN.IPv6.Subnet)
		ok = ok && (c.LAN.IPv6.Mode == LAN6NPT || c.LAN.IPv6.Announce)
		if covers(d) || ok && covers(lan) {
			l.errorf(path, "source %s covers the LAN's /64 of uplink %q's delegated_prefix %s: the whole LAN would be cut off; deny single hosts or smaller ranges", src, u.Name, d)
			return
		}
	}
}

// ipv4Num is an IPv4 address as a number, for sizes of ranges.
func ipv4Num(a netip.Addr) int64 {
	b := a.As4()
	return int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
}

// subnetEdge reports whether a is the network or broadcast address of the
// network among nets that holds it (prefixes up to /30 have both).
func subnetEdge(nets []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, n := range nets {
		n = n.Masked()
		if !n.Contains(a) || n.Bits() > 30 {
			continue
		}
		first := ipv4Num(n.Addr())
		last := first + 1<<(32-n.Bits()) - 1
		if v := ipv4Num(a); v == first || v == last {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// lanSubnetFits reports whether subnet numbers a /64 inside d (1..64
// bits). uint64, not int: on 32-bit ARM an int shift by 32 or more is 0.
func lanSubnetFits(d netip.Prefix, subnet int) bool {
	_, ok := LANSubnet6(d, subnet)
	return ok
}
