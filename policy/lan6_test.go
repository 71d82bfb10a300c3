package policy

import (
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
