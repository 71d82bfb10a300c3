package control

import (
	"net/netip"
	"time"
)

// Status is the status schema, version 1 (docs/status.md). Optional fields
// and later sections are omitted when empty, so a v 1 reader keeps working
// as sections are added.
type Status struct {
	V       int      `json:"v"`
	Daemon  Daemon   `json:"daemon"`
	Uplinks []Uplink `json:"uplinks"`
	// HA is this gateway's VRRP role; nil when two-gateway HA is off.
	HA *HA `json:"ha,omitempty"`
	// Services are the [[service]]s with their backends' health.
	Services []Service `json:"services,omitempty"`
	// Publishers are the [[uplink.publish]] entries, in config order;
	// absent when none are configured.
	Publishers []Publisher `json:"publishers,omitempty"`
	// DHCP is the LAN DHCP side; absent when [lan.dhcp] mode is off.
	DHCP *DHCP `json:"dhcp,omitempty"`
	// LAN is the LAN's IPv6 side ([lan.ipv6]); absent with mode off.
	LAN *LAN `json:"lan,omitempty"`
}

// Service is one inbound [[service]].
type Service struct {
	Name string `json:"name"`
	// Checked is false when the service's health check is off (all its
	// backends are in the set).
	Checked  bool             `json:"checked"`
	Backends []ServiceBackend `json:"backends"`
}

// ServiceBackend is one backend of a service.
type ServiceBackend struct {
	Address netip.AddrPort `json:"address"`
	// Healthy: in the set that new connections are balanced over.
	Healthy bool `json:"healthy"`
	// Since is when Healthy last changed; absent when it never did.
	Since time.Time `json:"since,omitzero"`
	// LastError is why the last check failed; absent after a good one.
	LastError string `json:"last_error,omitempty"`
}

// Publisher is one address publisher ([[uplink.publish]]).
type Publisher struct {
	Uplink      string     `json:"uplink"`
	Name        string     `json:"name"`
	Kind        string     `json:"kind"`             // command, dyndns2, rfc2136
	Address     netip.Addr `json:"address,omitzero"` // last published; absent: never
	PublishedAt time.Time  `json:"published_at,omitzero"`
	Pending     netip.Addr `json:"pending,omitzero"` // the current address while it is not published yet
	Result      string     `json:"result,omitempty"` // of the last attempt: ok, retry, permanent, running
	Reply       string     `json:"reply,omitempty"`  // the server's or command's answer
	Reason      string     `json:"reason,omitempty"` // why the last attempt failed
	LastAttempt time.Time  `json:"last_attempt,omitzero"`
	NextTry     time.Time  `json:"next_try,omitzero"` // absent: nothing scheduled
}

// DHCP is the LAN DHCP section: the embedded server's pool and leases, or
// the restarts of a supervised external server.
type DHCP struct {
	Mode      string `json:"mode"` // embedded or service
	Interface string `json:"interface"`
	// Embedded mode.
	Listening   bool        `json:"listening,omitempty"`
	Binds       int         `json:"binds,omitempty"`
	InUse       int         `json:"in_use,omitempty"`
	Free        int         `json:"free,omitempty"`
	Bad         int         `json:"bad,omitempty"`
	StaticHosts int         `json:"static_hosts,omitempty"`
	Leases      []DHCPLease `json:"leases,omitempty"`
	Dropped     uint64      `json:"dropped,omitempty"`
	// Service mode.
	Restarts    int       `json:"restarts,omitempty"`
	LastRestart time.Time `json:"last_restart,omitzero"`

	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// DHCPLease is one lease of the embedded server.
type DHCPLease struct {
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	State    string     `json:"state"`
	Expires  time.Time  `json:"expires"`
	Static   bool       `json:"static,omitempty"`
}

// Daemon is the process-wide part of the status.
type Daemon struct {
	Version      string    `json:"version"`
	PID          int       `json:"pid"`
	Started      time.Time `json:"started"`
	Config       string    `json:"config"`
	ConfigLoaded time.Time `json:"config_loaded"`
	LastPass     time.Time `json:"last_pass,omitzero"`
	Passes       uint64    `json:"passes"`
	Repairs      uint64    `json:"repairs"`
	// Error is a problem of the daemon's own that needs a human, e.g. a
	// drain state file it could not read; absent when there is none.
	Error string `json:"error,omitempty"`
	// DrainedUnknown are names in the drain state that no configured uplink
	// has (ignored); absent when there are none.
	DrainedUnknown []string `json:"drained_unknown,omitempty"`
}

// UplinkState is an uplink's health state, as the daemon's health machine
// names it.
type UplinkState string

// Uplink states.
const (
	StateDown     UplinkState = "down"
	StateChecking UplinkState = "checking"
	StateUp       UplinkState = "up"
	StateFailed   UplinkState = "failed"
)

// Uplink is one configured uplink.
type Uplink struct {
	Name      string      `json:"name"`
	Interface string      `json:"interface"`
	Kind      string      `json:"kind"`
	State     UplinkState `json:"state"`
	Reason    string      `json:"reason,omitempty"`
	Address   netip.Addr  `json:"address,omitzero"`
	Gateway   netip.Addr  `json:"gateway,omitzero"` // also the peer of a point-to-point link
	Table     int         `json:"table"`
	Tier      int         `json:"tier"`
	Weight    int         `json:"weight"`
	// Default: the uplink carries default traffic now (is in the main
	// default route).
	Default bool `json:"default"`
	// Drained: taken out of the default route by hand (`uplinkd drain`);
	// absent when not.
	Drained bool `json:"drained,omitempty"`
	// Degraded: up, but its probes' loss or latency over the health
	// window is above [uplink.check] warn_loss or warn_latency; it carries
	// less new traffic, or none, per the check's degraded. Absent when not.
	Degraded bool `json:"degraded,omitempty"`
	// QualityReason is why the quality level last changed (to degraded or
	// back); absent when it never did since the uplink came up.
	QualityReason string `json:"quality_reason,omitempty"`
	// Loss is the fraction 0..1 of the last probe round's probes that
	// went unanswered; absent when the uplink has no health check, its
	// link is not usable or no round finished since its prober started.
	Loss *float64 `json:"loss,omitempty"`
	// RTTms is the mean round-trip time of the last round's answered
	// probes; absent like Loss, and when none answered.
	RTTms *float64 `json:"rtt_ms,omitempty"`
	// JitterMs is the population standard deviation of the last round's
	// answered RTTs around RTTms; absent like RTTms, and when fewer than
	// two probes answered (a check with one target has none).
	JitterMs *float64 `json:"jitter_ms,omitempty"`
	// Window is the health machine's sliding window of rounds, what
	// max_loss, max_latency, warn_loss and warn_latency judge; absent
	// without a health check and before its first round.
	Window     *Window    `json:"window,omitempty"`
	Since      time.Time  `json:"since,omitzero"` // in State since
	Reconnects int        `json:"reconnects"`
	LastEvent  *LastEvent `json:"last_event,omitempty"`
	// Reconnect is what its reconnector does now; absent without
	// [uplink.reconnect].
	Reconnect *Reconnect `json:"reconnect,omitempty"`
	// Traffic is what uplinkd's own netfilter counters counted on the
	// uplink's interface; absent before the first firewall sync.
	Traffic *Traffic `json:"traffic,omitempty"`
	// IPv6 is the uplink's IPv6 side, health apart from IPv4's; absent
	// when the uplink has ipv6 off.
	IPv6 *UplinkIPv6 `json:"ipv6,omitempty"`
}

// Window is an uplink's probe figures over its health window: Rounds
// rounds, the fraction 0..1 of their probes lost, the mean RTT and the
// population standard deviation of the answered probes' RTTs (across
// rounds, so a check with one target has one too); RTTms and JitterMs are
// absent with fewer than one and two answers.
type Window struct {
	Rounds   int      `json:"rounds"`
	Loss     float64  `json:"loss"`
	RTTms    *float64 `json:"rtt_ms,omitempty"`
	JitterMs *float64 `json:"jitter_ms,omitempty"`
}

// Traffic is an uplink's counters by direction: everything that arrived
// on (in) and left through (out) its interface, and the forwarded part of
// each (forward_in: to the LAN, forward_out: from the LAN). The counters
// restart from zero when uplinkd rewrites their chains (docs/status.md).
type Traffic struct {
	In         Count `json:"in"`
	Out        Count `json:"out"`
	ForwardIn  Count `json:"forward_in"`
	ForwardOut Count `json:"forward_out"`
}

// Count is a packet and byte counter.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// UplinkIPv6 is the IPv6 side of an uplink (docs/ipv6.md): State is that
// of its own health machine (up without IPv6 probe targets once the link
// is usable); Default: it is in uplinkd's IPv6 default route. Loss and
// RTTms are of the last IPv6 probe round, as for IPv4.
type UplinkIPv6 struct {
	State   UplinkState `json:"state"`
	Reason  string      `json:"reason,omitempty"`
	Address netip.Addr  `json:"address,omitzero"`
	Gateway netip.Addr  `json:"gateway,omitzero"`
	Default bool        `json:"default"`
	Loss    *float64    `json:"loss,omitempty"`
	RTTms   *float64    `json:"rtt_ms,omitempty"`
	// JitterMs is like the IPv4 jitter_ms, of the IPv6 probes.
	JitterMs *float64 `json:"jitter_ms,omitempty"`
}

// Reconnect is an uplink's reconnect state: idle, dialling (a command
// runs, or the dial it started has not come up yet), pppd (a pppd for the
// peer lives and is left to dial), backoff (waiting after a failed
// attempt), takeover (after a reload, the previous config's attempt runs).
type Reconnect struct {
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // dialling, takeover: since when
	PID   int       `json:"pid,omitempty"`  // pppd: its process id
	Until time.Time `json:"until,omitzero"` // when the next attempt is due; absent: none scheduled
}

// LastEvent is the last event logged for an uplink (the log's event names:
// link-up, link-down, addr-change, probe-up, probe-down, reconnect, ...).
type LastEvent struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// RoleUnknown is the status role of a gateway whose keepalived has not
// reported yet; it is never an event's role.
const RoleUnknown Role = "unknown"

// HA is the two-gateway high-availability section.
type HA struct {
	Role  Role      `json:"role"`
	Since time.Time `json:"since,omitzero"`
}

// LAN is the LAN side of the status; absent when there is nothing to say
// (today: [lan.ipv6] mode off).
type LAN struct {
	// IPv6 is [lan.ipv6] (docs/ipv6.md).
	IPv6 *LAN6 `json:"ipv6,omitempty"`
}

// LAN6 is [lan.ipv6]: its mode, the inside prefix of mode npt and, per
// uplink with ipv6 on, what it delegates to the LAN.
type LAN6 struct {
	Mode    string       `json:"mode"`
	Prefix  netip.Prefix `json:"prefix,omitzero"`
	Uplinks []LAN6Uplink `json:"uplinks"`
	// Announce is the router advertisement sender ([lan.ipv6] announce);
	// absent when it is off.
	Announce *LAN6Announce `json:"announce,omitempty"`
}

// LAN6Announce is what the router advertisements say and when the last
// one left. Lifetimes are in seconds.
type LAN6Announce struct {
	Interface string `json:"interface"`
	// Active: this gateway announces (false: an HA backup).
	Active         bool         `json:"active"`
	RouterLifetime int64        `json:"router_lifetime"`
	Prefixes       []LAN6Prefix `json:"prefixes"`
	LastSent       time.Time    `json:"last_sent,omitzero"`
	Sent           uint64       `json:"sent"`
	Solicited      uint64       `json:"solicited"`
	// Error is why no advertisement can leave (no link-local address on
	// the interface yet, the interface is missing).
	Error string `json:"error,omitempty"`
}

// LAN6Prefix is one announced /64: its uplink ("" for the npt inside
// prefix), preferred or deprecated, and the lifetimes announced.
type LAN6Prefix struct {
	Prefix            netip.Prefix `json:"prefix"`
	Uplink            string       `json:"uplink,omitempty"`
	State             string       `json:"state"`
	PreferredLifetime int64        `json:"preferred_lifetime"`
	ValidLifetime     int64        `json:"valid_lifetime"`
}

// LAN6Uplink is one uplink's delegation. Delegated is absent while the
// uplink has none (none configured, none learned or it expired).
type LAN6Uplink struct {
	Name      string       `json:"name"`
	Delegated netip.Prefix `json:"delegated,omitzero"`
	// Source: config (delegated_prefix) or learned (the PD client).
	Source string `json:"source,omitempty"`
	// Learned is when the PD client last reported it; the lifetimes'
	// ends are absent when infinite (and for a configured prefix).
	Learned        time.Time `json:"learned,omitzero"`
	PreferredUntil time.Time `json:"preferred_until,omitzero"`
	ValidUntil     time.Time `json:"valid_until,omitzero"`
	// Former are replaced learned prefixes still routed until their
	// valid lifetime ends (make-before-break).
	Former []netip.Prefix `json:"former,omitempty"`
	// NPT is the /64 the inside prefix maps to through this uplink
	// (mode npt); absent when the delegation holds no such /64.
	NPT netip.Prefix `json:"npt,omitzero"`
}
