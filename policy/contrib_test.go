package policy

import (
	"os"
	"testing"
)

// loadContrib parses a shipped example the way `uplinkd check` does, with
// the rt_tables names the examples mention.
func loadContrib(t *testing.T, name string) *Config {
	t.Helper()
	data, err := os.ReadFile("../contrib/" + name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(name, data, testTables)
	if err != nil {
		t.Fatalf("%s:\n%v", name, err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("%s: warnings:\n%v", name, cfg.Warnings)
	}
	return cfg
}

// TestDualPPPoEIsTheSeed: contrib/dual-pppoe.toml does what the seed set-up
// did. With both lines up, the host's own traffic leaves via ppp0 only (the
// default route in its own table), and uid 108's, marked by the [[rule]], is looked up in
// ppp1's table. With ppp0 down, ppp1 carries everything.
func TestDualPPPoEIsTheSeed(t *testing.T) {
	cfg := loadContrib(t, "dual-pppoe.toml")
	both := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: map[string][]Addr{
			"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"),
			"ppp1": p2pAddr("100.64.1.10", "100.64.1.1"),
		},
	}
	ppp0, ppp1 := cfg.UplinkByName("ppp0"), cfg.UplinkByName("ppp1")
	if ppp0 == nil || ppp1 == nil {
		t.Fatalf("uplinks %+v", cfg.Uplinks)
	}

	d := Compute(cfg, both, nil)
	main := defaultRoutes(d, cfg.Daemon.DefaultTable)
	if len(main) != 1 || len(main[0].Nexthops) != 1 || main[0].Nexthops[0].Dev != "ppp0" {
		t.Fatalf("default routes %+v, want one via ppp0 only", main)
	}
	var uidRule *Rule
	for i, r := range d.Rules {
		if r.Mark != 0 && r.Mask == UserMarkMask {
			uidRule = &d.Rules[i]
		}
	}
	rule := cfg.Rules[0]
	if rule.UID == nil || *rule.UID != 108 || rule.Uplink != "ppp1" {
		t.Fatalf("rule %+v, want uid 108 via ppp1", rule)
	}
	if uidRule == nil || uidRule.Mark != rule.Mark || uidRule.Table != ppp1.Table || uidRule.Priority != rule.Priority {
		t.Errorf("mark rule %+v, want fwmark %d/0xffff lookup %d (ppp1) pri %d", uidRule, rule.Mark, ppp1.Table, rule.Priority)
	}
	// ppp1's table routes via ppp1, so the marked traffic leaves there.
	if !hasDefaultIn(d, ppp1.Table, "ppp1") {
		t.Errorf("no default route via ppp1 in table %d: %+v", ppp1.Table, d.Routes)
	}
	for _, st := range d.Uplinks {
		if want := st.Name == "ppp0"; st.Active != want {
			t.Errorf("%s active = %v, want %v", st.Name, st.Active, want)
		}
	}

	onlyPPP1 := both
	onlyPPP1.Links = map[string]Link{"ppp0": p2pLink("ppp0", 5, false), "ppp1": p2pLink("ppp1", 6, true)}
	main = defaultRoutes(Compute(cfg, onlyPPP1, nil), cfg.Daemon.DefaultTable)
	if len(main) != 1 || len(main[0].Nexthops) != 1 || main[0].Nexthops[0].Dev != "ppp1" {
		t.Errorf("ppp0 down: default routes %+v, want one via ppp1", main)
	}
}

// defaultRoutes are the default routes of uplinkd's default table: what
// traffic without a more specific route takes.
func defaultRoutes(d Desired, table int) []Route {
	var out []Route
	for _, r := range d.Routes {
		if r.Table == table && r.Dst.Bits() == 0 {
			out = append(out, r)
		}
	}
	return out
}

func hasDefaultIn(d Desired, table int, dev string) bool {
	for _, r := range d.Routes {
		if r.Table == table && r.Dst.Bits() == 0 && len(r.Nexthops) == 1 && r.Nexthops[0].Dev == dev {
			return true
		}
	}
	return false
}

// TestMinimalExample: contrib/minimal.toml, the README's ten lines, gets the
// default numbers and fails over from ppp0 to wlan0.
func TestMinimalExample(t *testing.T) {
	cfg := loadContrib(t, "minimal.toml")
	ppp0, wlan0 := cfg.UplinkByName("ppp0"), cfg.UplinkByName("wlan0")
	if ppp0 == nil || wlan0 == nil {
		t.Fatalf("uplinks %+v", cfg.Uplinks)
	}
	if ppp0.Table != 1001 || ppp0.RulePriority != 1100 || wlan0.Table != 1002 || wlan0.RulePriority != 1200 {
		t.Errorf("numbers ppp0 %d/%d wlan0 %d/%d, want 1001/1100 and 1002/1200", ppp0.Table, ppp0.RulePriority, wlan0.Table, wlan0.RulePriority)
	}
	if ppp0.Kind != KindPPP || wlan0.Kind != KindWLAN || wlan0.Tier != 2 {
		t.Errorf("ppp0 %+v, wlan0 %+v", ppp0, wlan0)
	}
}
