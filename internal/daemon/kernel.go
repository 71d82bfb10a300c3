package daemon

import (
	"github.com/uplinkd/uplinkd/policy"
)

// ipv6Setter is the optional part of a Kernel that keeps a mirror and
// reads IPv6 only when some uplink has ipv6 on.
type ipv6Setter interface {
	SetIPv6(on bool)
}

// tableSetter is the optional part of a Kernel that keeps a mirror:
// *kernel.Kernel keeps the routes of the tables named here in full (and
// only default routes of the others), so it must learn them from the config.
type tableSetter interface {
	SetTables(tables []int)
}

// setTables tells a mirroring kernel which tables the config reads.
func setTables(k Kernel, cfg *policy.Config) {
	if ts, ok := k.(tableSetter); ok {
		ts.SetTables(cfg.Tables())
	}
	if s, ok := k.(ipv6Setter); ok {
		s.SetIPv6(cfg.IPv6On())
	}
}
