package ha

import (
	"fmt"
	"strings"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// Role is this gateway's VRRP role as keepalived last reported it.
type Role string

// Roles. RoleUnknown is the role before keepalived's first report: uplinkd
// then treats the box as not MASTER (an exclusive uplink stays down), which
// is the side that can never make two boxes dial one account.
const (
	RoleUnknown Role = "unknown"
	RoleMaster  Role = "master"
	RoleBackup  Role = "backup"
	RoleFault   Role = "fault"
)

// Roles lists every role, RoleUnknown first (metrics, status).
var Roles = []Role{RoleUnknown, RoleMaster, RoleBackup, RoleFault}

// ParseRole accepts the roles keepalived's notify script reports, in any
// case (keepalived passes MASTER, BACKUP, FAULT; `uplinkd event` lower case).
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(s)); r {
	case RoleMaster, RoleBackup, RoleFault:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want master, backup or fault", s)
}

// StoppedWeight is what the track file holds while uplinkd is not running
// (written at a clean exit): below -253, so keepalived puts the instance into
// FAULT whatever weight it configured for the file, and the other gateway
// takes the address.
const StoppedWeight = policy.MinHAWeight

// TrackWeight is the track file's value: the sum of the [uplink.ha] weight of
// every counted uplink that is lost, clamped at policy.MinHAWeight; 0 when
// all are usable. An uplink counts when its weight is not 0. states are the
// pass's uplink states (policy.UplinkState.Usable is the verdict after link
// and probes); an uplink without a state is lost.
//
// An exclusive uplink counts as usable whenever role is not MASTER: it is
// hung up on purpose there, and counting it lost would lower the backup's
// priority (or, with keepalived's weight 0, hold it in FAULT) so that it
// could never take over — the one moment it would be dialled.
func TrackWeight(cfg *policy.Config, states []policy.UplinkState, role Role) int {
	usable := make(map[string]bool, len(states))
	for _, st := range states {
		usable[st.Name] = st.Usable
	}
	sum := 0
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if u.HA.Weight == 0 || usable[u.Name] {
			continue
		}
		if u.HA.Mode == policy.HAExclusive && role != RoleMaster {
			continue
		}
		sum += u.HA.Weight
	}
	return max(sum, policy.MinHAWeight)
}

// WithDialGrace returns states (a copy when it changes anything) in which an
// exclusive uplink that is not usable counts as usable while this box has
// been MASTER for less than the uplink's dial_timeout: the new master is
// dialling it. Without the grace the new master's priority would drop in the
// very window in which it takes over, and the address could go straight back
// to a peer that is no better. graceEnds is when the earliest grace still
// running ends (zero: none), when the daemon must look again.
func WithDialGrace(cfg *policy.Config, states []policy.UplinkState, s State, now time.Time) (out []policy.UplinkState, graceEnds time.Time) {
	out = states
	if s.Role != RoleMaster {
		return out, time.Time{}
	}
	copied := false
	for i, st := range states {
		u := cfg.UplinkByName(st.Name)
		if st.Usable || u == nil || u.HA.Mode != policy.HAExclusive || u.Reconnect == nil {
			continue
		}
		end := s.Since.Add(u.Reconnect.DialTimeout)
		if !now.Before(end) {
			continue
		}
		if !copied {
			out, copied = append([]policy.UplinkState(nil), states...), true
		}
		out[i].Usable = true
		if graceEnds.IsZero() || end.Before(graceEnds) {
			graceEnds = end
		}
	}
	return out, graceEnds
}

// State is the role and since when it holds.
type State struct {
	Role  Role
	Since time.Time
}

// NewState is the state before keepalived's first report.
func NewState(now time.Time) State { return State{Role: RoleUnknown, Since: now} }

// Set records role; it returns the previous role and whether it changed
// (keepalived may report the same role twice, e.g. after a reload).
func (s *State) Set(role Role, now time.Time) (old Role, changed bool) {
	old = s.Role
	if role == old {
		return old, false
	}
	s.Role, s.Since = role, now
	return old, true
}

// RestopInterval is how long after a stop command an exclusive uplink that is
// still (or again) up on a box that is not MASTER gets the stop command once
// more: a reconnect attempt that was already running when the role changed
// may bring the link up after the first stop.
const RestopInterval = 3 * time.Second

// ExclusiveInput is what the daemon knows about one exclusive uplink in a pass.
type ExclusiveInput struct {
	Role Role
	// RoleSince is when Role was taken: a stop before it belongs to an
	// earlier non-MASTER period and does not hold back a stop now.
	RoleSince time.Time
	// Up: the uplink's interface exists (pppd runs, or a dial is done).
	Up bool
	// Stopping: a stop command runs now; LastStop is when the last one
	// started (zero: never).
	Stopping bool
	LastStop time.Time
}

// ExclusiveDecision is what to do with one exclusive uplink in a pass.
type ExclusiveDecision struct {
	// Reconnect: the uplink's reconnector may dial (MASTER only). When
	// false, the daemon cancels any scheduled attempt instead of driving it.
	Reconnect bool
	// Stop: run the stop command now.
	Stop bool
}

// Exclusive decides for one exclusive uplink. On MASTER the reconnector runs
// as for any uplink, and since a down uplink is dialled by its reconnector
// at once, a role event's pass dials it without waiting for anything else.
// Elsewhere the uplink must not be up: it is stopped when seen up, again
// after RestopInterval if it is still (or again) up, never while a stop runs.
func Exclusive(in ExclusiveInput, now time.Time) ExclusiveDecision {
	if in.Role == RoleMaster {
		return ExclusiveDecision{Reconnect: true}
	}
	recent := !in.LastStop.IsZero() && !in.LastStop.Before(in.RoleSince) && now.Before(in.LastStop.Add(RestopInterval))
	stop := in.Up && !in.Stopping && !recent
	return ExclusiveDecision{Stop: stop}
}
