package firewall

import (
	"reflect"
	"testing"
)

// TestOracleIPT compares the iptables rendering of the rule model with the
// old buildIPT on random Rulesets (temporary, issue 22 item 3).
func TestOracleIPT(t *testing.T) {
	lines := 0
	for seed := range uint64(oracleCases) {
		rs := oracleRuleset(seed)
		old, got := oldBuildIPT(rs), buildIPT(rs)
		if o, g := old.text(), got.text(); o != g {
			t.Fatalf("seed %d: text differs\n--- old\n%s\n--- new\n%s", seed, o, g)
		}
		for name, o := range old.tables {
			g := got.tables[name]
			if !reflect.DeepEqual(o.chains, g.chains) {
				t.Fatalf("seed %d: table %s chains %v, want %v", seed, name, g.chains, o.chains)
			}
			for c, rules := range o.rules {
				if !reflect.DeepEqual(rules, g.rules[c]) {
					t.Fatalf("seed %d: %s/%s rules differ", seed, name, c)
				}
			}
			for c, rules := range g.rules {
				if len(rules) != len(o.rules[c]) {
					t.Fatalf("seed %d: %s/%s has %d rules, want %d", seed, name, c, len(rules), len(o.rules[c]))
				}
			}
		}
		lines += len(old.text())
	}
	t.Logf("%d random Rulesets: iptables text identical (%d bytes)", oracleCases, lines)
}
