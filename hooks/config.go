package hooks

import (
	"github.com/uplinkd/uplinkd/policy"
)

// ReconnectSpecFor builds an uplink's ReconnectSpec from its config, applying
// DefaultCommands (peer defaults to the uplink name). ok is false when there
// is nothing to run: no [uplink.reconnect] table (reconnecting is opt-in, so
// installing uplinkd never starts running `pon` behind a working pppd set-up),
// or an ethernet uplink without a command. The daemon then creates no
// Reconnector. An empty [uplink.reconnect] table means all defaults.
func ReconnectSpecFor(u *policy.Uplink) (spec ReconnectSpec, ok bool) {
	rc := u.Reconnect
	if rc == nil {
		return ReconnectSpec{Uplink: u.Name, Iface: u.Interface, Kind: string(u.Kind)}, false
	}
	peer := rc.Peer
	if peer == "" {
		peer = u.Name
	}
	spec = ReconnectSpec{
		Uplink:      u.Name,
		Iface:       u.Interface,
		Kind:        string(u.Kind),
		Peer:        peer,
		Backoff:     rc.Backoff,
		MaxBackoff:  rc.MaxBackoff,
		Timeout:     rc.Timeout,
		DialTimeout: rc.DialTimeout,
	}
	spec.Command, spec.StopCommand = DefaultCommands(string(u.Kind), u.Interface, peer, rc.Command, rc.StopCommand)
	return spec, len(spec.Command) > 0
}

// HookSpecsFor converts an uplink's [[uplink.hook]] tables.
func HookSpecsFor(u *policy.Uplink) []HookSpec {
	out := make([]HookSpec, 0, len(u.Hooks))
	for _, h := range u.Hooks {
		on := make([]string, len(h.On))
		for i, ev := range h.On {
			on[i] = string(ev)
		}
		out = append(out, HookSpec{On: on, Command: h.Command, Timeout: h.Timeout})
	}
	return out
}
