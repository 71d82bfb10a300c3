// Package policy decides what the kernel should hold. It owns the strict TOML
// configuration, the pure function from (config, observed kernel state) to the
// desired state, the diff between desired and observed, and — at its edge — the
// netlink applier that carries a diff out.
package policy

import (
	"time"
)

// Config is the whole uplinkd configuration file (DESIGN §4). Field tags are
// the exact, case-sensitive TOML keys; the loader rejects every other key.
type Config struct {
	Daemon   Daemon     `toml:"daemon"`
	LAN      LAN        `toml:"lan"`
	Uplinks  []Uplink   `toml:"uplink"`
	Rules    []MarkRule `toml:"rule"`
	Firewall Firewall   `toml:"firewall"`
	Services []Service  `toml:"service"`

	// Path is the file the config was read from (not a TOML key).
	Path string `toml:"-"`
	// DefaultTableID is the resolved [daemon] default_table (not a TOML key).
	DefaultTableID int `toml:"-"`
	// Tables maps table names from /etc/iproute2/rt_tables to numbers; set by
	// the loader so that `table = "PPP1"` resolves (not a TOML key).
	Tables map[string]int `toml:"-"`
}

// Daemon holds process-wide settings.
type Daemon struct {
	ControlSocket string `toml:"control_socket"`
	ControlGroup  string `toml:"control_group"`
	StateDir      string `toml:"state_dir"`
	// DefaultTable holds uplinkd's default route (a number or an rt_tables
	// name); DefaultPriority is the priority of the `lookup main
	// suppress_prefixlength 0` rule, and DefaultPriority+1 that of the
	// `lookup <DefaultTable>` rule behind it.
	DefaultTable    any  `toml:"default_table"`
	DefaultPriority *int `toml:"default_priority"`
	// DefaultMetric was the metric of a main-table default route (0.1–0.2);
	// it is rejected with a pointer to default_table.
	DefaultMetric *int `toml:"default_metric"`
	// LogLevel is debug | info | warn | error.
	LogLevel string `toml:"log_level"`
	// MinSyncInterval bounds how often a full reconcile may run (kube-proxy's
	// minSyncPeriod); events inside it are coalesced into the next pass.
	MinSyncInterval Duration `toml:"min_sync_interval"`
	// StickyPriority is the first of the priorities (one per uplink) of the
	// `fwmark <uplink mark> lookup <table>` rules that keep a balanced
	// connection on the uplink it started on.
	StickyPriority *int `toml:"sticky_priority"`
	// LastResort says what carries the main default route when no uplink is
	// healthy: "link" (the uplinks whose link works although their probes
	// fail) or "none" (no default route owned by uplinkd).
	LastResort string `toml:"last_resort"`
}

// LAN describes the inside of the gateway.
type LAN struct {
	Interface          string   `toml:"interface"`
	Networks           []string `toml:"networks"`
	Masquerade         *bool    `toml:"masquerade"`
	Forwarding         *bool    `toml:"forwarding"`
	RemoveDefaultRoute *bool    `toml:"remove_default_route"`
	DHCP               *DHCP    `toml:"dhcp"`
}

// DHCP configures the LAN DHCP server.
type DHCP struct {
	Mode  string     `toml:"mode"`
	Range []string   `toml:"range"`
	Hosts []DHCPHost `toml:"hosts"`
	Lease Duration   `toml:"lease"`
	DNS   []string   `toml:"dns"`
}

// DHCPHost is a fixed address for one MAC.
type DHCPHost struct {
	Name string `toml:"name"`
	MAC  string `toml:"mac"`
	IP   string `toml:"ip"`
}

// Uplink kinds.
const (
	KindPPP      = "ppp"
	KindWLAN     = "wlan"
	KindEthernet = "ethernet"
)

// Uplink is one [[uplink]] table.
type Uplink struct {
	Name      string `toml:"name"`
	Interface string `toml:"interface"`
	Kind      string `toml:"kind"`
	// Table is a number or a name from /etc/iproute2/rt_tables; the loader
	// resolves it into TableID.
	Table        any    `toml:"table"`
	RulePriority int    `toml:"rule_priority"`
	Gateway      string `toml:"gateway"`
	SNAT         string `toml:"snat"`
	Tier         *int   `toml:"tier"`
	Weight       *int   `toml:"weight"`
	RPFilter     string `toml:"rp_filter"`

	Check     *Check          `toml:"check"`
	Reconnect *Reconnect      `toml:"reconnect"`
	Firewall  *UplinkFirewall `toml:"firewall"`
	Publish   []Publish       `toml:"publish"`
	Hooks     []Hook          `toml:"hook"`

	// TableID is the resolved routing table number (not a TOML key).
	TableID int `toml:"-"`
}

// Check configures health probes sent out of an uplink.
type Check struct {
	Method      string   `toml:"method"`
	Targets     []string `toml:"targets"`
	Interval    Duration `toml:"interval"`
	Timeout     Duration `toml:"timeout"`
	Reliability int      `toml:"reliability"`
	Down        int      `toml:"down"`
	Up          int      `toml:"up"`
	HoldDown    Duration `toml:"hold_down"`
	MaxLoss     *float64 `toml:"max_loss"`
	MaxLatency  Duration `toml:"max_latency"`
}

// Reconnect configures how a downed uplink is brought back.
type Reconnect struct {
	Peer           string   `toml:"peer"`
	Command        []string `toml:"command"`
	StopCommand    []string `toml:"stop_command"`
	ReconnectAfter Duration `toml:"reconnect_after"`
	Backoff        Duration `toml:"backoff"`
	MaxBackoff     Duration `toml:"max_backoff"`
	Timeout        Duration `toml:"timeout"`
}

// UplinkFirewall is what may enter through one uplink.
type UplinkFirewall struct {
	Allow     []Allow `toml:"allow"`
	Limit     []Limit `toml:"limit"`
	ICMPTypes []int   `toml:"icmp_types"`
}

// Allow opens ports of one protocol.
type Allow struct {
	Proto string `toml:"proto"`
	Ports []int  `toml:"ports"`
}

// Limit rate-limits new connections per source address.
type Limit struct {
	Proto   string `toml:"proto"`
	Port    int    `toml:"port"`
	Hits    int    `toml:"hits"`
	Seconds int    `toml:"seconds"`
}

// Publish tells the world an uplink's new address.
type Publish struct {
	Kind         string   `toml:"kind"`
	Command      []string `toml:"command"`
	Server       string   `toml:"server"`
	Hostname     string   `toml:"hostname"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	Zone         string   `toml:"zone"`
	KeyFile      string   `toml:"key_file"`
}

// Hook runs a user command on uplink events.
type Hook struct {
	On      []string `toml:"on"`
	Command []string `toml:"command"`
	Timeout Duration `toml:"timeout"`
}

// MarkRule is one [[rule]]: traffic matching it carries Mark and is routed by
// `fwmark Mark lookup <table of Uplink>` at Priority.
type MarkRule struct {
	Name     string   `toml:"name"`
	UID      *int     `toml:"uid"`
	User     string   `toml:"user"`
	GID      *int     `toml:"gid"`
	Source   []string `toml:"source"`
	Dest     []string `toml:"destination"`
	Proto    string   `toml:"proto"`
	Ports    []int    `toml:"ports"`
	InIface  string   `toml:"in_interface"`
	Uplink   string   `toml:"uplink"`
	Mark     uint32   `toml:"mark"`
	Priority int      `toml:"priority"`
}

// Firewall holds global netfilter settings.
type Firewall struct {
	Backend string `toml:"backend"`
	// IPTablesVariant picks the iptables flavour of the iptables backend:
	// auto (whatever `iptables` is), legacy or nft.
	IPTablesVariant string     `toml:"iptables_variant"`
	InputPolicy     string     `toml:"input_policy"`
	ForwardPolicy   string     `toml:"forward_policy"`
	Deny            []DenyRule `toml:"deny"`
}

// DenyRule refuses traffic from a source address or MAC.
type DenyRule struct {
	Source string `toml:"source"`
	MAC    string `toml:"mac"`
	Action string `toml:"action"`
}

// Service is an inbound, load-balanced service.
type Service struct {
	Name     string   `toml:"name"`
	Uplinks  []string `toml:"uplinks"`
	Proto    string   `toml:"proto"`
	Port     int      `toml:"port"`
	Backends []string `toml:"backends"`
	Balance  string   `toml:"balance"`
}

// Duration is a time.Duration written as a Go duration string ("800ms").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults applied by the loader (documented in contrib/uplinkd.toml).
const (
	DefaultControlSocket  = "/run/uplinkd/uplinkd.sock"
	DefaultStateDir       = "/var/lib/uplinkd"
	DefaultConfigPath     = "/etc/uplinkd/uplinkd.toml"
	DefaultTableID        = 157
	DefaultPriority       = 32600
	DefaultStickyPriority = 32000
	DefaultMinSync        = time.Duration(0)
)

func defaultTableOf(c *Config) int {
	if c.DefaultTableID != 0 {
		return c.DefaultTableID
	}
	return DefaultTableID
}

func defaultPriorityOf(c *Config) int { return Int(c.Daemon.DefaultPriority, DefaultPriority) }

// Bool returns *b, or def when the key was not set.
func Bool(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// Int returns *i, or def when the key was not set.
func Int(i *int, def int) int {
	if i == nil {
		return def
	}
	return *i
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

// TierOf is the uplink's failover tier (default 1).
func (u *Uplink) TierOf() int { return Int(u.Tier, 1) }

// WeightOf is the uplink's balancing weight (default 1).
func (u *Uplink) WeightOf() int { return Int(u.Weight, 1) }

// PointToPoint reports whether the uplink is configured as a ppp link.
func (u *Uplink) PointToPoint() bool { return u.Kind == KindPPP }
