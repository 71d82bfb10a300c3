package firewall

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// TestContribExamples runs every shipped example through the whole pure
// pipeline, with every uplink up: policy.Compute, then Compute and both
// renderers. Every configured rule, filter and limit must come out as
// written: nothing skipped, nothing rounded.
func TestContribExamples(t *testing.T) {
	files, err := filepath.Glob("../contrib/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no contrib configs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := policy.Parse(f, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Warnings) > 0 {
				t.Errorf("warnings:\n%v", cfg.Warnings)
			}
			obs := policy.Observed{Links: map[string]policy.Link{}, Addrs: map[string][]policy.Addr{}}
			for i, u := range cfg.Uplinks {
				local := netip.AddrFrom4([4]byte{100, 64, byte(i), 10})
				peer := netip.AddrFrom4([4]byte{100, 64, byte(i), 1})
				obs.Links[u.Interface] = policy.Link{Index: 10 + i, Name: u.Interface, Up: true, Carrier: true, PointToPoint: true}
				obs.Addrs[u.Interface] = []policy.Addr{{Prefix: netip.PrefixFrom(local, 32), Peer: peer}}
			}
			desired := policy.Compute(cfg, obs, nil)
			for _, st := range desired.Uplinks {
				if !st.Usable {
					t.Errorf("uplink %s not usable: %s", st.Name, st.Reason)
				}
			}
			rs := Compute(Input{Config: cfg, Uplinks: desired.Uplinks})
			if len(rs.Marks) != len(cfg.Rules) {
				t.Errorf("%d mark rules from %d [[rule]]s", len(rs.Marks), len(cfg.Rules))
			}
			if len(rs.Uplinks) != len(cfg.Uplinks) {
				t.Fatalf("%d uplink rule sets from %d uplinks", len(rs.Uplinks), len(cfg.Uplinks))
			}
			for i, u := range cfg.Uplinks {
				ur := rs.Uplinks[i]
				if ur.Iface != u.Interface || string(ur.NAT) != string(u.SNAT) {
					t.Errorf("uplink %s: %+v", u.Name, ur)
				}
				if u.SNAT == policy.SNATSNAT && !ur.Addr.IsValid() {
					t.Errorf("uplink %s: snat without the address", u.Name)
				}
				if u.Firewall == nil {
					continue
				}
				if ur.Filter == nil || len(ur.Filter.Allow) != len(u.Firewall.Allow) || len(ur.Filter.Limits) != len(u.Firewall.Limit) {
					t.Errorf("uplink %s: filter %+v from %+v", u.Name, ur.Filter, u.Firewall)
					continue
				}
				for j, l := range u.Firewall.Limit {
					got := ur.Filter.Limits[j]
					if want := time.Duration(l.Seconds) * time.Second; got.Period != want || time.Duration(got.Rate)*got.Period != got.Unit {
						t.Errorf("uplink %s limit %d: %d/%s period %s, want exactly one per %s", u.Name, j, got.Rate, got.Unit, got.Period, want)
					}
				}
			}
			for _, text := range []string{buildRules(rs).text(), buildIPT(rs).text()} {
				if text == "" {
					t.Error("empty plan")
				}
			}
		})
	}
}
