package firewall

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// TestNFTPlanMatchesSync loads Plan with `nft -f` into one namespace and the
// same Ruleset with Sync (google/nftables) into another: the kernel must hold
// the same table, as `nft list` decompiles it.
func TestNFTPlanMatchesSync(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			rs := Compute(c.in)
			viaText, viaGo := newNS(t), newNS(t)
			b := backendKinds[0].make(t, viaGo)
			viaText.runStdin(t, b.Plan(rs), "nft", "-f", "-")
			if _, err := b.Sync(rs); err != nil {
				t.Fatal(err)
			}
			want := viaText.mustRun(t, "nft", "list", "table", "ip", TableName)
			got := viaGo.mustRun(t, "nft", "list", "table", "ip", TableName)
			if got != want {
				t.Errorf("Sync differs from nft -f Plan\n--- nft -f\n%s\n--- Sync\n%s", want, got)
			}
		})
	}
}

// TestIPTablesPlanLoads loads Plan with iptables-restore and compares it
// with what Sync wrote.
func TestIPTablesPlanLoads(t *testing.T) {
	// policy-drop: every chain kind; services: DNAT, statistic, cluster.
	for _, c := range []goldenCase{goldenCases()[4], goldenCases()[5]} {
		rs := Compute(c.in)
		for _, k := range backendKinds[1:] {
			t.Run(c.name+"/"+k.name, func(t *testing.T) {
				viaText, viaSync := newNS(t), newNS(t)
				b := k.make(t, viaSync)
				viaText.runStdin(t, b.Plan(rs), k.iptables+"-restore", "--noflush")
				if _, err := b.Sync(rs); err != nil {
					t.Fatal(err)
				}
				if got, want := ownedRules(t, viaSync, k), ownedRules(t, viaText, k); got != want {
					t.Errorf("Sync differs from Plan\n--- restore\n%s\n--- Sync\n%s", want, got)
				}
			})
		}
	}
}

// ownedRules is iptables-save limited to our chains' content (not jumps).
func ownedRules(t testing.TB, ns *netNS, k backendKind) string {
	var out []string
	for _, line := range strings.Split(ns.mustRun(t, k.iptables+"-save"), "\n") {
		if strings.HasPrefix(line, "*") || strings.HasPrefix(line, ":"+ChainPrefix) || strings.HasPrefix(line, "-A "+ChainPrefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func nftGen(t testing.TB, b Backend) uint32 {
	g, err := b.(*nftBackend).nf.nftGeneration()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestSyncIdempotent(t *testing.T) {
	in := goldenCases()[2].in
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			b := k.make(t, ns)
			rs := Compute(in)
			if changed, err := b.Sync(rs); err != nil || !changed {
				t.Fatalf("first Sync = %v, %v; want changed", changed, err)
			}
			before := snapshot(t, ns, k)
			var gen uint32
			if k.name == "nftables" {
				gen = nftGen(t, b)
			}
			if changed, err := b.Sync(Compute(in)); err != nil || changed {
				t.Fatalf("second Sync = %v, %v; want no-op", changed, err)
			}
			if k.name == "nftables" && nftGen(t, b) != gen {
				t.Error("second Sync committed a transaction")
			}
			if after := snapshot(t, ns, k); after != before {
				t.Errorf("second Sync changed the kernel\n--- before\n%s\n--- after\n%s", before, after)
			}
			if ok, err := b.Check(); err != nil || !ok {
				t.Errorf("Check after Sync = %v, %v", ok, err)
			}
			if k.name != "nftables" {
				// A duplicate of our jump (say, from a crashed run) goes too.
				ns.mustRun(t, k.iptables, "-t", "nat", "-A", "POSTROUTING", "-j", iptPostrouting)
			}
			// A new backend (daemon restart) adopts without duplicates.
			b2 := k.make(t, ns)
			if _, err := b2.Sync(rs); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, ns, k); after != before {
				t.Errorf("restart changed the kernel\n--- before\n%s\n--- after\n%s", before, after)
			}
		})
	}
}

var hashlimitCounters = regexp.MustCompile(`\[\d+:\d+\]`)

// snapshot is the complete ruleset of the namespace as the admin sees it.
func snapshot(t testing.TB, ns *netNS, k backendKind) string {
	if k.name == "nftables" {
		return ns.mustRun(t, "nft", "list", "ruleset")
	}
	var out []string
	for _, l := range strings.Split(ns.mustRun(t, k.iptables+"-save"), "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, hashlimitCounters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(out, "\n")
}

// TestAdminRulesSurvive: rules an administrator added before uplinkd started
// survive start, an address change, repair and flush, and stay in place.
func TestAdminRulesSurvive(t *testing.T) {
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			ns.mustRun(t, k.iptables, "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.77.0/24", "-j", "MASQUERADE")
			ns.mustRun(t, k.iptables, "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT")
			ns.runStdin(t, `table ip admin {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 192.168.77.0/24 masquerade
	}
}
`, "nft", "-f", "-")
			admin := func(stage string) {
				t.Helper()
				save := ns.mustRun(t, k.iptables+"-save")
				for _, want := range []string{
					"-A POSTROUTING -s 192.168.77.0/24 -j MASQUERADE",
					"-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT",
				} {
					if !strings.Contains(save, want) {
						t.Errorf("%s: admin rule %q gone:\n%s", stage, want, save)
					}
				}
				if out := ns.mustRun(t, "nft", "list", "table", "ip", "admin"); !strings.Contains(out, "ip saddr 192.168.77.0/24 masquerade") {
					t.Errorf("%s: admin nft table changed:\n%s", stage, out)
				}
			}
			b := k.make(t, ns)
			if _, err := b.Sync(Compute(goldenCases()[2].in)); err != nil {
				t.Fatal(err)
			}
			admin("start")
			if _, err := b.Sync(Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.99", "198.51.100.1")})); err != nil {
				t.Fatal(err)
			}
			admin("address change")
			if !strings.Contains(snapshot(t, ns, k), "192.0.2.99") {
				t.Error("new address not in the ruleset")
			}
			if k.name != "nftables" {
				// Our jump comes first; the admin's rule keeps its place after it.
				save := ns.mustRun(t, k.iptables+"-save", "-t", "filter")
				if i, j := strings.Index(save, "-A INPUT -j UPLINKD-INPUT"), strings.Index(save, "-A INPUT -p tcp"); i < 0 || j < i {
					t.Errorf("jump order:\n%s", save)
				}
			}
			// Repair after damage to our state only.
			if k.name == "nftables" {
				ns.mustRun(t, "nft", "delete", "table", "ip", TableName)
			} else {
				ns.mustRun(t, k.iptables, "-t", "nat", "-F", iptPostrouting)
				ns.mustRun(t, k.iptables, "-t", "filter", "-D", "INPUT", "-j", iptInput)
			}
			if ok, _ := b.Check(); ok {
				t.Error("Check after damage says intact")
			}
			if _, err := b.Sync(Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.99", "198.51.100.1")})); err != nil {
				t.Fatal(err)
			}
			admin("repair")
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			admin("flush")
			all := snapshot(t, ns, k)
			if strings.Contains(all, "UPLINKD") || strings.Contains(all, "table ip uplinkd") {
				t.Errorf("flush left our state behind:\n%s", all)
			}
			if err := b.Flush(); err != nil {
				t.Errorf("second Flush: %v", err)
			}
		})
	}
}

// TestRepair: after an administrator wipes our state, Check reports it and
// Sync restores it.
func TestRepair(t *testing.T) {
	rs := Compute(goldenCases()[2].in)
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			b := k.make(t, ns)
			if _, err := b.Sync(rs); err != nil {
				t.Fatal(err)
			}
			want := snapshot(t, ns, k)
			damage := [][]string{{"nft", "flush", "ruleset"}}
			if k.name != "nftables" {
				damage = [][]string{
					{k.iptables, "-t", "nat", "-F", ChainPrefix + "POSTROUTING"},
					{k.iptables, "-t", "filter", "-D", "INPUT", "-j", iptInput},
					{k.iptables, "-t", "filter", "-R", iptInPrefix + "ppp0", "4", "-p", "tcp", "--dport", "23", "-j", "RETURN"},
					{k.iptables, "-t", "mangle", "-F"},
				}
			} else {
				damage = append(damage,
					[]string{"nft", "flush", "chain", "ip", TableName, "in_ppp0"},
					[]string{"nft", "flush", "set", "ip", TableName, setDenyDrop},
					[]string{"nft", "add", "rule", "ip", TableName, "input", "accept"})
			}
			for _, d := range damage {
				if ok, err := b.Check(); err != nil || !ok {
					t.Fatalf("Check before %v = %v, %v", d, ok, err)
				}
				ns.mustRun(t, d...)
				if ok, err := b.Check(); err != nil || ok {
					t.Errorf("Check after %v = %v, %v; want not intact", d, ok, err)
				}
				if changed, err := b.Sync(rs); err != nil || !changed {
					t.Errorf("Sync after %v = %v, %v; want a rewrite", d, changed, err)
				}
				if got := snapshot(t, ns, k); k.name != "nftables" && got != want {
					t.Errorf("after %v not restored\n--- want\n%s\n--- got\n%s", d, want, got)
				}
			}
		})
	}
}

// TestWatchNFTables: the monitor reports foreign changes to our table (not
// our own syncs), so the daemon restores it well within a second.
func TestWatchNFTables(t *testing.T) {
	ns := newNS(t)
	b := backendKinds[0].make(t, ns)
	rs := Compute(goldenCases()[2].in)
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan struct{}, 1)
	werr := make(chan error, 1)
	go func() { werr <- WatchNFTables(ctx, ns.fd, sig) }()
	t.Cleanup(func() {
		cancel()
		if err := <-werr; err != nil {
			t.Error(err)
		}
	})
	time.Sleep(50 * time.Millisecond) // subscribed
	if _, err := b.Sync(rs); err != nil {
		t.Fatal(err)
	}
	ns.mustRun(t, "nft", "add", "table", "ip", "admin") // not ours
	select {
	case <-sig:
		t.Fatal("signal for our own Sync or a foreign table")
	case <-time.After(300 * time.Millisecond):
	}
	for _, damage := range [][]string{
		{"nft", "flush", "ruleset"},
		{"nft", "delete", "rule", "ip", TableName, "input", "handle", "@first"},
	} {
		if damage[len(damage)-1] == "@first" {
			out := ns.mustRun(t, "nft", "-a", "list", "chain", "ip", TableName, "input")
			m := regexp.MustCompile(`# handle (\d+)`).FindAllStringSubmatch(out, -1)
			damage[len(damage)-1] = m[len(m)-1][1]
		}
		start := time.Now()
		ns.mustRun(t, damage...)
		select {
		case <-sig:
		case <-time.After(20 * time.Second): // generous: how soon is in the log line below
			t.Fatalf("no signal within 20s of %v", damage)
		}
		if ok, _ := b.Check(); ok {
			t.Fatalf("Check after %v says intact", damage)
		}
		if _, err := b.Sync(rs); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.Check(); !ok || err != nil {
			t.Fatalf("not restored: %v", err)
		}
		t.Logf("%v: restored %v after the command returned", damage, time.Since(start))
	}
}

// TestDeleteConntrackByMark creates entries with marks and deletes one
// uplink's by mark; the rest stay.
func TestDeleteConntrackByMark(t *testing.T) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("needs conntrack")
	}
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			b := k.make(t, ns)
			add := func(n int, mark uint32) {
				for i := range n {
					ns.mustRun(t, "conntrack", "-I", "-p", "tcp", "-s", "10.0.0.2", "-d", "192.0.2.2",
						"--sport", fmt.Sprint(10000+int(mark>>16)*100+i), "--dport", "80",
						"--state", "ESTABLISHED", "--timeout", "600", "--mark", fmt.Sprint(mark))
				}
			}
			add(5, 0x10000)
			add(3, 0x20001) // uplink 2, user mark 1
			add(2, 0)
			add(4, 0x30000) // uplink 3: cleared without the count
			count := func() int {
				out, _ := ns.run("conntrack", "-L")
				return strings.Count(out, "tcp ")
			}
			if n := count(); n != 14 {
				t.Fatalf("%d entries, want 14", n)
			}
			if err := b.(ConntrackClearer).ClearConntrackByMark(UplinkMark(2), UplinkMarkMask); err != nil {
				t.Errorf("clear uplink 2: %v", err)
			}
			if n := count(); n != 10 {
				t.Fatalf("%d entries after clearing uplink 2, want 10", n)
			}
			n, err := b.DeleteConntrackByMark(UplinkMark(0), UplinkMarkMask)
			if err != nil || n != 5 {
				t.Errorf("delete uplink 0 = %d, %v; want 5", n, err)
			}
			if n := count(); n != 5 {
				t.Errorf("%d entries left, want 5", n)
			}
			n, err = b.DeleteConntrackByMark(UplinkMark(1), UplinkMarkMask)
			if err != nil || n != 3 {
				t.Errorf("delete uplink 1 = %d, %v; want 3", n, err)
			}
			if out, _ := ns.run("conntrack", "-L"); strings.Count(out, "tcp ") != 2 || strings.Contains(out, "mark=1") {
				t.Errorf("left:\n%s", out)
			}
			if _, err := b.DeleteConntrackByMark(0, 0); err == nil {
				t.Error("mask 0 accepted")
			}
			if _, err := b.DeleteConntrackByMark(0x1, UplinkMarkMask); err == nil {
				t.Error("mark outside mask accepted")
			}
			if err := b.(ConntrackClearer).ClearConntrackByMark(0, 0); err == nil {
				t.Error("clear: mask 0 accepted")
			}
		})
	}
}

// TestClearConntrackByMarkFamily: the IPv6-only clear deletes the IPv6
// entries of one uplink and leaves its IPv4 ones and every other uplink's;
// the all-families clear then takes both families of that uplink.
func TestClearConntrackByMarkFamily(t *testing.T) {
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := newNS(t)
			b := k.make(t, ns)
			ct := dialCT(t, ns)
			// 4 entries per (uplink, family), the marks with user bits set too.
			for up := range 2 {
				for i := range 4 {
					mark := UplinkMark(up) | uint32(i)
					v4 := netip.AddrFrom4([4]byte{10, 0, byte(up), byte(i + 1)})
					v6 := netip.AddrFrom16([16]byte{0xfd, 0, 14: byte(up), 15: byte(i + 1)})
					for _, src := range []netip.Addr{v4, v6} {
						if err := ctCreate(ct, src, mark); err != nil {
							t.Fatalf("create %v: %v", src, err)
						}
					}
				}
			}
			// left counts the entries per "uplink/family".
			left := func() map[string]int {
				t.Helper()
				flows, err := ct.Dump(nil)
				if err != nil {
					t.Fatal(err)
				}
				out := map[string]int{}
				for _, f := range flows {
					fam := "ipv4"
					if f.TupleOrig.IP.SourceAddress.Is6() {
						fam = "ipv6"
					}
					out[fmt.Sprintf("%d/%s", f.Mark>>16-1, fam)]++
				}
				return out
			}
			want := map[string]int{"0/ipv4": 4, "0/ipv6": 4, "1/ipv4": 4, "1/ipv6": 4}
			if got := left(); !maps.Equal(got, want) {
				t.Fatalf("before: %v, want %v", got, want)
			}
			if err := b.(ConntrackClearer6).ClearConntrack6ByMark(UplinkMark(0), UplinkMarkMask); err != nil {
				t.Fatal(err)
			}
			delete(want, "0/ipv6")
			if got := left(); !maps.Equal(got, want) {
				t.Errorf("after the IPv6 clear of uplink 0: %v, want %v", got, want)
			}
			if err := b.(ConntrackClearer).ClearConntrackByMark(UplinkMark(1), UplinkMarkMask); err != nil {
				t.Fatal(err)
			}
			delete(want, "1/ipv4")
			delete(want, "1/ipv6")
			if got := left(); !maps.Equal(got, want) {
				t.Errorf("after the clear of uplink 1: %v, want %v", got, want)
			}
			if err := b.(ConntrackClearer6).ClearConntrack6ByMark(0, 0); err == nil {
				t.Error("IPv6 clear: mask 0 accepted")
			}
		})
	}
}

// TestNFTIncremental walks through changes that take the incremental path
// (only the differing chains and set contents are rewritten) and the ones
// that fall back to replacing the table; after each the table must equal a
// fresh full load, and each Sync must be one transaction.
func TestNFTIncremental(t *testing.T) {
	ns := newNS(t)
	b := backendKinds[0].make(t, ns)
	cfg := seedConfig()
	steps := []struct {
		name   string
		change func()
		state  []policy.UplinkState
	}{
		{"start", func() {}, seedState("192.0.2.1", "198.51.100.1")},
		{"address change", func() {}, seedState("192.0.2.2", "198.51.100.1")},
		{"address lost", func() {}, seedState("", "198.51.100.1")},
		{"policy drop", func() { cfg.Firewall.InputPolicy = "drop" }, seedState("192.0.2.2", "198.51.100.1")},
		{"deny list changed", func() { cfg.Firewall.Deny[0].Source = prefix("203.0.113.128/25") }, nil},
		{"marks removed", func() { cfg.Rules = nil }, nil},
		{"uplink filter removed", func() { cfg.Uplinks[1].Firewall = nil }, nil},
		{"limit changed", func() { cfg.Uplinks[0].Firewall.Limit[0].Hits = 5 }, nil},
		{"everything back", func() { cfg = seedConfig() }, nil},
	}
	var state []policy.UplinkState
	for _, s := range steps {
		s.change()
		if s.state != nil {
			state = s.state
		}
		rs := Compute(Input{Config: cfg, Uplinks: state})
		if s.name == "address change" {
			// A meter entry (a source's bucket) must survive.
			ns.mustRun(t, "nft", "add", "element", "ip", TableName, "lim_ppp0_tcp_22", "{ 192.0.2.77 }")
		}
		gen := nftGen(t, b)
		if _, err := b.Sync(rs); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if g := nftGen(t, b); g != gen+1 {
			t.Errorf("%s: %d transactions, want 1", s.name, g-gen)
		}
		fresh := newNS(t)
		fresh.runStdin(t, b.Plan(rs), "nft", "-f", "-")
		want := fresh.mustRun(t, "nft", "list", "table", "ip", TableName)
		got := ns.mustRun(t, "nft", "list", "table", "ip", TableName)
		if s.name == "address change" && !strings.Contains(got, "192.0.2.77") {
			t.Errorf("%s: meter entry lost", s.name)
		}
		got = regexp.MustCompile(`\s*elements = \{ 192\.0\.2\.77[^}]*\}`).ReplaceAllString(got, "")
		if got != want {
			t.Errorf("%s: incremental Sync differs from a full load:\n%s", s.name, lineDiff(want, got))
		}
		if ok, err := b.Check(); !ok || err != nil {
			t.Errorf("%s: Check = %v, %v", s.name, ok, err)
		}
	}
}

// lineDiff lists the lines only in a (-) or only in b (+).
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a+"\n"+b, "\n") {
		switch n := count[l]; {
		case n > 0:
			out = append(out, "- "+l)
			count[l] = 0
		case n < 0:
			out = append(out, "+ "+l)
			count[l] = 0
		}
	}
	return strings.Join(out, "\n")
}

// TestNFTSyncAfterUnseenDamage: an incremental Sync against a table someone
// deleted behind our back (before any Check) falls back to a full replace.
func TestNFTSyncAfterUnseenDamage(t *testing.T) {
	ns := newNS(t)
	b := backendKinds[0].make(t, ns)
	if _, err := b.Sync(Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1")})); err != nil {
		t.Fatal(err)
	}
	ns.mustRun(t, "nft", "flush", "ruleset")
	rs := Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.2", "198.51.100.1")})
	if changed, err := b.Sync(rs); err != nil || !changed {
		t.Fatalf("Sync = %v, %v", changed, err)
	}
	if ok, err := b.Check(); !ok || err != nil {
		t.Errorf("Check = %v, %v", ok, err)
	}
	if out := ns.mustRun(t, "nft", "list", "chain", "ip", TableName, "nat_ppp0"); !strings.Contains(out, "snat to 192.0.2.2") {
		t.Errorf("not restored:\n%s", out)
	}
}
