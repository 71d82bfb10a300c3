package policy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// mustParse loads a config the way the daemon does, so that tests see the
// defaults the loader applies.
func mustParse(t testing.TB, src string) *Config {
	t.Helper()
	cfg, err := Parse("test.toml", []byte(src), nil)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return cfg
}

// dualPPP is the seed set-up with both lines in one tier: ppp0 (table 200,
// pri 200), ppp1 (table 201, pri 300), uid-108 traffic via ppp1, a LAN on eth2.
func dualPPP(t testing.TB) *Config {
	return mustParse(t, `
[lan]
interface = "eth2"
networks = ["10.0.0.0/24"]
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
rp_filter = "off"
[[uplink]]
name = "ppp1"
table = 201
rule_priority = 300
rp_filter = "off"
[[rule]]
name = "p2p"
uid = 108
uplink = "ppp1"
mark = 1
priority = 100
`)
}

func p2pLink(name string, idx int, carrier bool) Link {
	return Link{Index: idx, Name: name, Up: true, Carrier: carrier, PointToPoint: true}
}

func p2pAddr(local, peer string) []Addr {
	return []Addr{{Prefix: netip.PrefixFrom(netip.MustParseAddr(local), 32), Peer: netip.MustParseAddr(peer)}}
}

func ethConfig(t testing.TB) *Config {
	return mustParse(t, `
[lan]
interface = "lan0"
[[uplink]]
name = "wan"
interface = "eth1"
table = 100
rule_priority = 1000
tier = 1
[[uplink]]
name = "backup"
interface = "wlan0"
table = 101
rule_priority = 1001
tier = 2
gateway = "192.168.50.1"
`)
}

func ethObserved() Observed {
	return Observed{
		Links: map[string]Link{
			"lan0":  {Index: 2, Name: "lan0", Up: true, Carrier: true},
			"eth1":  {Index: 3, Name: "eth1", Up: true, Carrier: true},
			"wlan0": {Index: 4, Name: "wlan0", Up: true, Carrier: true},
		},
		Addrs: map[string][]Addr{
			"lan0":  {{Prefix: netip.MustParsePrefix("10.0.0.1/24")}},
			"eth1":  {{Prefix: netip.MustParsePrefix("100.64.0.10/24")}},
			"wlan0": {{Prefix: netip.MustParsePrefix("192.168.50.7/24")}},
		},
		Routes: []Route{
			// dhclient's default route: the gateway uplinkd learns.
			{Table: MainTable, Dst: defaultRoute, Metric: 100, Protocol: 16, Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("100.64.0.1"), Dev: "eth1"}}},
			// The Pi-cluster trouble: a default route via the LAN.
			{Table: MainTable, Dst: defaultRoute, Metric: 0, Protocol: 3, Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("10.0.0.1"), Dev: "lan0"}}},
		},
	}
}

func TestCompute(t *testing.T) {
	both := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"), "ppp1": p2pAddr("100.64.1.10", "100.64.1.1")},
	}
	onlyPPP0 := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1")},
	}
	// pppd has created ppp1; IPCP has not given it an address yet.
	ppp1NoAddr := Observed{
		Links: both.Links,
		Addrs: onlyPPP0.Addrs,
	}
	noCarrier := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, false), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: both.Addrs,
	}
	noLastResort := dualPPP(t)
	noLastResort.Daemon.LastResort = "none"
	weighted := dualPPP(t)
	weighted.Uplinks[0].Weight = 3
	eth := ethObserved()
	ethDown := ethObserved()
	ethDown.Links["eth1"] = Link{Index: 3, Name: "eth1", Up: true}
	keepLAN := ethConfig(t)
	keepLAN.LAN.RemoveDefaultRoute = false
	keepLAN.LAN.Forwarding = false

	tests := []struct {
		name   string
		cfg    *Config
		obs    Observed
		health Health
	}{
		{"dual-ppp-both-up", dualPPP(t), both, nil},
		{"dual-ppp-weighted", weighted, both, nil},
		{"dual-ppp-ppp1-absent", dualPPP(t), onlyPPP0, nil},
		{"dual-ppp-ppp1-no-address-yet", dualPPP(t), ppp1NoAddr, nil},
		{"dual-ppp-ppp0-no-carrier", dualPPP(t), noCarrier, nil},
		{"dual-ppp-ppp0-probes-failed", dualPPP(t), both, Health{"ppp0": false, "ppp1": true}},
		{"dual-ppp-nothing-yet", dualPPP(t), Observed{}, nil},
		{"dual-ppp-all-probes-failed-last-resort", dualPPP(t), both, Health{"ppp0": false, "ppp1": false}},
		{"dual-ppp-all-probes-failed-no-last-resort", noLastResort, both, Health{"ppp0": false, "ppp1": false}},
		{"eth-learned-gateway-and-lan-fix", ethConfig(t), eth, nil},
		{"eth-tier1-down-tier2-takes-over", ethConfig(t), ethDown, nil},
		{"eth-lan-route-kept-when-asked", keepLAN, eth, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(tt.cfg, tt.obs, tt.health).String()
			golden(t, filepath.Join("testdata", "desired", tt.name+".txt"), got)
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./policy -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- want\n%s--- got\n%s", path, want, got)
	}
}

// kernelAfter simulates applying changes to a snapshot, to test that the
// diff converges (a second pass changes nothing) without a kernel.
func kernelAfter(obs Observed, changes []Change) Observed {
	out := obs
	out.Rules = append([]Rule(nil), obs.Rules...)
	out.Routes = append([]Route(nil), obs.Routes...)
	out.Sysctls = map[string]string{}
	for k, v := range obs.Sysctls {
		out.Sysctls[k] = v
	}
	for _, c := range changes {
		switch c.Op {
		case OpSetSysctl:
			out.Sysctls[c.Sysctl.Key] = c.Sysctl.Value
		case OpAddRoute:
			out.Routes = append(out.Routes, c.Route)
		case OpReplaceRoute:
			for i := range out.Routes {
				if out.Routes[i].Key() == c.Route.Key() && out.Routes[i].Protocol == Protocol {
					out.Routes[i] = c.Route
				}
			}
		case OpAddRule:
			out.Rules = append(out.Rules, c.Rule)
		case OpDelRule:
			for i := range out.Rules {
				if out.Rules[i].Key() == c.Rule.Key() && out.Rules[i].Protocol == c.Rule.Protocol {
					out.Rules = append(out.Rules[:i], out.Rules[i+1:]...)
					break
				}
			}
		case OpDelRoute, OpDelForeignRoute:
			for i := range out.Routes {
				if out.Routes[i].Equal(c.Route) && out.Routes[i].Protocol == c.Route.Protocol {
					out.Routes = append(out.Routes[:i], out.Routes[i+1:]...)
					break
				}
			}
		}
	}
	return out
}

func commands(changes []Change) string {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.Command() + "\n")
	}
	return b.String()
}

func TestDiff(t *testing.T) {
	cfg := dualPPP(t)
	base := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"), "ppp1": p2pAddr("100.64.1.10", "100.64.1.1")},
	}
	// Converge the base once: that is "the daemon has run".
	first := Compute(cfg, base, nil)
	base.Sysctls = map[string]string{}
	applied := kernelAfter(base, Diff(first, base))

	redialed := applied
	redialed.Addrs = map[string][]Addr{"ppp0": base.Addrs["ppp0"], "ppp1": p2pAddr("100.64.1.11", "100.64.1.1")}

	foreignCopy := base
	foreignCopy.Rules = []Rule{{Priority: 200, Table: 200, Src: netip.MustParsePrefix("100.64.0.10/32"), Protocol: 3}}

	dup := applied
	dup.Rules = append(append([]Rule(nil), applied.Rules...), applied.Rules[0])

	stray := applied
	stray.Routes = append(append([]Route(nil), applied.Routes...),
		Route{Table: 300, Dst: defaultRoute, Protocol: Protocol, Nexthops: []Nexthop{{Dev: "ppp9"}}})

	// pppd's `defaultroute` in main is routed around, not fought.
	pppdDefault := base
	pppdDefault.Routes = []Route{{Table: MainTable, Dst: defaultRoute, Protocol: 3, ScopeLink: true, Nexthops: []Nexthop{{Dev: "ppp0"}}}}

	// A foreign route in a slot of an uplink's own table is reported.
	conflict := base
	conflict.Routes = []Route{{Table: 200, Dst: defaultRoute, Protocol: 3, Nexthops: []Nexthop{{Dev: "ppp1"}}}}

	// 0.2 kept its default route in main: the upgrade deletes it.
	upgrade := applied
	upgrade.Routes = append(append([]Route(nil), applied.Routes...),
		Route{Table: MainTable, Dst: defaultRoute, Protocol: Protocol, ScopeLink: true, Nexthops: []Nexthop{{Dev: "ppp0"}}})

	tests := []struct {
		name string
		obs  Observed
	}{
		{"fresh", base},
		{"adopt-restart", applied},
		{"redial-new-address", redialed},
		{"foreign-identical-rule", foreignCopy},
		{"duplicate-owned-rule", dup},
		{"stray-owned-route", stray},
		{"pppd-default-in-main-left-alone", pppdDefault},
		{"foreign-route-holds-uplink-table-slot", conflict},
		{"upgrade-from-main-default", upgrade},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Compute(cfg, tt.obs, nil)
			changes := Diff(d, tt.obs)
			golden(t, filepath.Join("testdata", "diff", tt.name+".txt"), commands(changes))
			// Whatever the start, one pass converges: the next diff is empty
			// (conflicts excepted: those are reported, never forced).
			again := Diff(Compute(cfg, kernelAfter(tt.obs, changes), nil), kernelAfter(tt.obs, changes))
			for _, c := range again {
				if c.Op != OpConflict {
					t.Errorf("second pass not empty: %s", c.Command())
				}
			}
		})
	}
}

func TestDiffMakeBeforeBreak(t *testing.T) {
	cfg := dualPPP(t)
	obs := Observed{
		Links:   map[string]Link{"ppp1": p2pLink("ppp1", 6, true)},
		Addrs:   map[string][]Addr{"ppp1": p2pAddr("100.64.1.11", "100.64.1.1")},
		Rules:   []Rule{{Priority: 300, Table: 201, Src: netip.MustParsePrefix("100.64.1.10/32"), Protocol: Protocol}},
		Sysctls: map[string]string{},
	}
	changes := Diff(Compute(cfg, obs, nil), obs)
	add, del := -1, -1
	for i, c := range changes {
		if c.Op == OpAddRule && c.Rule.Priority == 300 {
			add = i
		}
		if c.Op == OpDelRule && c.Rule.Priority == 300 {
			del = i
		}
	}
	if add < 0 || del < 0 || add > del {
		t.Fatalf("want add of the new from-rule before delete of the old one, got:\n%s", commands(changes))
	}
}

func TestRepairs(t *testing.T) {
	cfg := dualPPP(t)
	obs := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true)},
		Addrs: map[string][]Addr{"ppp0": p2pAddr("100.64.0.10", "100.64.0.1")},
	}
	d := Compute(cfg, obs, nil)
	changes := Diff(d, obs)
	if n := Repairs(changes, Applied{}); n != 0 {
		t.Errorf("first pass counted %d repairs", n)
	}
	if n := Repairs(changes, d.Applied()); n == 0 {
		t.Errorf("re-adding applied objects must count as repairs")
	}
	lan := Diff(Compute(ethConfig(t), ethObserved(), nil), ethObserved())
	if n := Repairs(lan, Applied{}); n != 1 {
		t.Errorf("removing the LAN default route counts %d repairs, want 1", n)
	}
}

// A configured gateway off the interface's subnet (the loader cannot know
// the address) is refused before the kernel is asked: the uplink is down
// with the reason and no route names the gateway. Before, every pass asked
// the kernel for the route and failed (issue 17).
func TestComputeGatewayOffSubnet(t *testing.T) {
	tests := []struct {
		name   string
		addr   string // wlan0's address; the configured gateway is 192.168.50.1
		usable bool
		reason string
	}{
		{"on the subnet", "192.168.50.7/24", true, "up"},
		{"on a second address's subnet", "", true, "up"},
		{"off the subnet", "10.9.0.7/24", false, "gateway 192.168.50.1 is not on wlan0's subnet 10.9.0.0/24"},
		{"a /32 address", "192.168.50.7/32", false, "gateway 192.168.50.1 is not on wlan0's subnet 192.168.50.7/32"},
		{"the own address", "192.168.50.1/24", false, "gateway 192.168.50.1 is the interface's own address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ethConfig(t)
			obs := ethObserved()
			obs.Links["eth1"] = Link{Index: 3, Name: "eth1", Up: true} // no carrier: backup is the only way out
			if tt.addr == "" {
				obs.Addrs["wlan0"] = []Addr{{Prefix: netip.MustParsePrefix("10.9.0.7/24")}, {Prefix: netip.MustParsePrefix("192.168.50.7/24")}}
			} else {
				obs.Addrs["wlan0"] = []Addr{{Prefix: netip.MustParsePrefix(tt.addr)}}
			}
			d := Compute(cfg, obs, nil)
			st := d.Uplinks[1]
			if st.Usable != tt.usable || st.Reason != tt.reason {
				t.Errorf("backup: usable=%v reason=%q, want %v %q", st.Usable, st.Reason, tt.usable, tt.reason)
			}
			gw := netip.MustParseAddr("192.168.50.1")
			var named bool
			for _, r := range d.Routes {
				for _, nh := range r.Nexthops {
					named = named || nh.Gateway == gw
				}
				named = named || r.Dst == netip.PrefixFrom(gw, 32)
			}
			if named != tt.usable {
				t.Errorf("routes name the gateway: %v, want %v; routes: %+v", named, tt.usable, d.Routes)
			}
		})
	}
}
