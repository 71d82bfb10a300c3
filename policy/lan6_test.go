package policy

import (
	"fmt"
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
			`t.toml:4:10: subnet applies to mode npt, or to mode prefix with announce = true`,
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
		name: "announce with every key",
		src: "[lan]\ninterface = \"lan0\"\n[lan.ipv6]\nmode = \"prefix\"\nannounce = true\nrdnss = [\"2001:db8::53\", \"fe80::1\"]\n" +
			"subnet = 3\ndnssl = [\"lan.example\"]\nmin_interval = \"30s\"\nmax_interval = \"90s\"\nrouter_lifetime = \"270s\"\nrouter_preference = \"high\"\n" + two6,
	}, {
		name: "announce with mode off",
		src:  "[lan]\ninterface = \"lan0\"\n[lan.ipv6]\nannounce = true\n" + two6,
		want: []string{`t.toml:4:12: announce needs [lan.ipv6] mode prefix or npt (mode is off)`, `t.toml:11:20: delegated_prefix needs`},
	}, {
		name: "RA keys without announce",
		src:  "[lan]\ninterface = \"lan0\"\n[lan.ipv6]\nmode = \"prefix\"\nrdnss = [\"2001:db8::53\"]\n" + two6,
		want: []string{`t.toml:5:9: rdnss applies only with announce = true`},
	}, {
		name: "announce: no LAN interface, IPv4 rdnss, bad domain, intervals against RFC 4861, unknown preference",
		src: "[lan.ipv6]\nmode = \"prefix\"\nannounce = true\nrdnss = [\"192.0.2.53\", \"ff02::1\"]\ndnssl = [\"bad domain\"]\n" +
			"min_interval = \"100s\"\nmax_interval = \"120s\"\nrouter_lifetime = \"60s\"\nrouter_preference = \"top\"\n" + two6,
		want: []string{
			`t.toml:3:12: announce needs [lan] interface`,
			`t.toml:4:10: rdnss[0] must be an IPv6 address without a zone such as "fe80::1" (got "192.0.2.53")`,
			`t.toml:4:24: rdnss[1] must be a unicast IPv6 address (got ff02::1)`,
			`t.toml:5:10: dnssl[0] "bad domain" is not a domain name`,
			`t.toml:6:16: min_interval 1m40s is more than 3/4 of max_interval 2m0s`,
			`t.toml:8:19: router_lifetime 1m0s is shorter than max_interval 2m0s`,
			`t.toml:9:21: router_preference must be one of low, medium, high (got "top")`,
		},
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
rule_priority = 110
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

// TestParseLAN6MainPriority: the priority of mode prefix's `lookup main
// suppress_prefixlength 0` rules (the lowest IPv6 rule_priority minus 1)
// must be at least 1 and used by no other rule of uplinkd; a clash is
// reported at that rule_priority when the file sets it, else at the key it
// clashes with.
func TestParseLAN6MainPriority(t *testing.T) {
	const head = "[lan.ipv6]\nmode = \"prefix\"\n"
	uplink := func(name string, prio int, v6 bool) string {
		s := fmt.Sprintf("[[uplink]]\nname = %q\ninterface = \"eth%s\"\n", name, name)
		if prio > 0 {
			s += fmt.Sprintf("rule_priority = %d\n", prio)
		}
		if v6 {
			s += "ipv6 = true\n"
		}
		return s
	}
	const rule = "[[rule]]\nname = \"r\"\nuid = 1\nuplink = \"a\"\nmark = 1\npriority = %d\n"
	tests := []struct {
		name, src string
		want      string // the error; "": the file loads
	}{{
		name: "defaults: 1099",
		src:  head + uplink("a", 0, true) + uplink("b", 0, true),
	}, {
		name: "rule_priority 2: priority 1",
		src:  head + uplink("a", 2, true),
	}, {
		name: "rule_priority 1 leaves no priority",
		src:  head + uplink("a", 5, false) + uplink("b", 1, true),
		want: "t.toml:10:17: rule_priority 1 leaves no priority for the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 0 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 1 of uplink \"b\", minus 1): priorities start at 1 (0 is the kernel's lookup local), set rule_priority to 2 or more",
	}, {
		name: "mode npt does not use it",
		src:  "[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42:0:0:1::/64\"\n" + uplink("a", 1, true),
	}, {
		name: "clash with an uplink's rule_priority, at the lowest IPv6 one",
		src:  head + uplink("a", 100, false) + uplink("b", 101, true) + uplink("c", 102, true),
		want: "t.toml:10:17: the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 100 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 101 of uplink \"b\", minus 1) clash with rule priority 100 at line 6: choose another rule_priority",
	}, {
		name: "clash with a [[rule]], at the uplink's rule_priority",
		src:  head + uplink("a", 200, true) + fmt.Sprintf(rule, 199),
		want: "t.toml:6:17: the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 199 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 200 of uplink \"a\", minus 1) clash with rule priority 199 at line 13: choose another rule_priority",
	}, {
		name: "clash with a [[rule]], at the rule when rule_priority is defaulted",
		src:  head + uplink("a", 0, true) + fmt.Sprintf(rule, 1099),
		want: "t.toml:12:12: priority 1099 clashes with the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 1099 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 1100 of uplink \"a\", minus 1)",
	}, {
		name: "clash with the default-route rules, at the uplink",
		src:  head + uplink("a", 32602, true),
		want: "t.toml:6:17: the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 32601 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 32602 of uplink \"a\", minus 1) clash with the default-route rules (priorities 32600 and 32601, default_priority): choose another rule_priority",
	}, {
		name: "clash with the default-route rules, at default_priority",
		src:  "[daemon]\ndefault_priority = 1098\n" + head + uplink("a", 0, true),
		want: "t.toml:2:20: the default-route rules use priorities 1098 and 1099 (default_priority), which clashes with the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 1099 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 1100 of uplink \"a\", minus 1)",
	}, {
		name: "clash with the sticky rules, at the uplink",
		src:  "[daemon]\nsticky_priority = 500\n" + head + uplink("a", 501, true),
		want: "t.toml:8:17: the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 500 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 501 of uplink \"a\", minus 1) clash with the sticky connection rules (priorities 500..500, sticky_priority): choose another rule_priority",
	}, {
		name: "clash with the sticky rules, at sticky_priority",
		src:  "[daemon]\nsticky_priority = 1098\n" + head + uplink("a", 0, true) + uplink("b", 0, false),
		want: "t.toml:2:19: the sticky connection rules use priorities 1098..1099 (sticky_priority), which clashes with the [lan.ipv6] mode prefix rules `from <delegated prefix> lookup main suppress_prefixlength 0` at priority 1099 " +
			"(the lowest rule_priority of an uplink with ipv6 on, 1100 of uplink \"a\", minus 1)",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.src), nil)
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want != "" && err == nil:
				t.Fatal("loaded; want an error")
			case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || strings.Count(err.Error(), "t.toml:") != 1):
				t.Errorf("got\n%v\nwant the one error\n%s", err, tt.want)
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
	// Each prefix first gets main's specific routes (LAN6MainPriority),
	// then its uplink's table.
	for src, want := range map[string][]string{
		"2001:db8:a100::/56": {"priority 999 from 2001:db8:a100::/56 lookup main suppress_prefixlength 0 proto 157", "priority 1000 from 2001:db8:a100::/56 lookup 100 proto 157"},
		"2001:db8:a000::/56": {"priority 999 from 2001:db8:a000::/56 lookup main suppress_prefixlength 0 proto 157", "priority 1000 from 2001:db8:a000::/56 lookup 100 proto 157"},
		"2001:db8:bb00::/56": {"priority 999 from 2001:db8:bb00::/56 lookup main suppress_prefixlength 0 proto 157", "priority 1001 from 2001:db8:bb00::/56 lookup 101 proto 157"},
	} {
		if got := rulesFrom(d, src); !slices.Equal(got, want) {
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
	if len(rulesFrom(d, "2001:db8:a100::/56")) != 2 || len(rulesFrom(d, "2001:db8:bb00::/56")) != 2 {
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
	if got := commandsOf(ch, "rule"); !slices.Equal(got, []string{
		"ip -6 rule add priority 999 from 2001:db8:a100::/56 lookup main suppress_prefixlength 0 proto 157",
		"ip -6 rule add priority 1000 from 2001:db8:a100::/56 lookup 100 proto 157",
	}) {
		t.Errorf("new prefix: %q", got)
	}
}

// TestComputeLAN6MainRules: in mode prefix every delegated prefix (learned,
// configured, former) gets `from <prefix> lookup main
// suppress_prefixlength 0` at one shared priority, the lowest rule_priority
// of the uplinks with ipv6 on minus 1, ahead of its uplink's rule in
// Desired (so the diff adds it first); the diff of what was applied is
// empty; modes npt and off add none.
func TestComputeLAN6MainRules(t *testing.T) {
	const (
		pa, pa0 = "2001:db8:a100::/56", "2001:db8:a000::/56" // eth1's current and former
		pb      = "2001:db8:bb00::/56"                       // eth2's, configured
	)
	uplink := func(name, iface string, prio int, extra string) string {
		return fmt.Sprintf("[[uplink]]\nname = %q\ninterface = %q\ntable = %d\nrule_priority = %d\n%s", name, iface, prio, prio, extra)
	}
	v6 := "ipv6 = true\n"
	tests := []struct {
		name     string
		mode     string
		uplinks  string
		learned  map[string][]string
		wantPrio int      // of the main rules
		want     []string // sources with a main rule, in order; none: no main rule at all
	}{{
		name:     "one uplink, configured prefix",
		mode:     "prefix",
		uplinks:  uplink("b", "eth2", 1001, v6+"delegated_prefix = \""+pb+"\"\n") + uplink("c", "eth3", 50, ""),
		wantPrio: 1000,
		want:     []string{pb},
	}, {
		name:     "two uplinks: the lowest rule_priority of the IPv6 ones, not the first uplink's",
		mode:     "prefix",
		uplinks:  uplink("a", "eth1", 1200, v6) + uplink("b", "eth2", 1100, v6+"delegated_prefix = \""+pb+"\"\n") + uplink("c", "eth3", 1000, ""),
		learned:  map[string][]string{"eth1": {pa}},
		wantPrio: 1099,
		want:     []string{pa, pb},
	}, {
		name:     "a former prefix keeps its main rule while it is routed",
		mode:     "prefix",
		uplinks:  uplink("a", "eth1", 1000, v6) + uplink("b", "eth2", 1001, v6),
		learned:  map[string][]string{"eth1": {pa, pa0}},
		wantPrio: 999,
		want:     []string{pa, pa0},
	}, {
		name:     "one prefix learned on two uplinks: one main rule",
		mode:     "prefix",
		uplinks:  uplink("a", "eth1", 1000, v6) + uplink("b", "eth2", 1001, v6),
		learned:  map[string][]string{"eth1": {pa}, "eth2": {pa}},
		wantPrio: 999,
		want:     []string{pa},
	}, {
		name:    "no delegation yet: no rule",
		mode:    "prefix",
		uplinks: uplink("a", "eth1", 1000, v6) + uplink("b", "eth2", 1001, v6),
	}, {
		name:    "mode npt",
		mode:    "npt\"\nprefix = \"fd42:0:0:1::/64",
		uplinks: uplink("a", "eth1", 1000, v6) + uplink("b", "eth2", 1001, v6+"delegated_prefix = \""+pb+"\"\n"),
		learned: map[string][]string{"eth1": {pa}},
	}, {
		name:    "mode off",
		mode:    "off",
		uplinks: uplink("a", "eth1", 1000, v6) + uplink("b", "eth2", 1001, v6),
		learned: map[string][]string{"eth1": {pa}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, "[lan]\ninterface = \"lan0\"\n[lan.ipv6]\nmode = \""+tt.mode+"\"\n"+tt.uplinks)
			obs := obs6()
			obs.Links["eth3"] = ethLink("eth3", 5)
			obs.Delegated = map[string][]netip.Prefix{}
			for iface, ps := range tt.learned {
				for _, p := range ps {
					obs.Delegated[iface] = append(obs.Delegated[iface], netip.MustParsePrefix(p))
				}
			}
			d := Compute(cfg, obs, nil)
			var got []string
			for i, r := range d.Rules {
				if !r.IPv6 || r.Table != MainTable || !r.Src.IsValid() {
					continue
				}
				got = append(got, r.Src.String())
				if want := (Rule{IPv6: true, Priority: tt.wantPrio, Table: MainTable, Src: r.Src, SuppressDefault: true, Protocol: Protocol}); r != want {
					t.Errorf("main rule %s, want %s", r.IPRule(), want.IPRule())
				}
				// Ahead of every rule that sends the prefix to an uplink.
				if j := slices.IndexFunc(d.Rules, func(o Rule) bool { return o.Src == r.Src && o.Table != MainTable }); j >= 0 && j < i {
					t.Errorf("the main rule of %s comes after %s", r.Src, d.Rules[j].IPRule())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("main rules from %q, want %q", got, tt.want)
			}
			// The kernel holding what was computed: nothing to do.
			obs.Rules = append(obs.Rules, d.Rules...)
			if ch := commandsOf(Diff(Compute(cfg, obs, nil), obs), "rule"); len(ch) != 0 {
				t.Errorf("second diff: %q", ch)
			}
		})
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
