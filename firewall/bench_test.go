package firewall

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/uplinkd/uplinkd/policy"
)

// benchInput is n filtered, SNATed uplinks, two [[rule]]s and deny entries
// (distinct /32s that do not merge). addr varies the first uplink's address,
// so consecutive Syncs are real rewrites, as on a redial.
func benchInput(n, deny, addr int) Input {
	cfg := &policy.Config{LAN: policy.LAN{Interface: "lan0", Networks: prefixes("10.0.0.0/24"), Masquerade: true}}
	var st []policy.UplinkState
	for i := range n {
		name := fmt.Sprintf("ppp%d", i)
		cfg.Uplinks = append(cfg.Uplinks, policy.Uplink{Name: name, Interface: name, SNAT: "snat",
			Firewall: &policy.UplinkFirewall{
				Allow:     []policy.Allow{{Proto: "tcp", Ports: []uint16{22, 80, 443}}, {Proto: "udp", Ports: []uint16{4662}}},
				Limit:     []policy.Limit{{Proto: "tcp", Port: 22, Hits: 3, Seconds: 60}},
				ICMPTypes: []uint8{8},
			}})
		a := netip.AddrFrom4([4]byte{100, 64, byte(i), 1})
		if i == 0 {
			a = netip.AddrFrom4([4]byte{100, 64, 0, byte(1 + addr%200)})
		}
		st = append(st, policy.UplinkState{Name: name, Iface: name, Addr: a})
	}
	cfg.Rules = []policy.MarkRule{
		{Name: "p2p", UID: ptr[uint32](108), Uplink: "ppp0", Mark: 1},
		{Name: "mail", InIface: "lan0", Proto: "tcp", Ports: []uint16{25, 587}, Uplink: "ppp0", Mark: 2},
	}
	for i := range deny {
		cfg.Firewall.Deny = append(cfg.Firewall.Deny, policy.DenyRule{
			Source: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i / 100), byte(2 * (i % 100))}), 32),
		})
	}
	return Input{Config: cfg, Uplinks: st}
}

// BenchmarkSync measures one full rewrite (an address change) per backend.
func BenchmarkSync(b *testing.B) {
	for _, k := range backendKinds {
		for _, size := range []struct{ uplinks, deny int }{{2, 0}, {16, 0}, {64, 0}, {2, 1000}, {64, 1000}} {
			b.Run(fmt.Sprintf("%s/uplinks=%d/deny=%d", k.name, size.uplinks, size.deny), func(b *testing.B) {
				ns := newNS(b)
				be := k.make(b, ns)
				rs := [2]Ruleset{Compute(benchInput(size.uplinks, size.deny, 0)), Compute(benchInput(size.uplinks, size.deny, 1))}
				if _, err := be.Sync(rs[1]); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(strings.Count(be.Plan(rs[0]), "\n")), "plan-lines")
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if changed, err := be.Sync(rs[i%2]); err != nil || !changed {
						b.Fatalf("Sync = %v, %v", changed, err)
					}
				}
			})
		}
	}
}

// BenchmarkIPTablesExecPerRule applies the same rules one `iptables -A` exec
// each (what the event path must never do) and reports the ratio to one
// iptables-restore batch of the same content.
func BenchmarkIPTablesExecPerRule(b *testing.B) {
	for _, k := range backendKinds[1:] {
		for _, n := range []int{2, 16} {
			b.Run(fmt.Sprintf("%s/uplinks=%d", k.name, n), func(b *testing.B) {
				ns := newNS(b)
				be := k.make(b, ns).(*iptBackend)
				rs := [2]Ruleset{Compute(benchInput(n, 0, 0)), Compute(benchInput(n, 0, 1))}
				if _, err := be.Sync(rs[1]); err != nil {
					b.Fatal(err)
				}
				// One batch, for the ratio.
				const batches = 20
				start := time.Now()
				for i := range batches {
					if _, err := be.Sync(rs[i%2]); err != nil {
						b.Fatal(err)
					}
				}
				batch := time.Since(start) / batches

				prog := buildIPT(rs[0])
				var rules [][]string
				for _, t := range iptTables {
					tbl := prog.tables[t]
					for _, c := range tbl.chains {
						for _, r := range tbl.rules[c] {
							rules = append(rules, append([]string{"-w", "-t", t, "-A", c}, strings.Fields(r)...))
						}
					}
				}
				empty := ""
				for _, t := range iptTables {
					empty += (&iptTable{name: t, chains: prog.tables[t].chains}).text(nil)
				}
				var perRule time.Duration
				for b.Loop() {
					b.StopTimer()
					if _, err := be.exec(empty, be.restore, "--noflush"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					start := time.Now()
					for _, args := range rules {
						if _, err := be.exec("", be.cmd, args...); err != nil {
							b.Fatal(err)
						}
					}
					perRule = time.Since(start)
				}
				b.ReportMetric(float64(len(rules)), "rules")
				b.ReportMetric(float64(perRule.Microseconds())/1000/float64(len(rules)), "ms/rule")
				b.ReportMetric(float64(batch.Microseconds())/1000, "batch-ms")
				b.ReportMetric(float64(perRule)/float64(batch), "x-batch")
			})
		}
	}
}

// BenchmarkSyncFull measures the repair/adoption path: the backend forgets
// what it wrote, so each Sync replaces the nftables table, or re-reads
// iptables-save, restores all three tables and checks the jumps.
func BenchmarkSyncFull(b *testing.B) {
	for _, k := range backendKinds {
		for _, size := range []struct{ uplinks, deny int }{{2, 0}, {64, 1000}} {
			b.Run(fmt.Sprintf("%s/uplinks=%d/deny=%d", k.name, size.uplinks, size.deny), func(b *testing.B) {
				ns := newNS(b)
				be := k.make(b, ns)
				rs := Compute(benchInput(size.uplinks, size.deny, 0))
				for b.Loop() {
					switch x := be.(type) {
					case *nftBackend:
						x.forget()
					case *iptBackend:
						x.reset()
					}
					if _, err := be.Sync(rs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCheck measures the periodic intactness check in steady state.
func BenchmarkCheck(b *testing.B) {
	for _, k := range backendKinds {
		b.Run(k.name, func(b *testing.B) {
			ns := newNS(b)
			be := k.make(b, ns)
			if _, err := be.Sync(Compute(benchInput(16, 1000, 0))); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if ok, err := be.Check(); !ok || err != nil {
					b.Fatalf("Check = %v, %v", ok, err)
				}
			}
		})
	}
}

// BenchmarkCompute is the pure Ruleset of 16 uplinks with 1000 deny
// entries (merged and subtracted as prefix sets) and its nftables program
// (the interval sets' ranges).
func BenchmarkCompute(b *testing.B) {
	in := benchInput(16, 1000, 0)
	for b.Loop() {
		rs := Compute(in)
		_ = buildRules(rs)
	}
}

// BenchmarkDeleteConntrackByMark deletes 1000 entries of one uplink among
// 2000 by mark, in the kernel.
func BenchmarkDeleteConntrackByMark(b *testing.B) {
	ns := newNS(b)
	be := backendKinds[0].make(b, ns)
	ct := dialCT(b, ns)
	for b.Loop() {
		b.StopTimer()
		for i := range 2000 {
			if err := ctCreate(ct, netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}), UplinkMark(i%2)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if n, err := be.DeleteConntrackByMark(UplinkMark(0), UplinkMarkMask); err != nil || n != 1000 {
			b.Fatalf("deleted %d, %v", n, err)
		}
		b.StopTimer()
		if _, err := be.DeleteConntrackByMark(UplinkMark(1), UplinkMarkMask); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkClearConntrackByMark is the event path's delete (one request,
// no count): 500 entries of one uplink among 2000, IPv4 and IPv6 mixed;
// "all" clears both families, "ipv6" only the IPv6 half.
func BenchmarkClearConntrackByMark(b *testing.B) {
	for _, fam := range []string{"all", "ipv6"} {
		b.Run(fam, func(b *testing.B) {
			ns := newNS(b)
			be := backendKinds[0].make(b, ns)
			ct := dialCT(b, ns)
			del := func(mark uint32) error {
				if fam == "ipv6" {
					return be.(ConntrackClearer6).ClearConntrack6ByMark(mark, UplinkMarkMask)
				}
				return be.(ConntrackClearer).ClearConntrackByMark(mark, UplinkMarkMask)
			}
			for b.Loop() {
				b.StopTimer()
				for i := range 2000 {
					src := netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)})
					if i%2 == 1 {
						src = netip.AddrFrom16([16]byte{0xfd, 0, 14: byte(i >> 8), 15: byte(i)})
					}
					if err := ctCreate(ct, src, UplinkMark(i/2%2)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := del(UplinkMark(0)); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := ct.Flush(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// dialCT opens a conntrack connection in ns for creating test entries.
func dialCT(t testing.TB, ns *netNS) *conntrack.Conn {
	t.Helper()
	ct, err := conntrack.Dial(&netlink.Config{NetNS: ns.fd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Close() })
	return ct
}

// ctCreate adds a UDP conntrack entry src:1000 -> 192.0.2.2:53 (IPv4) or
// src:1000 -> 2001:db8::2:53 (IPv6) with mark (what `conntrack -I` does,
// without an exec per entry).
func ctCreate(ct *conntrack.Conn, src netip.Addr, mark uint32) error {
	dst := netip.MustParseAddr("192.0.2.2")
	if src.Is6() {
		dst = netip.MustParseAddr("2001:db8::2")
	}
	return ct.Create(conntrack.NewFlow(protoUDP, 0, src, dst, 1000, 53, 600, mark))
}
