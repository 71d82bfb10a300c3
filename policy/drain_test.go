package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// defaultDevs is the default route's devices in d, sorted ("" when none).
func defaultDevs(t *testing.T, cfg *Config, d Desired) string {
	t.Helper()
	var devs []string
	for _, r := range d.Routes {
		if r.Table == cfg.Daemon.DefaultTable && r.Dst.Bits() == 0 {
			for _, nh := range r.Nexthops {
				devs = append(devs, nh.Dev)
			}
		}
	}
	slices.Sort(devs)
	return strings.Join(devs, ",")
}

// TestComputeDrained: a drained uplink leaves the default route, its
// balancing and the tier choice, and keeps everything else of its own
// (from rule, table routes, sticky rule, [[rule]] mark rules).
func TestComputeDrained(t *testing.T) {
	both := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"), "ppp1": p2pAddr("100.64.1.10", "100.64.1.1")},
	}
	tests := []struct {
		name    string
		cfg     *Config
		obs     Observed
		health  Health
		drained Drained
		want    string // the default route's devices
	}{
		{"nothing drained balances both", dualPPP(t), both, nil, nil, "ppp0,ppp1"},
		{"ppp0 drained", dualPPP(t), both, nil, Drained{"ppp0": true}, "ppp1"},
		{"ppp1 drained", dualPPP(t), both, nil, Drained{"ppp1": true}, "ppp0"},
		{"both drained: no default", dualPPP(t), both, nil, Drained{"ppp0": true, "ppp1": true}, ""},
		{"unknown name ignored", dualPPP(t), both, nil, Drained{"nope": true}, "ppp0,ppp1"},
		{"false entry drains nothing", dualPPP(t), both, nil, Drained{"ppp0": false}, "ppp0,ppp1"},
		{"drained tier 1 gives tier 2 the default", ethConfig(t), ethObserved(), nil, Drained{"wan": true}, "wlan0"},
		{"drained tier 2 changes nothing", ethConfig(t), ethObserved(), nil, Drained{"backup": true}, "eth1"},
		{"drained is not a last resort", dualPPP(t), both, Health{"ppp0": true, "ppp1": false}, Drained{"ppp0": true}, "ppp1"},
		{"last resort skips drained", dualPPP(t), both, Health{"ppp0": false, "ppp1": false}, Drained{"ppp0": true}, "ppp1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ComputeFrom(tt.cfg, tt.obs, LinkStates(tt.cfg, tt.obs), tt.health, tt.drained)
			if got := defaultDevs(t, tt.cfg, d); got != tt.want {
				t.Errorf("default route via %q, want %q", got, tt.want)
			}
			for i, st := range d.Uplinks {
				if st.Drained != tt.drained[st.Name] {
					t.Errorf("%s: Drained %v, want %v", st.Name, st.Drained, tt.drained[st.Name])
				}
				if st.Drained && st.Active {
					t.Errorf("%s: drained and active", st.Name)
				}
				u := &tt.cfg.Uplinks[i]
				// What stays: the from rule and the sticky rule of a
				// usable uplink, and the table's default route.
				if st.Addr.IsValid() && !slices.ContainsFunc(d.Rules, func(r Rule) bool {
					return r.Src == netip.PrefixFrom(st.Addr, 32) && r.Table == u.Table
				}) {
					t.Errorf("%s: from rule missing", st.Name)
				}
				if st.Usable && !slices.ContainsFunc(d.Rules, func(r Rule) bool { return r.Mark == UplinkMark(i) && r.Table == u.Table }) {
					t.Errorf("%s: sticky rule missing", st.Name)
				}
				if st.Usable && !slices.ContainsFunc(d.Routes, func(r Route) bool { return r.Table == u.Table && r.Dst.Bits() == 0 }) {
					t.Errorf("%s: its table's default route missing", st.Name)
				}
			}
			for _, r := range tt.cfg.Rules {
				u := tt.cfg.UplinkByName(r.Uplink)
				if !slices.ContainsFunc(d.Rules, func(dr Rule) bool { return dr.Mark == r.Mark && dr.Table == u.Table }) {
					t.Errorf("[[rule]] %s: mark rule missing", r.Name)
				}
			}
		})
	}
}

// TestDrainedUplinkString: the one-line status says drained.
func TestDrainedUplinkString(t *testing.T) {
	st := UplinkState{Name: "ppp0", Usable: true, Drained: true, Addr: netip.MustParseAddr("100.64.0.10")}
	if got, want := st.String(), "ppp0=drained(100.64.0.10)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestDrainRefusal(t *testing.T) {
	both := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"), "ppp1": p2pAddr("100.64.1.10", "100.64.1.1")},
	}
	onlyPPP0 := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1")},
	}
	tests := []struct {
		name    string
		obs     Observed
		health  Health
		drained Drained
		drain   string
		refused string // a part of the error; "" for allowed
	}{
		{"one of two", both, nil, nil, "ppp0", ""},
		{"the other one of two", both, nil, nil, "ppp1", ""},
		{"the last one not drained", both, nil, Drained{"ppp1": true}, "ppp0", "last uplink that is not drained"},
		{"the only one carrying the default", onlyPPP0, nil, nil, "ppp0", "last uplink that carries the default route"},
		{"one that carries nothing", onlyPPP0, nil, nil, "ppp1", ""},
		{"the only healthy one", both, Health{"ppp1": false}, Drained{}, "ppp0", ""}, // last resort: ppp1 takes over
		{"already drained", both, nil, Drained{"ppp0": true, "ppp1": true}, "ppp0", ""},
		{"nothing up: no default to lose", Observed{}, nil, nil, "ppp0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := dualPPP(t)
			err := DrainRefusal(cfg, tt.obs, LinkStates(cfg, tt.obs), tt.health, tt.drained, tt.drain)
			switch {
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.refused != "" && err == nil:
				t.Errorf("allowed, want refused with %q", tt.refused)
			case tt.refused != "" && !strings.Contains(err.Error(), tt.refused):
				t.Errorf("error %q, want it to say %q", err, tt.refused)
			}
		})
	}
	// With last_resort = "none", the only healthy uplink carries the
	// default alone: draining it leaves none.
	cfg := dualPPP(t)
	cfg.Daemon.LastResort = LastResortNone
	if err := DrainRefusal(cfg, both, LinkStates(cfg, both), Health{"ppp1": false}, nil, "ppp0"); err == nil {
		t.Error("draining the only healthy uplink without last resort was allowed")
	}
}
