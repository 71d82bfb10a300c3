// Package policy decides what the kernel should hold. It owns the strict TOML
// configuration, the pure function from (config, observed kernel state) to the
// desired state, the diff between desired and observed, and — at its edge — the
// netlink applier that carries a diff out.
package policy

import (
	"errors"
	"net/netip"
	"net/url"
	"time"
)

// Config is the whole uplinkd configuration file (docs/design.md), as the loader
// returns it: typed, with every default applied (see defaults.go), table
// names and user and group names resolved, and every semantic check done.
// Code that uses a Config never re-validates it and never applies a default.
//
// Field tags are the exact, case-sensitive TOML keys; the loader rejects
// every other key. Fields tagged "-" are filled in by the loader.
type Config struct {
	Daemon   Daemon     `toml:"daemon"`
	LAN      LAN        `toml:"lan"`
	Uplinks  []Uplink   `toml:"uplink"`
	Rules    []MarkRule `toml:"rule"`
	Firewall Firewall   `toml:"firewall"`
	Services []Service  `toml:"service"`
	HA       HA         `toml:"ha"`

	// Path is the file the config was read from.
	Path string `toml:"-"`
	// Warnings are the harmless problems the loader found, in file order;
	// `uplinkd check` prints them and fails on them with --strict.
	Warnings Problems `toml:"-"`
}

// Daemon holds process-wide settings.
type Daemon struct {
	// ControlSocket is the absolute path of the control socket.
	ControlSocket string `toml:"control_socket"`
	// ControlGroup is a group allowed to use the control socket ("" means
	// root only); ControlGID is its resolved gid.
	ControlGroup string `toml:"control_group"`
	ControlGID   uint32 `toml:"-"`
	StateDir     string `toml:"state_dir"`
	// HookDir is where drop-in hook scripts live.
	HookDir string `toml:"hook_dir"`
	// MetricsListen is the host:port of the metrics endpoint; "" disables it.
	MetricsListen string `toml:"metrics_listen"`
	// AllowNoUplinks lets `uplinkd run` start (and a reload succeed) with no
	// [[uplink]]: uplinkd then owns nothing. See CheckRunnable.
	AllowNoUplinks bool `toml:"allow_no_uplinks"`
	// DefaultTable holds uplinkd's default route (a number or an rt_tables
	// name); DefaultPriority is the priority of the `lookup main
	// suppress_prefixlength 0` rule, and DefaultPriority+1 that of the
	// `lookup <DefaultTable>` rule behind it.
	DefaultTable    int      `toml:"default_table,rt_tables"`
	DefaultPriority int      `toml:"default_priority"`
	LogLevel        LogLevel `toml:"log_level"`
	// MinSyncInterval bounds how often a full reconcile may run (kube-proxy's
	// minSyncPeriod); events inside it are coalesced into the next pass.
	MinSyncInterval time.Duration `toml:"min_sync_interval"`
	// StickyPriority is the first of the priorities (one per uplink) of the
	// `fwmark <uplink mark> lookup <table>` rules that keep a balanced
	// connection on the uplink it started on.
	StickyPriority int `toml:"sticky_priority"`
	// LastResort says what carries the main default route when no uplink is
	// healthy.
	LastResort LastResort `toml:"last_resort"`
}

// LogLevel is [daemon] log_level.
type LogLevel string

// Log levels.
const (
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info"
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"
)

// LastResort is [daemon] last_resort.
type LastResort string

// Last resorts: LastResortLink lets the uplinks whose link works although
// their probes fail carry the default route when no uplink is healthy;
// LastResortNone leaves no default route owned by uplinkd.
const (
	LastResortLink LastResort = "link"
	LastResortNone LastResort = "none"
)

// LAN describes the inside of the gateway.
type LAN struct {
	Interface string `toml:"interface"`
	// Networks are the LAN prefixes as written (host bits may be set).
	Networks           []netip.Prefix `toml:"networks"`
	Masquerade         bool           `toml:"masquerade"`
	Forwarding         bool           `toml:"forwarding"`
	RemoveDefaultRoute bool           `toml:"remove_default_route"`
	// DHCP keeps DHCPv4 working on the LAN (internal/dhcpd); nil when
	// absent, which is mode off.
	DHCP *DHCP `toml:"dhcp"`
	// IPv6 is [lan.ipv6]: how the LAN's IPv6 traffic leaves through the
	// uplinks' delegated prefixes (docs/ipv6.md). Mode off by default.
	IPv6 LAN6 `toml:"ipv6"`
}

// LAN6 is [lan.ipv6].
type LAN6 struct {
	Mode LAN6Mode `toml:"mode"`
	// Prefix is the inside /64 of mode npt (ULA or an own prefix); invalid
	// in the other modes.
	Prefix netip.Prefix `toml:"prefix"`
	// Subnet picks the /64 of each uplink's delegated prefix that the LAN
	// uses in mode npt (the rewrite target): 0 is the first.
	Subnet int `toml:"subnet"`
	// Announce makes uplinkd send the LAN's router advertisements itself
	// (internal/radv): one /64 per uplink with a delegation in mode
	// prefix, deprecated at once when its uplink fails; the inside prefix
	// in mode npt. Off (the default) leaves them to radvd or the like.
	Announce bool `toml:"announce"`
	// RDNSS and DNSSL are the DNS servers and search domains announced
	// (RFC 8106); empty leaves the option out.
	RDNSS []netip.Addr `toml:"rdnss"`
	DNSSL []string     `toml:"dnssl"`
	// MinInterval and MaxInterval bound the periodic advertisements (RFC
	// 4861 MinRtrAdvInterval, MaxRtrAdvInterval); RouterLifetime is the
	// default router lifetime announced while some uplink has IPv6.
	MinInterval    time.Duration `toml:"min_interval"`
	MaxInterval    time.Duration `toml:"max_interval"`
	RouterLifetime time.Duration `toml:"router_lifetime"`
	// RouterPreference is the default router preference (RFC 4191):
	// low, medium or high.
	RouterPreference RouterPreference `toml:"router_preference"`
}

// RouterPreference is [lan.ipv6] router_preference.
type RouterPreference string

// Router preferences of RFC 4191 2.1.
const (
	PreferenceLow    RouterPreference = "low"
	PreferenceMedium RouterPreference = "medium"
	PreferenceHigh   RouterPreference = "high"
)

// Defaults of the [lan.ipv6] announcement (RFC 4861 6.2.1's: min is a
// third of max, the router lifetime three times max).
const (
	DefaultRAMaxInterval = 600 * time.Second
)

// LAN6Mode is [lan.ipv6] mode.
type LAN6Mode string

// LAN IPv6 modes: off leaves the LAN's IPv6 alone; prefix routes each
// uplink's delegated prefix out of that uplink (LAN hosts hold addresses
// from every prefix, no NAT); npt gives the LAN one inside prefix,
// rewritten to the outgoing uplink's /64 (RFC 6296).
const (
	LAN6Off    LAN6Mode = "off"
	LAN6Prefix LAN6Mode = "prefix"
	LAN6NPT    LAN6Mode = "npt"
)

// DHCP configures the LAN's DHCP: off, the embedded server (mode
// embedded: range, lease, max_lease, router, dns, ntp, domain, hosts,
// conflict_check) or an external server restarted when the LAN link comes
// back (mode service: unit or command, restart_interval). Keys of the other
// modes are rejected by the loader, so they are zero here.
type DHCP struct {
	Mode DHCPMode `toml:"mode"`
	// Range is exactly [first, last] in mode embedded.
	Range         []netip.Addr  `toml:"range"`
	Hosts         []DHCPHost    `toml:"hosts"`
	Lease         time.Duration `toml:"lease"`
	MaxLease      time.Duration `toml:"max_lease"`
	Router        []netip.Addr  `toml:"router"`
	DNS           []netip.Addr  `toml:"dns"`
	NTP           []netip.Addr  `toml:"ntp"`
	Domain        string        `toml:"domain"`
	ConflictCheck bool          `toml:"conflict_check"`
	// Unit (a systemd unit) or Command (argv, Command[0] absolute): what
	// mode service restarts, exactly one of them.
	Unit            string        `toml:"unit"`
	Command         []string      `toml:"command"`
	RestartInterval time.Duration `toml:"restart_interval"`
}

// DHCPMode is [lan.dhcp] mode.
type DHCPMode string

// DHCP modes.
const (
	DHCPEmbedded DHCPMode = "embedded"
	DHCPService  DHCPMode = "service"
	DHCPOff      DHCPMode = "off"
)

// DHCPHost is a fixed address for one MAC.
type DHCPHost struct {
	Name string `toml:"name"`
	// MAC is in canonical form ("dc:a6:32:90:31:cc").
	MAC string     `toml:"mac"`
	IP  netip.Addr `toml:"ip"`
}

// Kind is an uplink's link type.
type Kind string

// Uplink kinds.
const (
	KindPPP      Kind = "ppp"
	KindWLAN     Kind = "wlan"
	KindEthernet Kind = "ethernet"
)

// SNATMode is how traffic leaving an uplink is source-NATed.
type SNATMode string

// SNAT modes ([[uplink]] snat).
const (
	SNATOff        SNATMode = "off"
	SNATSNAT       SNATMode = "snat"
	SNATMasquerade SNATMode = "masquerade"
)

// RPFilter is an uplink's reverse-path filter mode.
type RPFilter string

// Reverse-path filter modes.
const (
	RPFilterOff    RPFilter = "off"
	RPFilterLoose  RPFilter = "loose"
	RPFilterStrict RPFilter = "strict"
)

// Sysctl is the value of net.ipv4.conf.IFACE.rp_filter for the mode.
func (r RPFilter) Sysctl() string {
	switch r {
	case RPFilterOff:
		return "0"
	case RPFilterStrict:
		return "1"
	}
	return "2"
}

// Uplink is one [[uplink]] table.
type Uplink struct {
	Name      string `toml:"name"`
	Interface string `toml:"interface"`
	Kind      Kind   `toml:"kind"`
	// Table is the routing table number; the file may name it by a name
	// from /etc/iproute2/rt_tables, which the loader resolves. Left out,
	// it is DefaultUplinkTable(N) for the uplink's 1-based position N.
	Table        int        `toml:"table,rt_tables"`
	RulePriority int        `toml:"rule_priority"` // left out: DefaultRulePriority(N)
	Gateway      netip.Addr `toml:"gateway"`       // invalid: learned from the link
	SNAT         SNATMode   `toml:"snat"`
	Tier         int        `toml:"tier"`
	Weight       int        `toml:"weight"`
	RPFilter     RPFilter   `toml:"rp_filter"`
	// IPv6 turns on uplinkd's IPv6 routing for the uplink (docs/ipv6.md):
	// source rules for its usable global addresses, a default route in
	// its table, a place in uplinkd's IPv6 default route and, with IPv6
	// probe targets, IPv6 health. Off (the default) leaves IPv6 alone.
	IPv6 bool `toml:"ipv6"`
	// Gateway6 is the IPv6 next hop (link-local or global); invalid:
	// learned from a foreign IPv6 default route via the interface (the
	// kernel's RA route), and none on a point-to-point link.
	Gateway6 netip.Addr `toml:"gateway6"`
	// DelegatedPrefix is a static IPv6 prefix delegation (a business line's
	// fixed /48 or /56); invalid: learned at run time from the PD client
	// (`uplinkd event --delegated`). Only with ipv6 = true.
	DelegatedPrefix netip.Prefix `toml:"delegated_prefix"`

	Check     *Check          `toml:"check"`     // nil: link state alone decides
	Reconnect *Reconnect      `toml:"reconnect"` // nil: never reconnect
	Firewall  *UplinkFirewall `toml:"firewall"`  // nil: input not filtered
	Publish   []Publish       `toml:"publish"`
	Hooks     []Hook          `toml:"hook"`
	// HA is the uplink's part in two-gateway HA; always filled in (defaults
	// when the file has no [uplink.ha]), used only when [ha] is on.
	HA UplinkHA `toml:"ha"`

	// TableDefaulted and RulePriorityDefaulted say that the file left
	// table or rule_priority out and the loader chose the number (`plan`
	// shows it).
	TableDefaulted        bool `toml:"-"`
	RulePriorityDefaulted bool `toml:"-"`
}

// ProbeMethod is [uplink.check] method.
type ProbeMethod string

// Probe methods.
const (
	ProbeICMP ProbeMethod = "icmp"
	ProbeTCP  ProbeMethod = "tcp"
	ProbeDNS  ProbeMethod = "dns"
	ProbeHTTP ProbeMethod = "http"
)

// Check configures health probes sent out of an uplink.
type Check struct {
	Method ProbeMethod `toml:"method"`
	// Targets are validated for Method: icmp an IPv4 address (or an IPv6
	// address on an uplink with ipv6 on: an IPv6 health probe), tcp
	// HOST:PORT, dns IPv4 or IPv4:PORT, http an http(s) URL.
	Targets     []string      `toml:"targets"`
	Interval    time.Duration `toml:"interval"`
	Timeout     time.Duration `toml:"timeout"`
	Reliability int           `toml:"reliability"`
	// Retries is how many more probes a round sends to a target that has
	// not answered yet, spaced by the target's recent RTT, within the
	// same timeout (probe.Spec.Retries): random loss alone then rarely
	// fails a round, and an outage is not seen any later.
	Retries  int           `toml:"retries"`
	Down     int           `toml:"down"`
	Up       int           `toml:"up"`
	HoldDown time.Duration `toml:"hold_down"`
	// MaxLoss is 0..1; 1 (the default) never fails a round for loss.
	MaxLoss float64 `toml:"max_loss"`
	// MaxLatency is 0 (the default) when latency is not judged.
	MaxLatency time.Duration `toml:"max_latency"`
	// TrafficTrigger watches the uplink's traffic counters every
	// TrafficWindow: packets leaving with none coming back start an
	// immediate burst of probes, and a burst that all targets leave
	// unanswered fails the uplink at once (issue 20, docs/design.md).
	TrafficTrigger bool `toml:"traffic_trigger"`
	// TrafficWindow is how long outgoing packets may go unanswered before
	// the burst; always set by the loader (default 300ms).
	TrafficWindow time.Duration `toml:"traffic_window"`
	// WarnLoss is 0..1; 1 (the default) never degrades for loss. Above it
	// (sliding-window loss, as max_loss) the uplink is degraded: it stays
	// up but carries less or no new traffic (Degraded, docs/design.md).
	WarnLoss float64 `toml:"warn_loss"`
	// WarnLatency is 0 (the default) when latency never degrades.
	WarnLatency time.Duration `toml:"warn_latency"`
	// Degraded is what a degraded uplink does; always set by the loader.
	Degraded DegradedAction `toml:"degraded"`
	// DegradedWeight is the share, in percent of its weight, a degraded
	// uplink keeps with Degraded = lower-weight; always set by the loader.
	DegradedWeight int `toml:"degraded_weight"`
}

// DegradedAction is [uplink.check] degraded.
type DegradedAction string

// Degraded actions: a degraded uplink stays in the default route with
// degraded_weight percent of its weight, or leaves it while another uplink
// that is not degraded can carry the traffic.
const (
	DegradedLowerWeight DegradedAction = "lower-weight"
	DegradedLeave       DegradedAction = "leave"
)

// WarnLossSet reports whether warn_loss judges loss. As with max_loss, 0
// is a valid warn_loss (any loss) in a loaded Check, whose interval is
// always set; in a hand-built one zero means "not set".
func (c *Check) WarnLossSet() bool {
	return c != nil && c.WarnLoss < 1 && (c.Interval != 0 || c.WarnLoss > 0)
}

// Warns reports whether the check can degrade its uplink at all.
func (c *Check) Warns() bool {
	return c.WarnLossSet() || (c != nil && c.WarnLatency > 0)
}

// Reconnect configures how a downed uplink is brought back. Empty commands
// mean the kind's defaults (hooks.DefaultCommands).
type Reconnect struct {
	Peer           string        `toml:"peer"`
	Command        []string      `toml:"command"`
	StopCommand    []string      `toml:"stop_command"`
	ReconnectAfter time.Duration `toml:"reconnect_after"`
	Backoff        time.Duration `toml:"backoff"`
	MaxBackoff     time.Duration `toml:"max_backoff"`
	Timeout        time.Duration `toml:"timeout"`
	// DialTimeout is how long a reconnect may take to bring the link back
	// with an address before it counts as failed.
	DialTimeout time.Duration `toml:"dial_timeout"`
}

// Proto is a transport protocol of a firewall or mark rule.
type Proto string

// Protocols.
const (
	ProtoTCP  Proto = "tcp"
	ProtoUDP  Proto = "udp"
	ProtoSCTP Proto = "sctp"
)

// Number is the IP protocol number.
func (p Proto) Number() uint8 {
	switch p {
	case ProtoTCP:
		return 6
	case ProtoUDP:
		return 17
	case ProtoSCTP:
		return 132
	}
	return 0
}

// UplinkFirewall is what may enter through one uplink.
type UplinkFirewall struct {
	Allow     []Allow `toml:"allow"`
	Limit     []Limit `toml:"limit"`
	ICMPTypes []uint8 `toml:"icmp_types"`
}

// Allow opens ports of one protocol.
type Allow struct {
	Proto Proto    `toml:"proto"`
	Ports []uint16 `toml:"ports"`
}

// Limit rate-limits new connections per source address: Hits per Seconds.
// The loader accepts only windows that divide a day, which both firewall
// backends express exactly as a rate per second, minute, hour or day.
type Limit struct {
	Proto   Proto  `toml:"proto"`
	Port    uint16 `toml:"port"`
	Hits    int    `toml:"hits"`
	Seconds int    `toml:"seconds"`
}

// PublishKind is [[uplink.publish]] kind.
type PublishKind string

// Publish kinds.
const (
	PublishCommand PublishKind = "command"
	PublishDynDNS2 PublishKind = "dyndns2"
	PublishRFC2136 PublishKind = "rfc2136"
)

// Publish tells the world an uplink's new address (not built yet: the
// publisher is fed from this). Keys that do not apply to Kind are rejected
// by the loader, so they are zero here.
type Publish struct {
	// Name is unique per uplink; default "<kind>-<n>", n counting the
	// uplink's publishers from 1.
	Name string      `toml:"name"`
	Kind PublishKind `toml:"kind"`
	// Command is the argv of kind command; Command[0] is absolute.
	Command []string `toml:"command"`
	// Server as written; see URL and ServerAddr for the resolved forms.
	Server string `toml:"server"`
	// URL is the dyndns2 server (http or https).
	URL *url.URL `toml:"-"`
	// ServerAddr is the rfc2136 server as host:port (port 53 by default).
	ServerAddr string `toml:"-"`
	// Hostname is the FQDN to update, without a trailing dot.
	Hostname     string `toml:"hostname"`
	Username     string `toml:"username"`      // dyndns2
	PasswordFile string `toml:"password_file"` // dyndns2, absolute
	CAFile       string `toml:"ca_file"`       // dyndns2, absolute, optional
	Zone         string `toml:"zone"`          // rfc2136, FQDN without trailing dot
	KeyFile      string `toml:"key_file"`      // rfc2136, absolute (TSIG key)
	// TTL of the record (rfc2136 only; 0 for other kinds).
	TTL time.Duration `toml:"ttl"`
	// Settle is how long a new address must stay before it is published.
	Settle time.Duration `toml:"settle"`
	// MinInterval is the least time between two updates.
	MinInterval time.Duration `toml:"min_interval"`
	// Refresh re-publishes an unchanged address this often; 0 never.
	Refresh time.Duration `toml:"refresh"`
	// Timeout bounds one update.
	Timeout time.Duration `toml:"timeout"`
	// Family is the address published: the uplink's IPv4 address (A,
	// myip) or its IPv6 address (AAAA, myipv6; needs ipv6 on the uplink).
	Family Family `toml:"family"`
}

// Family is an address family of [[uplink.publish]] family.
type Family string

// Address families.
const (
	FamilyIPv4 Family = "ipv4"
	FamilyIPv6 Family = "ipv6"
)

// HookEvent is an event a [[uplink.hook]] runs on.
type HookEvent string

// HookEvents are every event name hooks may name.
// probe6-down and probe6-up are the IPv6 side's health transitions
// (docs/ipv6.md).
var HookEvents = []HookEvent{"link-down", "link-up", "addr-change", "probe-down", "probe-up", "probe6-down", "probe6-up", "down", "up", "reconnect", "publish"}

// Hook runs a user command on uplink events.
type Hook struct {
	On      []HookEvent `toml:"on"`
	Command []string    `toml:"command"` // Command[0] is absolute
	// Timeout is 0 when not set: the hook runner's default applies.
	Timeout time.Duration `toml:"timeout"`
}

// MarkRule is one [[rule]]: traffic matching it carries Mark and is routed by
// `fwmark Mark lookup <table of Uplink>` at Priority.
type MarkRule struct {
	Name string `toml:"name"`
	// UID is the socket owner to match, nil for any; `user` is resolved
	// into it by the loader.
	UID  *uint32 `toml:"uid"`
	User string  `toml:"user"`
	GID  *uint32 `toml:"gid"`
	// Source and Dest are as written (an address is a /32).
	Source   []netip.Prefix `toml:"source"`
	Dest     []netip.Prefix `toml:"destination"`
	Proto    Proto          `toml:"proto"` // "" for any
	Ports    []uint16       `toml:"ports"`
	InIface  string         `toml:"in_interface"`
	Uplink   string         `toml:"uplink"`
	Mark     uint32         `toml:"mark"` // 1..UserMarkMask
	Priority int            `toml:"priority"`
}

// Backend is the firewall backend.
type Backend string

// Firewall backends.
const (
	BackendNFTables Backend = "nftables"
	BackendIPTables Backend = "iptables"
)

// IPTablesVariant picks the iptables flavour of the iptables backend.
type IPTablesVariant string

// iptables variants: auto is whatever `iptables` is on the host.
const (
	IPTablesAuto   IPTablesVariant = "auto"
	IPTablesLegacy IPTablesVariant = "legacy"
	IPTablesNFT    IPTablesVariant = "nft"
)

// Policy is a chain's verdict for packets no rule decided on.
type Policy string

// Chain policies.
const (
	PolicyAccept Policy = "accept"
	PolicyDrop   Policy = "drop"
)

// Firewall holds global netfilter settings.
type Firewall struct {
	Backend         Backend         `toml:"backend"`
	IPTablesVariant IPTablesVariant `toml:"iptables_variant"`
	InputPolicy     Policy          `toml:"input_policy"`
	ForwardPolicy   Policy          `toml:"forward_policy"`
	Deny            []DenyRule      `toml:"deny"`
}

// DenyAction is what a [[firewall.deny]] does.
type DenyAction string

// Deny actions.
const (
	DenyDrop   DenyAction = "drop"
	DenyReject DenyAction = "reject"
)

// DenyRule refuses traffic from a source prefix or MAC (at least one is set).
type DenyRule struct {
	Source netip.Prefix `toml:"source"` // invalid when not set
	MAC    string       `toml:"mac"`    // canonical form, "" when not set
	Action DenyAction   `toml:"action"`
}

// Balance is how a [[service]] spreads connections.
type Balance string

// Balancing modes.
const (
	BalanceWeighted   Balance = "weighted"
	BalanceSourceHash Balance = "source-hash"
)

// Service is an inbound, load-balanced service: new connections to Port on
// the addresses of Uplinks are DNATed to one healthy backend (see
// firewall.ServiceRules for how).
type Service struct {
	Name     string           `toml:"name"`
	Uplinks  []string         `toml:"uplinks"`
	Proto    Proto            `toml:"proto"`
	Port     uint16           `toml:"port"`
	Backends []ServiceBackend `toml:"backends"`
	Balance  Balance          `toml:"balance"`
	// Check is the TCP connect health check of the backends; Check.Enabled
	// is resolved by the loader (see ServiceCheck).
	Check ServiceCheck `toml:"check"`
	// Limit rate-limits new connections per source address; nil: no limit.
	Limit *ServiceLimit `toml:"limit"`
	// Hairpin lets LAN clients reach the service by the uplink's address:
	// their connections are DNATed too and masqueraded to the router's LAN
	// address. Default true when [lan] interface and networks are set.
	Hairpin bool `toml:"hairpin"`
}

// ServiceBackend is one [[service]] backend: written as "IP:PORT" or as
// { address = "IP:PORT", weight = N }.
type ServiceBackend struct {
	Address netip.AddrPort `toml:"address"`
	// Weight is 1..MaxBackendWeight; default 1.
	Weight int `toml:"weight"`
}

// MaxBackendWeight is the largest [[service]] backend weight.
const MaxBackendWeight = 256

// MaxSourceHashSlots bounds the sum of a source-hash service's weights
// (divided by their greatest common divisor): the iptables backend hashes
// with -m cluster, which knows at most 32 nodes.
const MaxSourceHashSlots = 32

// ServiceCheck is [service.check]: a TCP connect from the router to every
// backend each Interval; Down failures in a row take a backend out of the
// set, Up successes in a row bring it back. A refused or timed-out connect
// is a failure.
type ServiceCheck struct {
	// Enabled defaults to true for tcp services; for udp services the check
	// is off unless Port names a TCP port to connect to.
	Enabled  bool          `toml:"enabled"`
	Interval time.Duration `toml:"interval"`
	Timeout  time.Duration `toml:"timeout"`
	Down     int           `toml:"down"`
	Up       int           `toml:"up"`
	// Port is the TCP port checked on every backend; 0: the backend's own
	// port (tcp services only).
	Port uint16 `toml:"port"`
}

// ServiceLimit is a [[service]] limit: at most Hits new connections per
// source address per Seconds, with the semantics of [uplink.firewall] limit.
type ServiceLimit struct {
	Hits    int `toml:"hits"`
	Seconds int `toml:"seconds"`
}

// HA configures two gateways sharing one LAN through keepalived (VRRP):
// uplinkd writes its uplinks' health into keepalived's track_file and
// follows the VRRP role keepalived reports (`uplinkd event --role`).
type HA struct {
	// TrackFile is the absolute path of the keepalived track_file uplinkd
	// writes; "" turns HA off (and then no other HA key may be set).
	TrackFile string `toml:"track_file"`
	// LostUplinkWeight is what a lost tier-1 uplink adds to the track file's
	// value, -254..0; the default of every tier-1 uplink's [uplink.ha] weight.
	LostUplinkWeight int `toml:"lost_uplink_weight"`
}

// Enabled reports whether two-gateway HA is configured.
func (h HA) Enabled() bool { return h.TrackFile != "" }

// HAMode is [uplink.ha] mode.
type HAMode string

// HA modes: an active uplink is up on both gateways (a line per box); an
// exclusive one (one account for both boxes) is dialled only by the MASTER.
const (
	HAActive    HAMode = "active"
	HAExclusive HAMode = "exclusive"
)

// UplinkHA is [uplink.ha].
type UplinkHA struct {
	Mode HAMode `toml:"mode"`
	// Weight is what losing this uplink adds to the track file's value,
	// -254..0. Default: [ha] lost_uplink_weight for tier 1, 0 (not counted)
	// for other tiers.
	Weight int `toml:"weight"`
}

// ErrNoUplinks is CheckRunnable's verdict on a config without [[uplink]].
var ErrNoUplinks = errors.New("no [[uplink]]: `uplinkd run` refuses to start until one is configured (or set [daemon] allow_no_uplinks = true)")

// CheckRunnable reports whether the daemon may run with c: a config with no
// uplink is refused (ErrNoUplinks, wrapped with the file name) unless it sets
// [daemon] allow_no_uplinks, because an empty or truncated file would
// otherwise delete every route and rule uplinkd owns. `uplinkd run` calls it
// before starting and the daemon before taking a reloaded config.
func (c *Config) CheckRunnable() error {
	if len(c.Uplinks) == 0 && !c.Daemon.AllowNoUplinks {
		return &runnableError{path: c.Path}
	}
	return nil
}

type runnableError struct{ path string }

func (e *runnableError) Error() string { return e.path + ": " + ErrNoUplinks.Error() }
func (e *runnableError) Unwrap() error { return ErrNoUplinks }

// Tables lists the routing tables uplinkd reads in full: the uplinks' own
// and its default table (a kernel mirror keeps only their routes in full).
func (c *Config) Tables() []int {
	out := make([]int, 0, len(c.Uplinks)+1)
	for _, u := range c.Uplinks {
		out = append(out, u.Table)
	}
	return append(out, c.Daemon.DefaultTable)
}

// UplinkByName returns the uplink with that name, or nil.
func (c *Config) UplinkByName(name string) *Uplink {
	for i := range c.Uplinks {
		if c.Uplinks[i].Name == name {
			return &c.Uplinks[i]
		}
	}
	return nil
}

// PointToPoint reports whether the uplink is configured as a ppp link.
func (u *Uplink) PointToPoint() bool { return u.Kind == KindPPP }
