package policy

import (
	"fmt"
	"maps"
	"strings"
)

// Op is what one Change does.
type Op int

// Change operations, in the order Diff emits them.
const (
	OpSetSysctl    Op = iota
	OpAddRoute        // new key: add with NLM_F_EXCL so a foreign route is never overwritten
	OpReplaceRoute    // our own route whose content changed: atomic replace
	OpAddRule
	OpDelRule
	OpDelRoute
	OpDelForeignRoute // an Unwanted route (the LAN default), removed last
	OpConflict        // a desired route whose slot a foreign route holds: reported, not applied
)

func (o Op) String() string {
	return [...]string{"set-sysctl", "add-route", "replace-route", "add-rule", "del-rule", "del-route", "del-foreign-route", "conflict"}[o]
}

// Change is one kernel operation.
type Change struct {
	Op     Op
	Rule   Rule
	Route  Route
	Sysctl Sysctl
	// Old is the route being replaced or the conflicting foreign route.
	Old Route
}

// Diff compares the desired state with the kernel snapshot and returns the
// operations that make the kernel match, make-before-break: sysctls, then
// route adds/replaces (a table's routes before the rules that point at it),
// then rule adds, and only then the deletions of what is no longer wanted.
// Only objects carrying uplinkd's protocol are deleted or replaced; a foreign
// object that already equals a desired one satisfies it.
func Diff(d Desired, obs Observed) []Change {
	var adds, dels []Change

	for _, s := range d.Sysctls {
		if cur, ok := obs.Sysctls[s.Key]; !ok || strings.TrimSpace(cur) != s.Value {
			adds = append(adds, Change{Op: OpSetSysctl, Sysctl: s})
		}
	}

	have := make(map[RouteID][]Route, len(obs.Routes))
	for _, r := range obs.Routes {
		id := r.ID()
		have[id] = append(have[id], r)
	}
	want := make(map[RouteID]bool, len(d.Routes))
	for _, r := range d.Routes {
		id := r.ID()
		want[id] = true
		adds = append(adds, routeChange(r, have[id])...)
	}

	haveRules := make(map[RuleID]bool, len(obs.Rules))
	for _, r := range obs.Rules {
		haveRules[r.ID()] = true
	}
	wantRules := make(map[RuleID]bool, len(d.Rules))
	for _, r := range d.Rules {
		id := r.ID()
		wantRules[id] = true
		if !haveRules[id] {
			adds = append(adds, Change{Op: OpAddRule, Rule: r})
		}
	}

	// Every owned rule that is not wanted goes, and so does every extra copy
	// of a wanted one (the kernel accepts duplicates from other tools).
	kept := make(map[RuleID]bool, len(obs.Rules))
	for _, r := range obs.Rules {
		id := r.ID()
		if wantRules[id] && !kept[id] {
			kept[id] = true
			continue
		}
		if r.Protocol == Protocol {
			dels = append(dels, Change{Op: OpDelRule, Rule: r})
		}
	}
	for _, r := range obs.Routes {
		if r.Protocol == Protocol && !want[r.ID()] {
			dels = append(dels, Change{Op: OpDelRoute, Route: r})
		}
	}
	for _, r := range d.Unwanted {
		dels = append(dels, Change{Op: OpDelForeignRoute, Route: r})
	}
	return append(adds, dels...)
}

func routeChange(r Route, slot []Route) []Change {
	for _, h := range slot {
		if h.Equal(r) {
			return nil
		}
	}
	for _, h := range slot {
		if h.Protocol == Protocol {
			return []Change{{Op: OpReplaceRoute, Route: r, Old: h}}
		}
	}
	if len(slot) > 0 {
		return []Change{{Op: OpConflict, Route: r, Old: slot[0]}}
	}
	return []Change{{Op: OpAddRoute, Route: r}}
}

// Command renders the change as the shell command an admin would type.
func (c Change) Command() string {
	switch c.Op {
	case OpSetSysctl:
		return fmt.Sprintf("sysctl -w %s=%s", strings.ReplaceAll(c.Sysctl.Key, "/", "."), c.Sysctl.Value)
	case OpAddRoute:
		return "ip " + ipFamily(c.Route.IPv6()) + "route add " + c.Route.IPRoute()
	case OpReplaceRoute:
		return "ip " + ipFamily(c.Route.IPv6()) + "route replace " + c.Route.IPRoute()
	case OpAddRule:
		return "ip " + ipFamily(c.Rule.IPv6) + "rule add " + c.Rule.IPRule()
	case OpDelRule:
		return "ip " + ipFamily(c.Rule.IPv6) + "rule del " + c.Rule.IPRule()
	case OpDelRoute, OpDelForeignRoute:
		return "ip " + ipFamily(c.Route.IPv6()) + "route del " + c.Route.IPRoute()
	case OpConflict:
		return fmt.Sprintf("# conflict: wanted %q but a foreign route holds the slot: %q", c.Route.IPRoute(), c.Old.IPRoute())
	}
	return "# unknown change"
}

// Repairs counts changes that undo another actor: an add of exactly the
// object (same key and content) that the previous pass had applied, and the
// removal of a foreign route uplinkd must not leave (a default route via the
// LAN). A route the kernel dropped with its device, and that now comes back
// different (a multipath default with one path less), is a change, not a
// repair. The daemon rate-limits passes with repairs, so it never fights
// another daemon in a tight loop.
func Repairs(changes []Change, applied Applied) int {
	n := 0
	for _, c := range changes {
		if IsRepair(c, applied) {
			n++
		}
	}
	return n
}

// IsRepair tells whether one change undoes another actor (see Repairs).
func IsRepair(c Change, applied Applied) bool {
	switch c.Op {
	case OpAddRoute:
		r, ok := applied.Routes[c.Route.ID()]
		return ok && r.IPRoute() == c.Route.IPRoute()
	case OpAddRule:
		_, ok := applied.Rules[c.Rule.ID()]
		return ok
	case OpDelForeignRoute:
		return true
	}
	return false
}

// Applied is what a desired state put in the kernel, for Repairs: its
// routes and its rules by their IDs. A route's content is
// compared (as `ip route` text) only when a change re-adds its key, so a pass
// renders no text for the routes that stay.
type Applied struct {
	Routes map[RouteID]Route
	Rules  map[RuleID]struct{}
}

// Applied records what the desired state puts in the kernel (see Applied).
func (d Desired) Applied() Applied {
	a := Applied{Routes: make(map[RouteID]Route, len(d.Routes)), Rules: make(map[RuleID]struct{}, len(d.Rules))}
	for _, r := range d.Routes {
		a.Routes[r.ID()] = r
	}
	for _, r := range d.Rules {
		a.Rules[r.ID()] = struct{}{}
	}
	return a
}

// Keep drops from a what want does not hold the same: routes gone or
// changed, rules gone.
func (a Applied) Keep(want Applied) {
	maps.DeleteFunc(a.Routes, func(k RouteID, r Route) bool {
		w, ok := want.Routes[k]
		return !ok || w.IPRoute() != r.IPRoute()
	})
	maps.DeleteFunc(a.Rules, func(k RuleID, _ struct{}) bool {
		_, ok := want.Rules[k]
		return !ok
	})
}
