// Package ha is uplinkd's side of two gateways sharing one LAN through
// keepalived (VRRP). keepalived holds the LAN gateway address and knows
// nothing about uplinks; this package closes the loop both ways:
//
//   - Health into VRRP: TrackWeight turns the uplinks' health into the
//     integer keepalived reads from its track_file ([ha] track_file), and
//     TrackFile writes it atomically, only when it changes. 0 means every
//     counted uplink is usable; each lost uplink adds its [uplink.ha] weight
//     (negative), and the sum is clamped at -254, which keepalived treats as
//     FAULT with `weight 1`. With keepalived's `weight 0` any non-zero value
//     is FAULT. WithDialGrace lets a new master count an exclusive uplink it
//     is dialling as usable for the uplink's dial_timeout.
//   - Role from VRRP: keepalived's notify script runs `uplinkd event --role
//     ...`; State records the role and since when. For an exclusive uplink
//     (one account for both boxes) Exclusive decides, per pass, whether the
//     reconnector may dial it (MASTER only) and whether its stop command must
//     run (it is up on a box that is not MASTER). RunStop runs that command.
//
// Everything here but TrackFile and RunStop is pure; the daemon owns the
// timing (internal/daemon/ha.go).
package ha
