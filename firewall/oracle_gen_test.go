package firewall

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"

	"github.com/uplinkd/uplinkd/policy"
)

// Temporary oracle (issue 22, item 3): random Rulesets, for comparing the
// renderings of the old and the new code.

const oracleCases = 20000

func oracleRuleset(seed uint64) Ruleset {
	rng := rand.New(rand.NewPCG(seed, 22))
	n := rng.IntN
	coin := func() bool { return n(2) == 0 }
	prefix := func() netip.Prefix {
		a := netip.AddrFrom4([4]byte{byte(n(4) + 10), byte(n(3)), byte(n(256)), byte(n(256))})
		return netip.PrefixFrom(a, 8+n(25)).Masked()
	}
	prefixes := func(max int) []netip.Prefix {
		var out []netip.Prefix
		for range n(max + 1) {
			out = append(out, prefix())
		}
		return mergePrefixes(out)
	}
	ports := func(max int) []uint16 {
		var out []uint16
		for range n(max + 1) {
			out = append(out, uint16(1+n(3000)))
		}
		return normPorts(out)
	}
	protos := []uint8{0, protoTCP, protoUDP, protoSCTP}
	ifaces := []string{"eth0", "ppp1", "wg-x2", "vl.10", "wan@3", "lte4", "lan0"}
	macs := func(max int) []net.HardwareAddr {
		var out []net.HardwareAddr
		for range n(max + 1) {
			out = append(out, net.HardwareAddr{2, 0, 0, 0, byte(n(3)), byte(n(256))})
		}
		return out
	}
	limit := func(iface string) RateLimit {
		p := []uint8{protoTCP, protoUDP}[n(2)]
		port := uint16(1 + n(1000))
		return newRateLimit(p, port, 1+n(20), []int{1, 2, 60, 3600, 86400}[n(5)], fmt.Sprintf("lim_%s_%s_%d", sanitize(iface), protoName(p), port))
	}
	rs := Ruleset{InputPolicy: Accept, ForwardPolicy: Accept}
	if coin() {
		rs.InputPolicy = Drop
	}
	if coin() {
		rs.ForwardPolicy = Drop
	}
	if coin() {
		rs.LANInterface = "lan0"
	}
	perm := rng.Perm(len(ifaces) - 1)
	for i := range n(5) {
		iface := ifaces[perm[i]]
		u := UplinkRules{Name: fmt.Sprintf("u%d", i), Iface: iface, NAT: []NATMode{NATOff, NATSNAT, NATMasquerade}[n(3)]}
		if n(4) > 0 {
			u.ConnMark = UplinkMark(i)
		}
		if coin() {
			u.Addr = netip.AddrFrom4([4]byte{100, 64, byte(n(256)), byte(1 + n(250))})
		}
		if coin() {
			u.NoNAT = prefixes(3)
		}
		if coin() {
			f := &InputFilter{}
			for range n(4) {
				f.Allow = append(f.Allow, Allow{Proto: []uint8{protoTCP, protoUDP, protoSCTP, 50, 47}[n(5)], Ports: ports([]int{0, 3, 20}[n(3)])})
			}
			for range n(3) {
				f.Limits = append(f.Limits, limit(iface))
			}
			for range n(4) {
				if t := uint8(n(20)); !slices.Contains(f.ICMPTypes, t) {
					f.ICMPTypes = append(f.ICMPTypes, t)
				}
			}
			u.Filter = f
		}
		rs.Uplinks = append(rs.Uplinks, u)
	}
	for i := range n(5) {
		m := MarkRule{Name: fmt.Sprintf("r%d", i), Mark: uint32(1 + n(0xffff)), Proto: protos[n(4)]}
		if n(3) == 0 {
			m.UID = ptr(uint32(n(2000)))
		}
		if n(3) == 0 {
			m.GID = ptr(uint32(n(2000)))
		}
		m.Prerouting, m.Output = coin(), coin()
		if n(3) == 0 {
			m.InIface = ifaces[n(len(ifaces))]
		}
		m.Sources, m.Dests = prefixes([]int{0, 1, 3}[n(3)]), prefixes([]int{0, 1, 3}[n(3)])
		m.Ports = ports([]int{0, 0, 2, 20}[n(4)])
		rs.Marks = append(rs.Marks, m)
	}
	if coin() {
		rs.Deny.DropAddrs = prefixes(4)
		rs.Deny.RejectAddrs = subtractPrefixes(prefixes(4), rs.Deny.DropAddrs)
		rs.Deny.DropMACs = uniqMACs(macs(3), nil)
		rs.Deny.RejectMACs = uniqMACs(macs(3), rs.Deny.DropMACs)
	}
	for i := range n(4) {
		s := ServiceRules{Name: fmt.Sprintf("svc%d", i), Proto: []uint8{protoTCP, protoUDP}[n(2)], Port: uint16(1 + n(1000)),
			Balance: []policy.Balance{policy.BalanceWeighted, policy.BalanceSourceHash}[n(2)], Seed: uint32(n(3))}
		s.Chain = s.Name
		if coin() {
			s.Chain = strings.Repeat("long-service-name-", 1+n(2)) + s.Name
		}
		for j := range n(4) {
			e := ServiceEntry{Uplink: fmt.Sprintf("u%d", j), Iface: ifaces[n(len(ifaces))], Addr: netip.AddrFrom4([4]byte{100, 64, 1, byte(1 + n(250))})}
			if n(3) == 0 {
				e.Iface, e.Hairpin = "lan0", true
			}
			s.Entries = append(s.Entries, e)
		}
		var all []WeightedBackend
		for j := range n(5) {
			all = append(all, WeightedBackend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + j)}), uint16(80+n(3))), Weight: 1 + n(4)})
		}
		if s.Balance == policy.BalanceSourceHash && len(all) > 1 && coin() {
			for _, b := range all {
				b.Down = coin()
				s.Buckets = append(s.Buckets, b)
				if !b.Down {
					s.Backends = append(s.Backends, b)
				}
			}
		} else {
			s.Backends = all
		}
		if coin() {
			l := limit("svc")
			l.Name = "svc_" + s.Name
			s.Limit = &l
		}
		rs.Services = append(rs.Services, s)
	}
	if coin() {
		rs.HairpinSources = prefixes(2)
	}
	if n(3) == 0 {
		return rs
	}
	// IPv6 state.
	prefix6 := func(bits int) netip.Prefix {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(n(3)), byte(n(256)), byte(n(256)), byte(n(256)), 15: byte(n(256))})
		return netip.PrefixFrom(a, bits).Masked()
	}
	prefixes6 := func(max int) []netip.Prefix {
		var out []netip.Prefix
		for range n(max + 1) {
			out = append(out, prefix6(16+n(113)))
		}
		return mergePrefixes(out)
	}
	rs.IPv6 = n(4) > 0
	for _, u := range rs.Uplinks {
		if !coin() {
			continue
		}
		if u.ConnMark != 0 {
			rs.Marks6 = append(rs.Marks6, Mark6{Uplink: u.Name, Iface: u.Iface, ConnMark: u.ConnMark})
		}
		if u.Filter != nil {
			rs.Filters6 = append(rs.Filters6, Filter6{Uplink: u.Name, Iface: u.Iface, Filter: u.Filter})
		}
		if coin() {
			rs.NPT6 = append(rs.NPT6, NPT6{Uplink: u.Name, Iface: u.Iface, Inside: prefix6(64), Outside: prefix6(64)})
		}
	}
	if coin() {
		rs.Deny.DropAddrs6 = prefixes6(3)
		rs.Deny.RejectAddrs6 = subtractPrefixes(prefixes6(3), rs.Deny.DropAddrs6)
	}
	if coin() && rs.Deny.Empty() {
		rs.Deny.DropMACs = uniqMACs(macs(2), nil)
	}
	return rs
}

// TestOracleDump writes, per random Ruleset, a hash of everything both
// backends render for it to $ORACLE_DUMP, for comparing two trees: the
// nft text of both tables and the netlink batches that write them (the
// rules' expressions), the iptables and ip6tables texts with the chains
// and rule counts Sync keeps.
func TestOracleDump(t *testing.T) {
	out := os.Getenv("ORACLE_DUMP")
	if out == "" {
		t.Skip("ORACLE_DUMP not set")
	}
	var b strings.Builder
	for seed := range uint64(oracleCases) {
		rs := oracleRuleset(seed)
		p := oracleModel(rs)
		h := sha256.New()
		fmt.Fprintf(h, "%s\n%s\n", p.text(), npt6Text(rs))
		conn, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
			for _, m := range req {
				fmt.Fprintf(h, "%d %d %x\n", m.Header.Type, m.Header.Flags, m.Data)
			}
			return req, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.queue(conn); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := queueNPT6(conn, rs); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := conn.Flush(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ipt := buildIPT(rs)
		fmt.Fprintf(h, "%s\n", ipt.text())
		for _, name := range iptTables {
			tbl := ipt.tables[name]
			fmt.Fprintf(h, "%s %q\n", name, tbl.chains)
			for _, c := range slices.Sorted(maps.Keys(tbl.rules)) {
				fmt.Fprintf(h, "%s %d\n", c, len(tbl.rules[c]))
			}
		}
		text6, counts6 := ip6Program(rs)
		fmt.Fprintf(h, "%s\n", text6)
		for _, c := range slices.Sorted(maps.Keys(counts6)) {
			fmt.Fprintf(h, "%s %d\n", c, counts6[c])
		}
		fmt.Fprintf(&b, "%d %x %d %d\n", seed, h.Sum(nil), strings.Count(p.text()+npt6Text(rs), "\n"), strings.Count(ipt.text()+text6, "\n"))
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
