package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// npt6Input is the seed config (whose uplinks have [uplink.firewall])
// with NPTv6 mappings on both uplinks (none for ""), and ipv6 on in both
// uplinks when some mapping is given.
func npt6Input(outA, outB string) Input {
	in := Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1")}
	for i := range in.Config.Uplinks {
		in.Config.Uplinks[i].IPv6 = outA != "" || outB != ""
	}
	inside := netip.MustParsePrefix("fd42:0:0:1::/64")
	for i, out := range []string{outA, outB} {
		if out == "" {
			continue
		}
		u := in.Config.Uplinks[i]
		in.NPT6 = append(in.NPT6, policy.NPT6{Uplink: u.Name, Iface: u.Interface, Inside: inside, Outside: netip.MustParsePrefix(out)})
	}
	return in
}

// TestNPT6Plan: the text of both backends, and an IPv4-only Ruleset
// renders no IPv6 at all.
func TestNPT6Plan(t *testing.T) {
	rs := Compute(npt6Input("2001:db8:8000:3::/64", "2001:db8:8100:3::/64"))
	nft := (&nftBackend{}).Plan(rs)
	for _, want := range []string{
		"table ip6 uplinkd6 {",
		"type nat hook postrouting priority srcnat; policy accept;",
		"type nat hook prerouting priority dstnat; policy accept;",
		`oifname "ppp0" ip6 saddr fd42:0:0:1::/64 snat ip6 prefix to 2001:db8:8000:3::/64 comment "npt6 ppp0"`,
		`iifname "ppp1" ip6 daddr 2001:db8:8100:3::/64 dnat ip6 prefix to fd42:0:0:1::/64 comment "npt6 ppp1"`,
	} {
		if !strings.Contains(nft, want) {
			t.Errorf("nft plan lacks %q:\n%s", want, nft)
		}
	}
	ipt := (&iptBackend{}).Plan(rs)
	for _, want := range []string{
		"-A UPLINKD-NPT6-POST -o ppp0 -s fd42:0:0:1::/64 -m comment --comment \"npt6 ppp0\" -j SNPT --src-pfx fd42:0:0:1::/64 --dst-pfx 2001:db8:8000:3::/64",
		"-A UPLINKD-NPT6-PRE -i ppp1 -d 2001:db8:8100:3::/64 -m comment --comment \"npt6 ppp1\" -j DNPT --src-pfx 2001:db8:8100:3::/64 --dst-pfx fd42:0:0:1::/64",
	} {
		if !strings.Contains(ipt, want) {
			t.Errorf("iptables plan lacks %q:\n%s", want, ipt)
		}
	}
	v4 := Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1")})
	for _, b := range []Backend{&nftBackend{}, &iptBackend{}} {
		if p := b.Plan(v4); strings.Contains(p, "ip6") || strings.Contains(p, "NPT6") {
			t.Errorf("IPv4-only plan mentions IPv6:\n%s", p)
		}
	}
}

// TestNPT6PlanMatchesSync: nft -f of the plan and Sync give the same
// table ip6 uplinkd6; ip6tables-restore of the plan and Sync the same
// chains.
func TestNPT6PlanMatchesSync(t *testing.T) {
	rs := Compute(npt6Input("2001:db8:8000:3::/64", "2001:db8:8100::/64"))
	nftTextMatchesSync(t, rs)
	for _, k := range backendKinds[1:] {
		t.Run(k.name, func(t *testing.T) {
			ip6RestoreMatchesSync(t, k, rs, "SNPT", "--icmpv6-type 134")
		})
	}
}

// nftTextMatchesSync: nft -f of rs's table ip6 uplinkd6 text and the
// nftables backend's Sync of rs give the same table, which holds each of
// want; it returns the backend and its namespace.
func nftTextMatchesSync(t *testing.T, rs Ruleset, want ...string) (Backend, *netNS) {
	t.Helper()
	viaText, viaGo := newNS(t), newNS(t)
	b := backendKinds[0].make(t, viaGo)
	viaText.runStdin(t, npt6Text(rs), "nft", "-f", "-")
	if _, err := b.Sync(rs); err != nil {
		t.Fatal(err)
	}
	text := viaText.mustRun(t, "nft", "list", "table", "ip6", Table6Name)
	got := viaGo.mustRun(t, "nft", "list", "table", "ip6", Table6Name)
	if got != text {
		t.Errorf("Sync differs from nft -f\n--- nft -f\n%s\n--- Sync\n%s", text, got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("no %q in\n%s", w, got)
		}
	}
	return b, viaGo
}

// ip6RestoreMatchesSync: ip6tables-restore of rs's plan and the iptables
// backend k's Sync of rs give the same chains, which hold each of want;
// it returns the backend, its namespace and the ip6tables command.
func ip6RestoreMatchesSync(t *testing.T, k backendKind, rs Ruleset, want ...string) (Backend, *netNS, string) {
	t.Helper()
	viaText, viaSync := newNS(t), newNS(t)
	b := k.make(t, viaSync)
	ip6 := strings.Replace(k.iptables, "iptables", "ip6tables", 1)
	text, _ := ip6Program(rs)
	viaText.runStdin(t, text, ip6+"-restore", "--noflush")
	if _, err := b.Sync(rs); err != nil {
		t.Fatal(err)
	}
	got, plan := npt6Rules(t, viaSync, ip6), npt6Rules(t, viaText, ip6)
	if got != plan {
		t.Errorf("Sync differs from the plan\n--- restore\n%s\n--- Sync\n%s", plan, got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("no %q in\n%s", w, got)
		}
	}
	return b, viaSync, ip6
}

// npt6Rules is ip6tables-save limited to uplinkd's chains' content.
func npt6Rules(t testing.TB, ns *netNS, ip6tables string) string {
	var out []string
	for _, line := range strings.Split(ns.mustRun(t, ip6tables+"-save"), "\n") {
		if strings.HasPrefix(line, ":"+ChainPrefix) || strings.HasPrefix(line, "-A "+ChainPrefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// ip6State is what the namespace holds of uplinkd's IPv6 firewall state:
// table ip6 uplinkd6 and the ip6tables NPTv6 chains and jumps (legacy and
// nft), "" when none.
func ip6State(t testing.TB, ns *netNS) string {
	var out []string
	if tables := ns.mustRun(t, "nft", "list", "tables", "ip6"); strings.Contains(tables, Table6Name) {
		out = append(out, ns.mustRun(t, "nft", "list", "table", "ip6", Table6Name))
	}
	for _, save := range []string{"ip6tables-save", "ip6tables-legacy-save"} {
		for _, line := range strings.Split(ns.mustRun(t, save), "\n") {
			if strings.Contains(line, ChainPrefix) {
				out = append(out, save+": "+line)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestNPT6Lifecycle, per backend: an IPv4-only Sync writes no IPv6 state;
// mappings come, change alone (the IPv4 state stays), are repaired after
// damage, and go with the mode or with Flush.
func TestNPT6Lifecycle(t *testing.T) {
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			b := k.make(t, ns)
			v4 := Compute(npt6Input("", ""))
			if _, err := b.Sync(v4); err != nil {
				t.Fatal(err)
			}
			if s := ip6State(t, ns); s != "" {
				t.Fatalf("an IPv4-only Sync wrote IPv6 state:\n%s", s)
			}
			one := Compute(npt6Input("2001:db8:8000:3::/64", ""))
			if changed, err := b.Sync(one); err != nil || !changed {
				t.Fatalf("Sync with a mapping: %v, %v", changed, err)
			}
			if s := ip6State(t, ns); strings.Count(s, "2001:db8:8000:3:") < 2 {
				t.Fatalf("after the mapping:\n%s", s)
			}
			if ok, err := b.Check(); !ok || err != nil {
				t.Fatalf("Check after the sync: %v, %v", ok, err)
			}
			// The delegation changes: only the mapping does.
			two := Compute(npt6Input("2001:db8:8200:3::/64", "2001:db8:8100::/64"))
			if changed, err := b.Sync(two); err != nil || !changed {
				t.Fatalf("Sync with a new mapping: %v, %v", changed, err)
			}
			s := ip6State(t, ns)
			if strings.Contains(s, "2001:db8:8000:3:") || !strings.Contains(s, "2001:db8:8200:3:") || !strings.Contains(s, "2001:db8:8100:") {
				t.Fatalf("after the change:\n%s", s)
			}
			if changed, err := b.Sync(two); err != nil || changed {
				t.Fatalf("the same Sync again: %v, %v", changed, err)
			}
			if ok, err := b.Check(); !ok || err != nil {
				t.Fatalf("Check: %v, %v", ok, err)
			}
			// Damage: someone deletes the table or a jump.
			if k.name == "nftables" {
				ns.mustRun(t, "nft", "delete", "table", "ip6", Table6Name)
			} else {
				ip6 := strings.Replace(k.iptables, "iptables", "ip6tables", 1)
				ns.mustRun(t, ip6, "-t", "mangle", "-D", "POSTROUTING", "-j", iptNPT6Post)
			}
			if ok, err := b.Check(); ok || err != nil {
				t.Fatalf("Check after damage: %v, %v", ok, err)
			}
			if _, err := b.Sync(two); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.Check(); !ok || err != nil {
				t.Fatalf("Check after the repair: %v, %v", ok, err)
			}
			// Mode off: the IPv6 state goes.
			if _, err := b.Sync(v4); err != nil {
				t.Fatal(err)
			}
			if s := ip6State(t, ns); s != "" {
				t.Fatalf("after the mappings went:\n%s", s)
			}
			// A new backend (a restart) adopts and Flush removes.
			if _, err := b.Sync(two); err != nil {
				t.Fatal(err)
			}
			b2 := k.make(t, ns)
			if err := b2.Flush(); err != nil {
				t.Fatal(err)
			}
			if s := ip6State(t, ns); s != "" {
				t.Fatalf("after Flush:\n%s", s)
			}
		})
	}
}
