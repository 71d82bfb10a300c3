package firewall

import (
	"crypto/sha256"
	"fmt"
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
	return rs
}

// TestOracleNFTDump writes, per random Ruleset, a hash of buildNFT's text
// and of the netlink batch its queue sends (the rules' expressions) to
// $ORACLE_NFT, for comparing two trees.
func TestOracleNFTDump(t *testing.T) {
	out := os.Getenv("ORACLE_NFT")
	if out == "" {
		t.Skip("ORACLE_NFT not set")
	}
	var b strings.Builder
	for seed := range uint64(oracleCases) {
		rs := oracleRuleset(seed)
		p := buildNFT(rs)
		h := sha256.New()
		h.Write([]byte(p.text()))
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
		if err := conn.Flush(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		fmt.Fprintf(&b, "%d %x %d\n", seed, h.Sum(nil), strings.Count(p.text(), "\n"))
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
