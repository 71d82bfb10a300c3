package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func ptr[T any](v T) *T { return &v }

// seedConfig is the seed set-up: "only 22 and 80 on ppp0; 4662 tcp/udp and
// 4001 on ppp1", ssh rate limit, uid 108 via ppp1, a LAN rule, deny lists.
func seedConfig() *policy.Config {
	return &policy.Config{
		LAN: policy.LAN{Interface: "eth0", Networks: prefixes("10.0.0.0/24"), Masquerade: true},
		Uplinks: []policy.Uplink{
			{Name: "ppp0", Interface: "ppp0", Kind: "ppp", SNAT: "snat", Firewall: &policy.UplinkFirewall{
				Allow:     []policy.Allow{{Proto: "tcp", Ports: []uint16{80, 22}}},
				Limit:     []policy.Limit{{Proto: "tcp", Port: 22, Hits: 3, Seconds: 60}},
				ICMPTypes: []uint8{8, 0},
			}},
			{Name: "ppp1", Interface: "ppp1", Kind: "ppp", SNAT: "masquerade", Firewall: &policy.UplinkFirewall{
				Allow: []policy.Allow{{Proto: "tcp", Ports: []uint16{4662}}, {Proto: "udp", Ports: []uint16{4662, 4001}}, {Proto: "esp"}},
			}},
			{Name: "wlan0", Interface: "wlan0", Kind: "wlan", SNAT: "off"},
		},
		Rules: []policy.MarkRule{
			{Name: "p2p", UID: ptr[uint32](108), Uplink: "ppp1", Mark: 1, Priority: 100},
			{Name: "lan-mail", InIface: "eth0", Proto: "tcp", Ports: []uint16{587, 25},
				Dest: prefixes("192.0.2.0/25", "192.0.2.128/25", "198.51.100.7"), Uplink: "ppp1", Mark: 2, Priority: 101},
			{Name: "dns", Ports: []uint16{53}, Source: prefixes("10.0.0.0/24"), Uplink: "ppp0", Mark: 3, Priority: 102},
		},
		Firewall: policy.Firewall{Deny: []policy.DenyRule{
			{Source: prefix("203.0.113.0/24"), Action: "drop"},
			{Source: prefix("203.0.113.7"), Action: "reject"},
			{Source: prefix("198.51.100.0/28"), Action: "reject"},
			{MAC: "02:00:00:00:00:01", Action: "reject"},
			{MAC: "02:00:00:00:00:02"},
		}},
	}
}

func seedState(ppp0, ppp1 string) []policy.UplinkState {
	st := []policy.UplinkState{{Name: "ppp0", Iface: "ppp0"}, {Name: "ppp1", Iface: "ppp1"}, {Name: "wlan0", Iface: "wlan0"}}
	if ppp0 != "" {
		st[0].Addr = netip.MustParseAddr(ppp0)
	}
	if ppp1 != "" {
		st[1].Addr = netip.MustParseAddr(ppp1)
	}
	return st
}

type goldenCase struct {
	name string
	in   Input
}

func goldenCases() []goldenCase {
	minimal := &policy.Config{Uplinks: []policy.Uplink{{Name: "wan", Interface: "wan0", SNAT: policy.SNATSNAT}}}
	drop := seedConfig()
	drop.Firewall.InputPolicy, drop.Firewall.ForwardPolicy = "drop", "drop"
	drop.LAN.Masquerade = false
	return []goldenCase{
		{"empty", Input{Config: &policy.Config{}}},
		{"minimal", Input{Config: minimal, Uplinks: []policy.UplinkState{{Name: "wan", Iface: "wan0", Addr: netip.MustParseAddr("192.0.2.10")}}}},
		{"seed", Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1")}},
		{"seed-noaddr", Input{Config: seedConfig(), Uplinks: seedState("", "")}},
		{"policy-drop", Input{Config: drop, Uplinks: seedState("192.0.2.1", "198.51.100.1")}},
		{"services", Input{Config: servicesConfig(), Uplinks: seedState("192.0.2.1", "198.51.100.1"), Healthy: map[string][]netip.AddrPort{
			"web":  {netip.MustParseAddrPort("10.0.0.2:8080"), netip.MustParseAddrPort("10.0.0.4:8080")},
			"mail": {},
			"ssh":  {netip.MustParseAddrPort("10.0.0.2:22"), netip.MustParseAddrPort("10.0.0.4:22")},
		}}},
	}
}

// servicesConfig is the seed with every kind of [[service]]: weighted with
// one backend down, source-hash with weights, udp with a limit, and one
// without a healthy backend; hairpin on all but one.
func servicesConfig() *policy.Config {
	c := seedConfig()
	be := func(a string, w int) policy.ServiceBackend {
		return policy.ServiceBackend{Address: netip.MustParseAddrPort(a), Weight: w}
	}
	c.Services = []policy.Service{
		{Name: "web", Uplinks: []string{"ppp0", "ppp1"}, Proto: "tcp", Port: 80, Balance: policy.BalanceWeighted, Hairpin: true,
			Backends: []policy.ServiceBackend{be("10.0.0.2:8080", 3), be("10.0.0.3:8080", 1), be("10.0.0.4:8080", 1)}},
		{Name: "ssh", Uplinks: []string{"ppp0"}, Proto: "tcp", Port: 22, Balance: policy.BalanceSourceHash, Hairpin: true,
			Backends: []policy.ServiceBackend{be("10.0.0.2:22", 2), be("10.0.0.3:22", 4), be("10.0.0.4:22", 2)},
			Limit:    &policy.ServiceLimit{Hits: 3, Seconds: 60}},
		{Name: "dns", Uplinks: []string{"ppp1"}, Proto: "udp", Port: 53, Balance: policy.BalanceSourceHash,
			Backends: []policy.ServiceBackend{be("10.0.0.5:53", 1)}, Limit: &policy.ServiceLimit{Hits: 10, Seconds: 1}},
		{Name: "mail", Uplinks: []string{"ppp1", "wlan0"}, Proto: "tcp", Port: 25, Balance: policy.BalanceWeighted,
			Backends: []policy.ServiceBackend{be("10.0.0.6:25", 1)}},
	}
	return c
}

func TestComputeGolden(t *testing.T) {
	for _, c := range goldenCases() {
		rs := Compute(c.in)
		check := func(kind, got string) {
			path := filepath.Join("testdata", c.name+"."+kind+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s: plan differs from %s (run go test -update and review the diff)\n--- got\n%s", c.name, path, got)
			}
		}
		check("nft", buildRules(rs).text())
		check("iptables", buildIPT(rs).text())
	}
}

func TestComputeNAT(t *testing.T) {
	rs := Compute(Input{Config: seedConfig(), Uplinks: seedState("192.0.2.1", "")})
	got := map[string]UplinkRules{}
	for _, u := range rs.Uplinks {
		got[u.Name] = u
	}
	if u := got["ppp0"]; u.NAT != NATSNAT || u.Addr != netip.MustParseAddr("192.0.2.1") || u.ConnMark != 0x10000 {
		t.Errorf("ppp0 = %+v, want snat to 192.0.2.1 with conn mark 0x10000", u)
	}
	if u := got["ppp1"]; u.NAT != NATMasquerade || u.ConnMark != 0x20000 {
		t.Errorf("ppp1 = %+v, want masquerade (no address needed), conn mark 0x20000", u)
	}
	if u := got["wlan0"]; u.NAT != NATOff || u.ConnMark != 0x30000 {
		t.Errorf("wlan0 = %+v, want no NAT, conn mark 0x30000", u)
	}
	// snat without an address: masquerade until the address is known
	// (never a packet out of the uplink without NAT).
	rs = Compute(Input{Config: seedConfig(), Uplinks: seedState("", "")})
	if u := rs.Uplinks[0]; u.NAT != NATSNAT || u.Addr.IsValid() {
		t.Errorf("ppp0 without address: %+v, want snat without address", u)
	}
	if strings.Contains(buildRules(rs).text(), "snat to") || strings.Contains(buildIPT(rs).text(), "SNAT") {
		t.Error("snat rule without an address")
	}
	if nft := buildRules(rs).text(); !strings.Contains(nft, "masquerade comment \"masquerade ppp0 until") {
		t.Errorf("ppp0 without address is not masqueraded:\n%s", nft)
	}
	if ipt := buildIPT(rs).text(); !strings.Contains(ipt, "-o ppp0 -j MASQUERADE") {
		t.Errorf("ppp0 without address is not masqueraded (iptables):\n%s", ipt)
	}
	// [lan] masquerade = false excludes the LAN networks.
	cfg := seedConfig()
	cfg.LAN.Masquerade = false
	rs = Compute(Input{Config: cfg, Uplinks: seedState("192.0.2.1", "")})
	if !slices.Equal(rs.Uplinks[0].NoNAT, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}) {
		t.Errorf("NoNAT = %v, want the LAN network", rs.Uplinks[0].NoNAT)
	}
	if rs.Uplinks[2].NoNAT != nil {
		t.Errorf("uplink without NAT has NoNAT %v", rs.Uplinks[2].NoNAT)
	}
}

func TestComputeLimit(t *testing.T) {
	// Only windows that divide a day pass the loader; each is expressed
	// exactly, in the smallest unit it divides.
	for _, c := range []struct {
		seconds int
		rate    uint64
		unit    time.Duration
	}{
		{60, 1, time.Minute},
		{1, 1, time.Second},
		{30, 2, time.Minute},
		{45, 80, time.Hour},
		{8, 450, time.Hour},
		{3600, 1, time.Hour},
		{7200, 12, 24 * time.Hour},
		{86400, 1, 24 * time.Hour},
	} {
		cfg := &policy.Config{Uplinks: []policy.Uplink{{Name: "u", Interface: "u0", SNAT: policy.SNATSNAT, Firewall: &policy.UplinkFirewall{
			Limit: []policy.Limit{{Proto: "tcp", Port: 22, Hits: 3, Seconds: c.seconds}}}}}}
		rs := Compute(Input{Config: cfg})
		l := rs.Uplinks[0].Filter.Limits[0]
		period := time.Duration(c.seconds) * time.Second
		if l.Rate != c.rate || l.Unit != c.unit || l.Period != period || l.Burst != 3 || l.Expire != 3*period {
			t.Errorf("seconds=%d: got %d/%s period %s burst %d expire %s", c.seconds, l.Rate, l.Unit, l.Period, l.Burst, l.Expire)
		}
		if time.Duration(l.Rate)*l.Period != l.Unit {
			t.Errorf("seconds=%d: %d/%s is not one per %s", c.seconds, l.Rate, l.Unit, l.Period)
		}
	}
}

func TestComputeMarks(t *testing.T) {
	rs := Compute(Input{Config: seedConfig()})
	var names []string
	for _, m := range rs.Marks {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"p2p", "lan-mail", "dns"}) {
		t.Errorf("marks = %v", names)
	}
	p2p, mail, dns := rs.Marks[0], rs.Marks[1], rs.Marks[2]
	if p2p.Prerouting || !p2p.Output || *p2p.UID != 108 {
		t.Errorf("uid rule = %+v, want output only", p2p)
	}
	if !mail.Prerouting || mail.Output {
		t.Errorf("in_interface rule = %+v, want prerouting only", mail)
	}
	if !slices.Equal(mail.Dests, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")}) {
		t.Errorf("destinations not merged: %v", mail.Dests)
	}
	if !slices.Equal(mail.Ports, []uint16{25, 587}) {
		t.Errorf("ports = %v", mail.Ports)
	}
	if !dns.Prerouting || !dns.Output {
		t.Errorf("address rule = %+v, want both hooks", dns)
	}
}

func TestComputeDeny(t *testing.T) {
	rs := Compute(Input{Config: seedConfig()})
	d := rs.Deny
	if !slices.Equal(d.DropAddrs, []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}) {
		t.Errorf("drop = %v", d.DropAddrs)
	}
	// 203.0.113.7 is inside the dropped /24: drop wins, it is not rejected.
	if !slices.Equal(d.RejectAddrs, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28")}) {
		t.Errorf("reject = %v", d.RejectAddrs)
	}
	if len(d.DropMACs) != 1 || d.DropMACs[0].String() != "02:00:00:00:00:02" || len(d.RejectMACs) != 1 {
		t.Errorf("macs = %v %v", d.DropMACs, d.RejectMACs)
	}
}

func TestPrefixes(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, c := range []struct{ in, merged []netip.Prefix }{
		{pp("10.0.0.0/25", "10.0.0.128/25"), pp("10.0.0.0/24")},
		{pp("10.0.0.5/32", "10.0.0.0/24"), pp("10.0.0.0/24")},
		{pp("10.0.0.1/32", "10.0.0.2/32"), pp("10.0.0.1/32", "10.0.0.2/32")},
		{pp("0.0.0.0/0", "1.2.3.4/32"), pp("0.0.0.0/0")},
		{pp("255.255.255.255/32", "255.255.255.254/32"), pp("255.255.255.254/31")},
	} {
		if got := mergePrefixes(c.in); !slices.Equal(got, c.merged) {
			t.Errorf("merge %v = %v, want %v", c.in, got, c.merged)
		}
	}
	if got := subtractPrefixes(pp("10.0.0.0/24"), pp("10.0.0.0/25", "10.0.0.200/32")); !slices.Equal(got,
		pp("10.0.0.128/26", "10.0.0.192/29", "10.0.0.201/32", "10.0.0.202/31", "10.0.0.204/30", "10.0.0.208/28", "10.0.0.224/27")) {
		t.Errorf("subtract = %v", got)
	}
	// The results of the hand-written merge and subtract that netipx
	// replaced (before they were deleted, a test compared both on 200,000
	// random sets of IPv4 prefixes: no difference).
	for _, c := range []struct{ in, merged []netip.Prefix }{
		{nil, nil},
		{pp("10.0.0.5/24", "10.0.1.0/24"), pp("10.0.0.0/23")}, // host bits ignored
		{pp("0.0.0.0/32", "0.0.0.1/32"), pp("0.0.0.0/31")},
		{pp("10.0.0.0/8", "11.0.0.0/8"), pp("10.0.0.0/7")},
		{pp("10.0.0.3/32", "10.0.0.1/32", "10.0.0.2/32"), pp("10.0.0.1/32", "10.0.0.2/31")},
	} {
		if got := mergePrefixes(c.in); !slices.Equal(got, c.merged) {
			t.Errorf("merge %v = %v, want %v", c.in, got, c.merged)
		}
	}
	for _, c := range []struct{ a, b, want []netip.Prefix }{
		{pp("10.0.0.0/30"), pp("10.0.0.0/32", "10.0.0.3/32"), pp("10.0.0.1/32", "10.0.0.2/32")},
		{pp("10.0.0.0/24"), pp("10.0.0.0/16"), nil},
		{pp("10.0.0.0/24"), pp("192.168.0.0/16"), pp("10.0.0.0/24")},
		{pp("255.255.255.252/30"), pp("255.255.255.255/32"), pp("255.255.255.252/31", "255.255.255.254/32")},
		{pp("0.0.0.0/31"), pp("0.0.0.0/32"), pp("0.0.0.1/32")},
		{nil, pp("10.0.0.0/8"), nil},
		{pp("10.0.0.0/8"), nil, pp("10.0.0.0/8")},
	} {
		if got := subtractPrefixes(c.a, c.b); !slices.Equal(got, c.want) {
			t.Errorf("subtract %v - %v = %v, want %v", c.a, c.b, got, c.want)
		}
	}
	r := func(lo, hi string) ipRange {
		return ipRange{addrU32(netip.MustParseAddr(lo)), addrU32(netip.MustParseAddr(hi))}
	}
	if got, want := mergedRanges(pp("10.0.2.0/24", "10.0.0.128/25", "10.0.0.0/25", "255.255.255.255/32")),
		[]ipRange{r("10.0.0.0", "10.0.0.255"), r("10.0.2.0", "10.0.2.255"), r("255.255.255.255", "255.255.255.255")}; !slices.Equal(got, want) {
		t.Errorf("ranges = %v, want %v", got, want)
	}
	elems := intervalElems(pp("10.0.0.0/24", "255.255.255.255/32"))
	var got []string
	for _, e := range elems {
		s := netip.AddrFrom4([4]byte(e.Key)).String()
		if e.IntervalEnd {
			s += "/end"
		}
		got = append(got, s)
	}
	if strings.Join(got, " ") != "0.0.0.0/end 10.0.0.0 10.0.1.0/end 255.255.255.255" {
		t.Errorf("interval elements = %v", got)
	}
}

// prefixes parses IPv4 addresses or prefixes as the loader does.
func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = prefix(s)
	}
	return out
}

func prefix(s string) netip.Prefix {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p
	}
	return netip.PrefixFrom(netip.MustParseAddr(s), 32)
}
