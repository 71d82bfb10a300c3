package policy

import "errors"

// ErrStale marks an apply that raced with the kernel: a device in the
// snapshot vanished before the change reached it. Not a failure: the event
// that removed the device triggers the next pass.
var ErrStale = errors.New("kernel changed during the pass")

// FlushChanges is the diff that removes everything owned in obs: rules
// first, so no rule points at a table while it empties.
func FlushChanges(obs Observed) []Change {
	var out []Change
	for _, r := range obs.Rules {
		if r.Protocol == Protocol {
			out = append(out, Change{Op: OpDelRule, Rule: r})
		}
	}
	for _, r := range obs.Routes {
		if r.Protocol == Protocol {
			out = append(out, Change{Op: OpDelRoute, Route: r})
		}
	}
	return out
}
