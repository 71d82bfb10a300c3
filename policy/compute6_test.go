package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// dual6 is two ethernet uplinks with IPv6 on (weights 1 and 3, one tier)
// and a ppp uplink with IPv6 on in tier 2.
func dual6(t testing.TB) *Config {
	return mustParse(t, `
[[uplink]]
name = "a"
interface = "eth1"
table = 100
rule_priority = 1000
ipv6 = true
[[uplink]]
name = "b"
interface = "eth2"
table = 101
rule_priority = 1001
weight = 3
ipv6 = true
gateway6 = "fe80::2"
[[uplink]]
name = "p"
interface = "ppp0"
table = 102
rule_priority = 1002
tier = 2
ipv6 = true
`)
}

func addr6(s string, flags AddrFlags) Addr {
	return Addr{Prefix: netip.MustParsePrefix(s), Flags: flags}
}

func ethLink(name string, idx int) Link { return Link{Index: idx, Name: name, Up: true, Carrier: true} }

// obs6 has every uplink up with a usable global address; eth1's router is
// learned from the kernel's RA default route in main.
func obs6() Observed {
	return Observed{
		Links: map[string]Link{"eth1": ethLink("eth1", 2), "eth2": ethLink("eth2", 3), "ppp0": p2pLink("ppp0", 4, true)},
		Addrs: map[string][]Addr{
			"eth1": {{Prefix: netip.MustParsePrefix("192.0.2.2/24")}},
			"eth2": {{Prefix: netip.MustParsePrefix("198.51.100.2/24")}},
			"ppp0": p2pAddr("203.0.113.2", "203.0.113.1"),
		},
		Addrs6: map[string][]Addr{
			"eth1": {addr6("2001:db8:a::2/64", 0), addr6("fe80::a:2/64", 0)},
			"eth2": {addr6("2001:db8:b::2/64", 0)},
			"ppp0": {addr6("2001:db8:c::2/64", 0)},
		},
		Routes: []Route{
			{Table: MainTable, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: 4, Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("192.0.2.1"), Dev: "eth1"}}},
			{Table: MainTable, Dst: netip.MustParsePrefix("0.0.0.0/0"), Metric: 5, Protocol: 4, Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("198.51.100.1"), Dev: "eth2"}}},
			// proto ra: the kernel's route from a router advertisement
			{Table: MainTable, Dst: netip.MustParsePrefix("::/0"), Metric: 1024, Protocol: 9, Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("fe80::1"), Dev: "eth1"}}},
		},
	}
}

func TestCompute6(t *testing.T) {
	tests := []struct {
		name    string
		obs     func(Observed) Observed
		health  Health
		drained Drained
		want    []string // lines of Desired.String that must be there
		absent  []string // lines that must not
	}{{
		name: "all up: per-address rules, table defaults, weighted default of tier 1",
		want: []string{
			"uplink a ipv6: up addr 2001:db8:a::2 gw fe80::1 active",
			"uplink b ipv6: up addr 2001:db8:b::2 gw fe80::2 active",
			"uplink p ipv6: up addr 2001:db8:c::2",
			"rule -6 priority 1000 from 2001:db8:a::2 lookup 100 proto 157",
			"rule -6 priority 1001 from 2001:db8:b::2 lookup 101 proto 157",
			"rule -6 priority 1002 from 2001:db8:c::2 lookup 102 proto 157",
			"rule -6 priority 32600 lookup main suppress_prefixlength 0 proto 157",
			"rule -6 priority 32601 lookup 157 proto 157",
			"route -6 default via fe80::1 dev eth1 table 100 proto 157 metric 1024",
			"route -6 default via fe80::2 dev eth2 table 101 proto 157 metric 1024",
			"route -6 default dev ppp0 table 102 proto 157 metric 1024",
			"route -6 default table 157 proto 157 metric 1024 nexthop via fe80::1 dev eth1 weight 1 nexthop via fe80::2 dev eth2 weight 3",
			"sysctl net/ipv6/fib_multipath_hash_policy=1",
			// sticky: balanced IPv6 connections stay on their uplink
			"rule -6 priority 32000 fwmark 0x10000/0xff0000 lookup 100 proto 157",
			"rule -6 priority 32001 fwmark 0x20000/0xff0000 lookup 101 proto 157",
			"rule -6 priority 32002 fwmark 0x30000/0xff0000 lookup 102 proto 157",
		},
		absent: []string{"fe80::a:2 lookup"},
	}, {
		name:   "IPv6 probes fail on a: the IPv6 default leaves a, IPv4 stays",
		health: Health{Health6Key("a"): false},
		want: []string{
			"uplink a iface eth1 table 100: up addr 192.0.2.2 gw 192.0.2.1 active",
			"uplink a ipv6: probes failing addr 2001:db8:a::2 gw fe80::1",
			"route -6 default via fe80::2 dev eth2 table 157 proto 157 metric 1024",
			// its own table and rule stay: probes still leave through it
			"rule -6 priority 1000 from 2001:db8:a::2 lookup 100 proto 157",
			// the IPv4 sticky rule stays, the IPv6 one goes
			"rule priority 32000 fwmark 0x10000/0xff0000 lookup 100 proto 157",
			"rule -6 priority 32001 fwmark 0x20000/0xff0000 lookup 101 proto 157",
		},
		absent: []string{"rule -6 priority 32000 fwmark"},
	}, {
		name:   "IPv4 probes fail on a: IPv6 keeps a",
		health: Health{"a": false},
		want: []string{
			"uplink a iface eth1 table 100: probes failing addr 192.0.2.2 gw 192.0.2.1",
			"uplink a ipv6: up addr 2001:db8:a::2 gw fe80::1 active",
			"rule -6 priority 32000 fwmark 0x10000/0xff0000 lookup 100 proto 157",
		},
		absent: []string{"rule priority 32000 fwmark"},
	}, {
		name: "tentative, deprecated and dadfailed addresses get no rule; tier 2 takes over",
		obs: func(o Observed) Observed {
			o.Addrs6["eth1"] = []Addr{addr6("2001:db8:a::2/64", AddrTentative)}
			o.Addrs6["eth2"] = []Addr{addr6("2001:db8:b::2/64", AddrDeprecated), addr6("2001:db8:b::3/64", AddrDADFailed)}
			return o
		},
		want: []string{
			"uplink a ipv6: no usable IPv6 address (tentative, deprecated or duplicate) gw fe80::1",
			"uplink p ipv6: up addr 2001:db8:c::2 active",
			"route -6 default dev ppp0 table 157 proto 157 metric 1024",
		},
		absent: []string{"from 2001:db8:a::2", "from 2001:db8:b::2", "from 2001:db8:b::3"},
	}, {
		name: "address change: the new address's rule comes while the old one is still usable",
		obs: func(o Observed) Observed {
			o.Addrs6["ppp0"] = []Addr{addr6("2001:db8:c::2/64", 0), addr6("2001:db8:d::2/64", 0)}
			return o
		},
		want: []string{
			"rule -6 priority 1002 from 2001:db8:c::2 lookup 102 proto 157",
			"rule -6 priority 1002 from 2001:db8:d::2 lookup 102 proto 157",
		},
	}, {
		name: "a device-only path among several: the heaviest carries IPv6 alone (the kernel refuses such multipath)",
		obs: func(o Observed) Observed {
			o.Links["eth1"] = p2pLink("eth1", 2, true) // a ppp-like link without gateway6
			return o
		},
		want: []string{
			"route -6 default via fe80::2 dev eth2 table 157 proto 157 metric 1024",
			"uplink b ipv6: up addr 2001:db8:b::2 gw fe80::2 active",
			"uplink a ipv6: up addr 2001:db8:a::2",
		},
	}, {
		name:    "b drained: the IPv6 default leaves it as the IPv4 one does; its own rule and table stay",
		drained: Drained{"b": true},
		want: []string{
			"route -6 default via fe80::1 dev eth1 table 157 proto 157 metric 1024",
			"rule -6 priority 1001 from 2001:db8:b::2 lookup 101 proto 157",
			"route -6 default via fe80::2 dev eth2 table 101 proto 157 metric 1024",
		},
		absent: []string{"nexthop via fe80::2"},
	}, {
		name: "no RA route and no gateway6: no IPv6 gateway",
		obs: func(o Observed) Observed {
			o.Routes = o.Routes[:2]
			return o
		},
		want:   []string{"uplink a ipv6: no IPv6 gateway addr 2001:db8:a::2"},
		absent: []string{"table 100 proto 157 metric 1024"},
	}, {
		name: "own earlier route keeps the learned router after the RA route expired",
		obs: func(o Observed) Observed {
			o.Routes[2] = Route{Table: 100, Dst: netip.MustParsePrefix("::/0"), Metric: Metric6, Protocol: Protocol,
				Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("fe80::1"), Dev: "eth1"}}}
			return o
		},
		want: []string{"uplink a ipv6: up addr 2001:db8:a::2 gw fe80::1 active"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := obs6()
			if tt.obs != nil {
				obs = tt.obs(obs)
			}
			cfg := dual6(t)
			got := ComputeFrom(cfg, obs, LinkStates(cfg, obs), tt.health, tt.drained).String()
			lines := strings.Split(got, "\n")
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("missing line %q in\n%s", w, got)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(got, a) {
					t.Errorf("unexpected %q in\n%s", a, got)
				}
			}
		})
	}
}

// TestCompute6Off: with ipv6 off everywhere, IPv6 state in the kernel
// changes nothing, and uplinkd's own IPv6 leftovers are removed.
func TestCompute6Off(t *testing.T) {
	cfg := ethConfig(t)
	obs := ethObserved()
	before := Compute(cfg, obs, nil).String()
	obs.Addrs6 = map[string][]Addr{"eth1": {addr6("2001:db8:a::2/64", 0)}}
	leftover := Route{Table: 100, Dst: netip.MustParsePrefix("::/0"), Metric: Metric6, Protocol: Protocol,
		Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("fe80::1"), Dev: "eth1"}}}
	ra := Route{Table: MainTable, Dst: netip.MustParsePrefix("::/0"), Metric: Metric6, Protocol: 9,
		Nexthops: []Nexthop{{Gateway: netip.MustParseAddr("fe80::1"), Dev: "eth1"}}}
	obs.Routes = append(obs.Routes, leftover, ra)
	obs.Rules = append(obs.Rules, Rule{IPv6: true, Priority: 32600, Table: MainTable, SuppressDefault: true, Protocol: Protocol})
	d := Compute(cfg, obs, nil)
	if got := d.String(); got != before {
		t.Fatalf("IPv6 state changed an IPv4-only Compute:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	var cmds []string
	for _, c := range Diff(d, obs) {
		if strings.Contains(c.Command(), "-6") {
			cmds = append(cmds, c.Command())
		}
	}
	want := []string{
		"ip -6 rule del priority 32600 lookup main suppress_prefixlength 0 proto 157",
		"ip -6 route del default via fe80::1 dev eth1 table 100 proto 157 metric 1024",
	}
	if !slices.Equal(cmds, want) {
		t.Fatalf("IPv6 changes = %q, want %q", cmds, want)
	}
}

func TestRuleKeyFamilies(t *testing.T) {
	v4 := Rule{Priority: 32000, Table: MainTable, SuppressDefault: true, Protocol: Protocol}
	v6 := v4
	v6.IPv6 = true
	if v4.Key() == v6.Key() {
		t.Fatalf("an IPv4 and an IPv6 rule share the key %q", v4.Key())
	}
}

// TestParseIPv6Keys: gateway6 and IPv6 probe targets are checked with
// their positions.
func TestParseIPv6Keys(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // errors; none: the file loads
	}{{
		name: "ipv6 with a link-local gateway6 and mixed targets",
		src: `[[uplink]]
name = "a"
interface = "eth1"
table = 100
rule_priority = 100
ipv6 = true
gateway6 = "fe80::1"
[uplink.check]
targets = ["192.0.2.1", "2001:db8::1"]
`,
	}, {
		name: "gateway6 without ipv6, an IPv4 gateway6, a multicast one",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
gateway6 = "2001:db8::1"
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
gateway6 = "192.0.2.1"
[[uplink]]
name = "c"
table = 102
rule_priority = 102
ipv6 = true
gateway6 = "ff02::1"
`,
		want: []string{
			`t.toml:5:12: gateway6 needs ipv6 = true on the uplink`,
			`t.toml:11:12: gateway6 must be an IPv6 address without a zone such as "fe80::1" (got "192.0.2.1")`,
			`t.toml:17:12: gateway6 must be a link-local or global unicast address, not ff02::1`,
		},
	}, {
		name: "IPv6 target with ipv6 off, a link-local target",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
[uplink.check]
targets = ["2001:db8::1"]
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
[uplink.check]
targets = ["fe80::1"]
`,
		want: []string{
			`t.toml:6:12: targets[0] is an IPv6 address (2001:db8::1) but the uplink has ipv6 off; set ipv6 = true or use an IPv4 target`,
			`t.toml:13:12: targets[0] must be a global unicast IPv6 address without a zone (got "fe80::1")`,
		},
	}, {
		name: "publishers by family, IPv6 health hooks",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
ipv6 = true
[[uplink.publish]]
kind = "command"
command = ["/bin/true"]
family = "ipv6"
[[uplink.publish]]
kind = "command"
command = ["/bin/true"]
[[uplink.hook]]
on = ["probe6-down", "probe6-up"]
command = ["/bin/true"]
`,
	}, {
		name: "an IPv6 publisher without ipv6, a bad family",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
[[uplink.publish]]
kind = "command"
command = ["/bin/true"]
family = "ipv6"
[[uplink.publish]]
kind = "command"
command = ["/bin/true"]
family = "both"
`,
		want: []string{
			`t.toml:8:10: family = "ipv6" publishes the uplink's IPv6 address and needs ipv6 = true on the uplink`,
			`t.toml:12:10: family must be one of ipv4, ipv6 (got "both")`,
		},
	}, {
		name: "IPv6 health hooks need ipv6",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
[[uplink.hook]]
on = ["probe-down", "probe6-down"]
command = ["/bin/true"]
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
[[uplink.hook]]
on = ["probe6-down", "probe6-up"]
command = ["/bin/true"]
`,
		want: []string{
			`t.toml:6:21: on[1] = "probe6-down" is the uplink's IPv6 health and needs ipv6 = true on the uplink`,
		},
	}, {
		name: "tcp, dns and http to IPv6 targets",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
ipv6 = true
[uplink.check]
method = "tcp"
targets = ["192.0.2.1:80", "[2001:db8::1]:80", "example.net:443"]
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
[uplink.check]
method = "dns"
targets = ["192.0.2.1", "2001:db8::1", "[2001:db8::2]:5353"]
[[uplink]]
name = "c"
table = 102
rule_priority = 102
ipv6 = true
[uplink.check]
method = "http"
targets = ["http://192.0.2.1/", "https://[2001:db8::1]:8443/health", "http://example.net/"]
`,
	}, {
		name: "tcp, dns and http IPv6 targets with ipv6 off or not global",
		src: `[[uplink]]
name = "a"
table = 100
rule_priority = 100
[uplink.check]
method = "tcp"
targets = ["[2001:db8::1]:80"]
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
[uplink.check]
method = "dns"
targets = ["[fe80::1%eth0]:53", "[2001:db8::1]:0"]
[[uplink]]
name = "c"
table = 102
rule_priority = 102
ipv6 = true
[uplink.check]
method = "http"
targets = ["http://[::1]/"]
`,
		want: []string{
			`t.toml:7:12: targets[0] is an IPv6 address (2001:db8::1) but the uplink has ipv6 off; set ipv6 = true or use an IPv4 target`,
			`t.toml:15:12: targets[0] must be a global unicast IPv6 address without a zone (got "[fe80::1%eth0]:53")`,
			`t.toml:15:33: targets[1] must be an IPv4 address or IPv4:PORT (IPv6: an address or [IPv6]:PORT) for method "dns" (got "[2001:db8::1]:0")`,
			`t.toml:23:12: targets[0] must be a global unicast IPv6 address without a zone (got "http://[::1]/")`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.src), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded; want errors")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in\n%v", w, err)
				}
			}
		})
	}
}
