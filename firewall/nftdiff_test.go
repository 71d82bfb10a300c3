package firewall

import (
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// TestNFTSameRulesMatchesText: Sync decides which chains to refill by
// comparing the rules' parts; that must agree with comparing the rendered
// rules, which is what the kernel gets.
func TestNFTSameRulesMatchesText(t *testing.T) {
	otherPorts := benchInput(2, 0, 0)
	otherPorts.Config.Uplinks[1].Firewall = &policy.UplinkFirewall{Allow: []policy.Allow{{Proto: "tcp", Ports: []uint16{22, 8080}}}}
	otherLimit := benchInput(2, 0, 0)
	otherLimit.Config.Uplinks[0].Firewall.Limit[0].Hits = 5
	inputs := map[string]Input{
		"base":        benchInput(2, 0, 0),
		"new address": benchInput(2, 0, 1),
		"deny":        benchInput(2, 3, 0),
		"3 uplinks":   benchInput(3, 0, 0),
		"ports":       otherPorts,
		"limit":       otherLimit,
	}
	same, differ := 0, 0
	for an, a := range inputs {
		for bn, b := range inputs {
			pa, pb := buildRules(Compute(a)), buildRules(Compute(b))
			ta, tb := buildRules(Compute(a)), buildRules(Compute(b))
			for i, ca := range pa.chains {
				for j, cb := range pb.chains {
					if ca.name != cb.name {
						continue
					}
					want := ta.chains[i].rulesText() == tb.chains[j].rulesText()
					if got := ca.sameRules(cb); got != want {
						t.Errorf("%s vs %s, chain %s: sameRules = %v, text equal = %v", an, bn, ca.name, got, want)
					}
					if want {
						same++
					} else {
						differ++
					}
				}
			}
		}
	}
	if same == 0 || differ == 0 {
		t.Fatalf("the inputs exercise too little: %d equal and %d differing chain pairs", same, differ)
	}
	t.Logf("%d equal and %d differing chain pairs", same, differ)
}

// TestNFTInSync: InSync is true exactly when a Sync would do nothing.
func TestNFTInSync(t *testing.T) {
	ns := newNS(t)
	b := backendKinds[0].make(t, ns)
	is := b.(InSyncer)
	rs := [2]Ruleset{Compute(benchInput(2, 0, 0)), Compute(benchInput(2, 0, 1))}
	if is.InSync(rs[0]) {
		t.Error("in sync before the first Sync")
	}
	if _, err := b.Sync(rs[0]); err != nil {
		t.Fatal(err)
	}
	if !is.InSync(rs[0]) || is.InSync(rs[1]) {
		t.Errorf("after Sync: InSync(same) = %v, InSync(other) = %v", is.InSync(rs[0]), is.InSync(rs[1]))
	}
	if changed, err := b.Sync(rs[0]); changed || err != nil {
		t.Errorf("Sync of what InSync called in sync = %v, %v", changed, err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if is.InSync(rs[0]) {
		t.Error("in sync after Flush")
	}
}
