package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// filter6Input is the seed config with ipv6 on in every uplink (no NPT),
// changed by mod.
func filter6Input(mod func(c *policy.Config)) Input {
	in := Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1")}
	for i := range in.Config.Uplinks {
		in.Config.Uplinks[i].IPv6 = true
	}
	if mod != nil {
		mod(in.Config)
	}
	return in
}

func dropPolicies(c *policy.Config) {
	c.Firewall.InputPolicy, c.Firewall.ForwardPolicy = policy.PolicyDrop, policy.PolicyDrop
}

func deny6(c *policy.Config) {
	c.Firewall.Deny = append(c.Firewall.Deny,
		policy.DenyRule{Source: netip.MustParsePrefix("2001:db8:bad::/48"), Action: policy.DenyDrop},
		policy.DenyRule{Source: netip.MustParsePrefix("2001:db8:bad:1::/64"), Action: policy.DenyReject}, // inside the drop: drop wins
		policy.DenyRule{Source: netip.MustParsePrefix("fd42:0:0:1::50/128"), Action: policy.DenyReject},
		policy.DenyRule{Source: netip.MustParsePrefix("fd42:0:0:1::51/128"), Action: policy.DenyReject}, // adjacent: merged
	)
}

// TestFilter6Plan: what each backend renders of the IPv6 side of
// input_policy, forward_policy, the deny list and the sticky marks, and
// that none of it appears without an uplink with ipv6 on.
func TestFilter6Plan(t *testing.T) {
	tests := []struct {
		name         string
		in           Input
		nft, ipt     []string // lines that must be in the plan
		nftNo, iptNo []string // strings that must not
	}{{
		name: "ipv6 on, policies accept: only the filtered uplinks' chains, the MAC deny list and the sticky marks",
		in:   filter6Input(nil),
		nft: []string{
			"chain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tjump deny comment \"deny list\"\n\t\tiifname \"ppp0\" jump in_ppp0",
			"chain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tjump deny comment \"deny list\"\n\t}",
			`ether saddr @deny_mac_reject reject with icmpv6 port-unreachable comment "deny mac reject"`,
			`icmpv6 type 130 accept comment "icmpv6"`, // MLD on a filtered uplink too
			`iifname "eth0" ct direction original ct mark & 0x00ff0000 == 0x00010000 meta mark set meta mark & 0xff00ffff | 0x00010000 comment "sticky ppp0"`,
			`iifname "eth0" ct direction reply ct mark & 0x00ff0000 == 0x00020000 meta mark set meta mark & 0xff00ffff | 0x00020000 comment "reply via ppp1"`,
		},
		nftNo: []string{"ct state established,related accept comment \"established\"\n\t\tiifname \"lo\""},
		ipt: []string{
			"-A UPLINKD-IN6 -j UPLINKD-DENY6",
			"-A UPLINKD-FWD6 -j UPLINKD-DENY6",
			"-A UPLINKD-DENY6 -m mac --mac-source 02:00:00:00:00:01 -j REJECT --reject-with icmp6-port-unreachable",
			"-A UPLINKD-MARK6-PRE -i eth0 -m conntrack --ctdir ORIGINAL -m connmark --mark 0x10000/0xff0000 -j MARK --set-xmark 0x10000/0xff0000",
			"-A UPLINKD-MARK6-PRE -i eth0 -m conntrack --ctdir REPLY -m connmark --mark 0x30000/0xff0000 -j MARK --set-xmark 0x30000/0xff0000",
		},
		iptNo: []string{"-A UPLINKD-IN6 -j DROP", "-A UPLINKD-FWD6 -j DROP"},
	}, {
		name: "drop policies: what IPv6 needs stays open, LAN to uplinks is forwarded, DNATed traffic is not",
		in:   filter6Input(dropPolicies),
		nft: []string{
			"type filter hook input priority filter; policy drop;",
			"type filter hook forward priority filter; policy drop;",
			"iifname \"ppp1\" jump in_ppp1 comment \"uplink ppp1\"\n\t\tct state established,related accept comment \"established\"\n\t\tiifname \"lo\" accept comment \"loopback\"",
			`icmpv6 type 128 accept comment "icmpv6"`,
			`icmpv6 type 135 accept comment "icmpv6"`,
			`icmpv6 type 143 accept comment "icmpv6"`,
			`ip6 saddr fe80::/10 udp dport 546 accept comment "dhcpv6 client"`,
			"iifname \"eth0\" accept comment \"lan\"\n\t}\n\tchain in_ppp0",
			"jump deny comment \"deny list\"\n\t\tct state established,related accept comment \"established\"\n\t\ticmpv6 type 1 accept",
			"icmpv6 type 4 accept comment \"icmpv6\"\n\t\tiifname \"eth0\" accept comment \"lan\"\n\t}",
		},
		nftNo: []string{"ct status dnat"},
		ipt: []string{
			"-A UPLINKD-IN6 -i ppp0 -j UPLINKD-IN6-ppp0\n-A UPLINKD-IN6 -i ppp0 -j RETURN",
			"-A UPLINKD-IN6 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n-A UPLINKD-IN6 -i lo -j RETURN",
			"-A UPLINKD-IN6 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j RETURN",
			"-A UPLINKD-IN6 -s fe80::/10 -p udp -m udp --dport 546 -j RETURN\n-A UPLINKD-IN6 -i eth0 -j RETURN\n-A UPLINKD-IN6 -j DROP",
			"-A UPLINKD-FWD6 -j UPLINKD-DENY6\n-A UPLINKD-FWD6 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n-A UPLINKD-FWD6 -p ipv6-icmp -m icmp6 --icmpv6-type 1 -j RETURN",
			"-A UPLINKD-FWD6 -p ipv6-icmp -m icmp6 --icmpv6-type 4 -j RETURN\n-A UPLINKD-FWD6 -i eth0 -j RETURN\n-A UPLINKD-FWD6 -j DROP",
		},
		iptNo: []string{"--ctstate DNAT"},
	}, {
		name: "IPv6 deny sources: merged, drop wins over reject, reject by TCP reset or ICMPv6",
		in:   filter6Input(deny6),
		nft: []string{
			"set deny_drop {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = {\n\t\t\t2001:db8:bad::/48\n\t\t}",
			"set deny_reject {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = {\n\t\t\tfd42:0:0:1::50/127\n\t\t}",
			`ip6 saddr @deny_drop drop comment "deny drop"`,
			`ip6 saddr @deny_reject meta l4proto tcp reject with tcp reset comment "deny reject"`,
			`ip6 saddr @deny_reject reject with icmpv6 port-unreachable comment "deny reject"`,
		},
		ipt: []string{
			"-A UPLINKD-DENY6 -s 2001:db8:bad::/48 -j DROP",
			"-A UPLINKD-DENY6 -s fd42:0:0:1::50/127 -p tcp -j REJECT --reject-with tcp-reset",
			"-A UPLINKD-DENY6 -s fd42:0:0:1::50/127 -j REJECT --reject-with icmp6-port-unreachable",
		},
		iptNo: []string{"2001:db8:bad:1::"},
	}, {
		name: "no LAN interface: no sticky marks, no LAN rule",
		in: filter6Input(func(c *policy.Config) {
			dropPolicies(c)
			c.LAN.Interface = ""
		}),
		nftNo: []string{"sticky", "reply via", `comment "lan"`},
		iptNo: []string{"--ctdir", "-i eth0"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := Compute(tt.in)
			nft := npt6Text(rs)
			ipt, _ := ip6Program(rs)
			check := func(backend, text string, want, no []string) {
				for _, w := range want {
					if !strings.Contains(text, w) {
						t.Errorf("%s plan lacks %q:\n%s", backend, w, text)
					}
				}
				for _, n := range no {
					if strings.Contains(text, n) {
						t.Errorf("%s plan has %q:\n%s", backend, n, text)
					}
				}
			}
			check("nft", nft, tt.nft, tt.nftNo)
			check("iptables", ipt, tt.ipt, tt.iptNo)
		})
	}
}

// TestFilter6IPv4Only: the same drop policies, IPv6 deny entries in the
// config and MAC denies render no IPv6 at all while no uplink has ipv6 on
// (a hand-built config: the loader refuses IPv6 sources then), and the
// IPv4 table is the same with and without ipv6 on.
func TestFilter6IPv4Only(t *testing.T) {
	in := filter6Input(func(c *policy.Config) { dropPolicies(c); deny6(c) })
	for i := range in.Config.Uplinks {
		in.Config.Uplinks[i].IPv6 = false
	}
	rs := Compute(in)
	if s := npt6Text(rs); s != "" {
		t.Errorf("IPv4-only config renders table ip6:\n%s", s)
	}
	if s, _ := ip6Program(rs); s != "" {
		t.Errorf("IPv4-only config renders ip6tables:\n%s", s)
	}
	on := Compute(filter6Input(func(c *policy.Config) { dropPolicies(c); deny6(c) }))
	if a, b := buildRules(rs).text(), buildRules(on).text(); a != b {
		t.Errorf("table ip uplinkd changes with ipv6 on:\n%s\n---\n%s", a, b)
	}
	if a, b := buildIPT(rs).text(), buildIPT(on).text(); a != b {
		t.Errorf("the iptables program changes with ipv6 on:\n%s\n---\n%s", a, b)
	}
}

// TestFilter6PlanMatchesSync: for drop policies and an IPv6 deny list,
// nft -f of the plan and Sync give the same table ip6 uplinkd6, and
// ip6tables-restore of the plan and Sync the same chains (legacy and
// nft); Check finds it intact and Flush removes it.
func TestFilter6PlanMatchesSync(t *testing.T) {
	rs := Compute(filter6Input(func(c *policy.Config) { dropPolicies(c); deny6(c) }))
	b, viaGo := nftTextMatchesSync(t, rs, "policy drop", "2001:db8:bad::/48")
	if ok, err := b.Check(); !ok || err != nil {
		t.Errorf("Check after Sync: %v, %v", ok, err)
	}
	// A change of the policies or the deny list alone rewrites the table.
	open := Compute(filter6Input(nil))
	if changed, err := b.Sync(open); err != nil || !changed {
		t.Fatalf("Sync with the accept policies: %v, %v", changed, err)
	}
	if got := viaGo.mustRun(t, "nft", "list", "table", "ip6", Table6Name); strings.Contains(got, "policy drop") || strings.Contains(got, "2001:db8:bad::/48") {
		t.Errorf("after the policies changed to accept:\n%s", got)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := ip6State(t, viaGo); s != "" {
		t.Errorf("after Flush:\n%s", s)
	}
	for _, k := range backendKinds[1:] {
		t.Run(k.name, func(t *testing.T) {
			b, viaSync, ip6 := ip6RestoreMatchesSync(t, k, rs, "-A UPLINKD-FWD6 -j DROP", "icmp6-port-unreachable")
			save := viaSync.mustRun(t, ip6+"-save", "-t", "filter")
			for _, jump := range []string{"-A INPUT -j UPLINKD-IN6", "-A FORWARD -j UPLINKD-FWD6"} {
				if !strings.Contains(save, jump) {
					t.Errorf("no %q in\n%s", jump, save)
				}
			}
			if ok, err := b.Check(); !ok || err != nil {
				t.Errorf("Check after Sync: %v, %v", ok, err)
			}
			if _, err := b.Sync(Compute(filter6Input(nil))); err != nil {
				t.Fatal(err)
			}
			if got := npt6Rules(t, viaSync, ip6); strings.Contains(got, "-j DROP\n-A UPLINKD-FWD6") || strings.Contains(got, "2001:db8:bad::/48") || strings.Contains(got, "-A UPLINKD-IN6 -j DROP") {
				t.Errorf("after the policies changed to accept:\n%s", got)
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			if s := npt6Rules(t, viaSync, ip6); s != "" {
				t.Errorf("after Flush:\n%s", s)
			}
		})
	}
}

// TestPrefixes6: merging and subtracting IPv6 prefix lists (the deny sets).
func TestPrefixes6(t *testing.T) {
	ps := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	tests := []struct {
		name      string
		a, b      []netip.Prefix
		merged    []netip.Prefix // mergePrefixes(a)
		subtract  []netip.Prefix // subtractPrefixes(merged, b)
		intervals int            // len(intervalElems6(a))
	}{
		{"adjacent halves join", ps("2001:db8::/33", "2001:db8:8000::/33"), nil, ps("2001:db8::/32"), nil, 3},
		{"contained goes", ps("2001:db8::/32", "2001:db8:1::/48"), nil, ps("2001:db8::/32"), nil, 3},
		{"hole punched", ps("2001:db8::/47"), ps("2001:db8::/48"), ps("2001:db8::/47"), ps("2001:db8:1::/48"), 3},
		{"single addresses", ps("fd00::1/128", "fd00::2/128", "fd00::3/128"), ps("fd00::2/128"), ps("fd00::1/128", "fd00::2/127"), ps("fd00::1/128", "fd00::3/128"), 3},
		{"from :: on", ps("::/1"), nil, ps("::/1"), nil, 2},
		{"up to the end", ps("ff00::/8"), nil, ps("ff00::/8"), nil, 2},
		{"all covered", ps("fd00::/64"), ps("fd00::/8"), ps("fd00::/64"), nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mergePrefixes(tt.a)
			if !slices.Equal(m, tt.merged) {
				t.Errorf("merge = %v, want %v", m, tt.merged)
			}
			want := tt.subtract
			if tt.b == nil {
				want = tt.merged // nothing to subtract
			}
			if s := subtractPrefixes(m, tt.b); !slices.Equal(s, want) {
				t.Errorf("subtract = %v, want %v", s, tt.subtract)
			}
			if n := len(intervalElems6(tt.a)); n != tt.intervals {
				t.Errorf("%d interval elements, want %d", n, tt.intervals)
			}
		})
	}
}
