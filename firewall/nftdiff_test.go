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
			pa, pb := buildNFT(Compute(a)), buildNFT(Compute(b))
			ta, tb := buildNFT(Compute(a)), buildNFT(Compute(b))
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
