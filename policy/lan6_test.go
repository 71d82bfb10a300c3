package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestParseLAN6Keys: [lan.ipv6] and delegated_prefix are checked with
// their positions (docs/ipv6.md, docs/man/uplinkd.toml.5.md).
func TestParseLAN6Keys(t *testing.T) {
	const two6 = `[[uplink]]
name = "a"
interface = "eth1"
table = 100
rule_priority = 100
ipv6 = true
delegated_prefix = "2001:db8:a::/56"
[[uplink]]
name = "b"
interface = "eth2"
table = 101
rule_priority = 101
ipv6 = true
`
	tests := []struct {
		name, src string
		want      []string // errors; none: the file loads
	}{{
		name: "npt with a ULA /64 and a static delegation",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42:0:0:1::/64\"\nsubnet = 255\n" + two6,
	}, {
		name: "prefix mode with a static delegation",
		src:  "[lan.ipv6]\nmode = \"prefix\"\n" + two6,
	}, {
		name: "mode off by default: delegated_prefix unused",
		src:  two6,
		want: []string{`t.toml:7:20: delegated_prefix needs [lan.ipv6] mode prefix or npt: with mode off nothing uses it`},
	}, {
		name: "unknown mode, prefix and subnet outside npt",
		src:  "[lan.ipv6]\nmode = \"nat66\"\n" + two6,
		want: []string{`t.toml:2:8: mode must be one of off, prefix, npt (got "nat66")`},
	}, {
		name: "prefix and subnet in mode prefix",
		src:  "[lan.ipv6]\nmode = \"prefix\"\nprefix = \"fd42::/64\"\nsubnet = 1\n" + two6,
		want: []string{
			`t.toml:3:10: prefix applies to mode npt only (mode is prefix)`,
			`t.toml:4:10: subnet applies to mode npt only (mode is prefix)`,
		},
	}, {
		name: "npt without prefix",
		src:  "[lan.ipv6]\nmode = \"npt\"\n" + two6,
		want: []string{`missing "prefix" in [lan.ipv6]`},
	}, {
		name: "npt prefix not a /64",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42::/48\"\n" + two6,
		want: []string{`t.toml:3:10: prefix fd42::/48 must be a /64`},
	}, {
		name: "prefix with host bits set",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42::1/64\"\n" + two6,
		want: []string{`t.toml:3:10: prefix fd42::1/64 has host bits set: the prefix is fd42::/64`},
	}, {
		name: "an IPv4 prefix",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"10.0.0.0/24\"\n" + two6,
		want: []string{`t.toml:3:10: prefix must be an IPv6 prefix such as "2001:db8:a::/56" (got "10.0.0.0/24")`},
	}, {
		name: "a link-local inside prefix",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fe80::/64\"\n" + two6,
		want: []string{`t.toml:3:10: prefix fe80::/64 must be unique local (fd00::/8) or global unicast`},
	}, {
		name: "subnet out of range and beyond a /56",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42::/64\"\nsubnet = 256\n" + two6,
		want: []string{`t.toml:11:20: delegated_prefix 2001:db8:a::/56 holds 256 /64s: [lan.ipv6] subnet 256 is not one of them`},
	}, {
		name: "subnet above 65535",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42::/64\"\nsubnet = 65536\n" + strings.Replace(two6, "delegated_prefix = \"2001:db8:a::/56\"\n", "", 1),
		want: []string{`t.toml:4:10: subnet must be 0..65535 (got 65536)`},
	}, {
		name: "inside prefix inside a delegation",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"2001:db8:a:1::/64\"\n" + two6,
		want: []string{`t.toml:10:20: delegated_prefix 2001:db8:a::/56 overlaps [lan.ipv6] prefix 2001:db8:a:1::/64`},
	}, {
		name: "mode without an IPv6 uplink",
		src:  "[lan.ipv6]\nmode = \"prefix\"\n[[uplink]]\nname = \"a\"\ntable = 100\nrule_priority = 100\n",
		want: []string{`t.toml:2:8: mode prefix needs an [[uplink]] with ipv6 = true`},
	}, {
		name: "delegated_prefix: ipv6 off, longer than /64, host bits, overlap, multicast",
		src: `[lan.ipv6]
mode = "prefix"
[[uplink]]
name = "a"
table = 100
rule_priority = 100
delegated_prefix = "2001:db8:a::/56"
[[uplink]]
name = "b"
table = 101
rule_priority = 101
ipv6 = true
delegated_prefix = "2001:db8:b::/80"
[[uplink]]
name = "c"
table = 102
rule_priority = 102
ipv6 = true
delegated_prefix = "2001:db8:c::1/56"
[[uplink]]
name = "d"
table = 103
rule_priority = 103
ipv6 = true
delegated_prefix = "2001:db8::/32"
[[uplink]]
name = "e"
table = 104
rule_priority = 104
ipv6 = true
delegated_prefix = "2001:db8:e::/48"
[[uplink]]
name = "f"
table = 105
rule_priority = 105
ipv6 = true
delegated_prefix = "ff00::/56"
`,
		want: []string{
			`t.toml:7:20: delegated_prefix needs ipv6 = true on the uplink`,
			`t.toml:13:20: delegated_prefix 2001:db8:b::/80 is longer than /64`,
			`t.toml:19:20: delegated_prefix 2001:db8:c::1/56 has host bits set: the prefix is 2001:db8:c::/56`,
			`t.toml:25:20: delegated_prefix 2001:db8::/32 overlaps uplink[0] "a"'s 2001:db8:a::/56`,
			`t.toml:31:20: delegated_prefix 2001:db8:e::/48 overlaps uplink[3] "d"'s 2001:db8::/32`,
			`t.toml:37:20: delegated_prefix ff00::/56 must be global unicast or unique local`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte(tt.src), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.LAN.IPv6.Mode == "" {
					t.Error("mode not defaulted")
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
			if n := strings.Count(err.Error(), "t.toml:"); n != len(tt.want) && !strings.HasPrefix(tt.want[0], "missing") {
				t.Errorf("%d errors, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

// lan6Config is dual6's uplinks behind a LAN with [lan.ipv6] mode, b
// with a static delegation.
func lan6Config(t testing.TB, mode string) *Config {
	src := "[lan]\ninterface = \"lan0\"\n[lan.ipv6]\nmode = \"" + mode + "\"\n"
	if mode == "npt" {
		src += "prefix = \"fd42:0:0:1::/64\"\nsubnet = 3\n"
	}
	return mustParse(t, src+`
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
ipv6 = true
gateway6 = "fe80::2"
delegated_prefix = "2001:db8:bb00::/56"
[[uplink]]
name = "c"
interface = "eth3"
table = 102
rule_priority = 1002
`)
}

func rulesFrom(d Desired, src string) []string {
	var out []string
	for _, r := range d.Rules {
		if r.IPv6 && r.Src.String() == src {
			out = append(out, r.IPRule())
		}
	}
	return out
}

// TestComputeLAN6Prefix: mode prefix routes each uplink's delegated
// prefixes (learned: the current and a former one; configured) out of its
// table, whatever the link's state; forwarding and accept_ra follow.
func TestComputeLAN6Prefix(t *testing.T) {
	cfg := lan6Config(t, "prefix")
	obs := obs6()
	obs.Links["lan0"] = ethLink("lan0", 9)
	obs.Delegated = map[string][]netip.Prefix{
		"eth1": {netip.MustParsePrefix("2001:db8:a100::/56"), netip.MustParsePrefix("2001:db8:a000::/56")},
		"eth2": {netip.MustParsePrefix("2001:db8:ffff::/48")}, // the configured one wins
		"eth3": {netip.MustParsePrefix("2001:db8:c000::/56")}, // ipv6 off: ignored
	}
	d := Compute(cfg, obs, nil)
	for src, want := range map[string]string{
		"2001:db8:a100::/56": "priority 1000 from 2001:db8:a100::/56 lookup 100 proto 157",
		"2001:db8:a000::/56": "priority 1000 from 2001:db8:a000::/56 lookup 100 proto 157",
		"2001:db8:bb00::/56": "priority 1001 from 2001:db8:bb00::/56 lookup 101 proto 157",
	} {
		if got := rulesFrom(d, src); len(got) != 1 || got[0] != want {
			t.Errorf("rules from %s: %q, want %q", src, got, want)
		}
	}
	for _, src := range []string{"2001:db8:ffff::/48", "2001:db8:c000::/56"} {
		if got := rulesFrom(d, src); len(got) != 0 {
			t.Errorf("rules from %s: %q, want none", src, got)
		}
	}
	var sysctls []string
	for _, s := range d.Sysctls {
		if strings.HasPrefix(s.Key, "net/ipv6/conf/") {
			sysctls = append(sysctls, s.Key+"="+s.Value)
		}
	}
	want := []string{"net/ipv6/conf/eth1/accept_ra=2", "net/ipv6/conf/eth2/accept_ra=2", "net/ipv6/conf/all/forwarding=1"}
	if !slices.Equal(sysctls, want) {
		t.Errorf("IPv6 sysctls %q, want %q (accept_ra before forwarding)", sysctls, want)
	}

	// Link down: the prefix rules stay; an absent interface gets no sysctl.
	obs.Links["eth1"] = Link{Index: 2, Name: "eth1"}
	delete(obs.Links, "eth2")
	d = Compute(cfg, obs, nil)
	if len(rulesFrom(d, "2001:db8:a100::/56")) != 1 || len(rulesFrom(d, "2001:db8:bb00::/56")) != 1 {
		t.Error("prefix rules gone with the link")
	}
	if slices.ContainsFunc(d.Sysctls, func(s Sysctl) bool { return s.Key == "net/ipv6/conf/eth2/accept_ra" }) {
		t.Error("accept_ra for an absent interface")
	}

	// The diff adds the new prefix's rule before the former one goes
	// (make-before-break): from {old} to {new, old} to {new}.
	o := obs6()
	o.Delegated = map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("2001:db8:a000::/56")}}
	o.Rules = append(o.Rules, Compute(cfg, o, nil).Rules...)
	o.Delegated["eth1"] = []netip.Prefix{netip.MustParsePrefix("2001:db8:a100::/56"), netip.MustParsePrefix("2001:db8:a000::/56")}
	ch := Diff(Compute(cfg, o, nil), o)
	if got := commandsOf(ch, "rule"); !slices.Equal(got, []string{"ip -6 rule add priority 1000 from 2001:db8:a100::/56 lookup 100 proto 157"}) {
		t.Errorf("new prefix: %q", got)
	}
}

func commandsOf(ch []Change, what string) []string {
	var out []string
	for _, c := range ch {
		if cmd := c.Command(); strings.Contains(cmd, " "+what+" ") {
			out = append(out, cmd)
		}
	}
	return out
}

// TestComputeLAN6Off: mode off, and an IPv4-only config, add nothing for
// delegated prefixes (and no IPv6 forwarding).
func TestComputeLAN6Off(t *testing.T) {
	obs := obs6()
	obs.Delegated = map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("2001:db8:a100::/56")}}
	for name, cfg := range map[string]*Config{"mode off": dual6(t), "npt": lan6Config(t, "npt")} {
		d := Compute(cfg, obs, nil)
		if got := rulesFrom(d, "2001:db8:a100::/56"); len(got) != 0 {
			t.Errorf("%s: rules %q", name, got)
		}
		fwd := slices.ContainsFunc(d.Sysctls, func(s Sysctl) bool { return s.Key == "net/ipv6/conf/all/forwarding" })
		if fwd != (name == "npt") {
			t.Errorf("%s: IPv6 forwarding %v", name, fwd)
		}
	}
}

func TestLANSubnet6(t *testing.T) {
	for _, tc := range []struct {
		p    string
		n    int
		want string // "" none
	}{
		{"2001:db8:a::/56", 0, "2001:db8:a::/64"},
		{"2001:db8:a::/56", 255, "2001:db8:a:ff::/64"},
		{"2001:db8:a::/56", 256, ""},
		{"2001:db8:a::/48", 65535, "2001:db8:a:ffff::/64"},
		{"2001:db8:a:10::/60", 15, "2001:db8:a:1f::/64"},
		{"2001:db8:a:10::/64", 0, "2001:db8:a:10::/64"},
		{"2001:db8:a:10::/64", 1, ""},
		{"2001:db8::/80", 0, ""},
		{"2000::/3", 7, "2000:0:0:7::/64"},
		{"2001:db8::/56", -1, ""},
	} {
		got, ok := LANSubnet6(netip.MustParsePrefix(tc.p), tc.n)
		if tc.want == "" && ok || tc.want != "" && (!ok || got.String() != tc.want) {
			t.Errorf("LANSubnet6(%s, %d) = %v %v, want %q", tc.p, tc.n, got, ok, tc.want)
		}
	}
}

// TestNPT6Maps: mode npt maps the inside prefix to the subnet of each
// uplink's current delegated prefix; one too short for it is left out.
func TestNPT6Maps(t *testing.T) {
	cfg := lan6Config(t, "npt")
	obs := obs6()
	obs.Delegated = map[string][]netip.Prefix{
		"eth1": {netip.MustParsePrefix("2001:db8:a100::/62"), netip.MustParsePrefix("2001:db8:a000::/56")},
	}
	got := NPT6Maps(cfg, obs)
	in := netip.MustParsePrefix("fd42:0:0:1::/64")
	want := []NPT6{
		{Uplink: "a", Iface: "eth1", Inside: in, Outside: netip.MustParsePrefix("2001:db8:a100:3::/64")},
		{Uplink: "b", Iface: "eth2", Inside: in, Outside: netip.MustParsePrefix("2001:db8:bb00:3::/64")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("NPT6Maps = %v\nwant %v", got, want)
	}
	obs.Delegated["eth1"] = []netip.Prefix{netip.MustParsePrefix("2001:db8:a100::/63")} // holds subnets 0 and 1
	if got := NPT6Maps(cfg, obs); len(got) != 1 || got[0].Uplink != "b" {
		t.Errorf("a /63 with subnet 3: %v", got)
	}
	if got := NPT6Maps(lan6Config(t, "prefix"), obs); got != nil {
		t.Errorf("mode prefix: %v", got)
	}
}
