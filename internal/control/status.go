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
	// Loss (fraction 0..1 of the last probe round) and RTTms are absent
	// when the uplink has no health check or no round finished yet.
	Loss       *float64   `json:"loss,omitempty"`
	RTTms      *float64   `json:"rtt_ms,omitempty"`
	Since      time.Time  `json:"since,omitzero"` // in State since
	Reconnects int        `json:"reconnects"`
	LastEvent  *LastEvent `json:"last_event,omitempty"`
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
