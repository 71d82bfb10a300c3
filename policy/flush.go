package policy

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
