package metrics

import "time"

// haRoles are the roles the role gauge has a series for: one per role, 1 for
// the current one, so `uplinkd_ha_role{role="master"} == 1` selects masters.
var haRoles = [...]string{"unknown", "master", "backup", "fault"}

// SetHARole records this gateway's VRRP role (unknown, master, backup or
// fault) and when it took it: uplinkd_ha_role{role=...} and
// uplinkd_ha_role_since_seconds (Unix time). The first call creates the
// series, so a gateway without HA exports none.
func (r *Registry) SetHARole(role string, since time.Time) {
	if r == nil {
		return
	}
	for _, name := range haRoles {
		v := 0.0
		if name == role {
			v = 1
		}
		r.set.gauge(`uplinkd_ha_role{role="` + name + `"}`).Set(v)
	}
	r.set.gauge("uplinkd_ha_role_since_seconds").Set(float64(since.UnixNano()) / 1e9)
}
