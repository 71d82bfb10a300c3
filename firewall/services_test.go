package firewall

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

func TestComputeServices(t *testing.T) {
	ap := netip.MustParseAddrPort
	be := func(a string, w int) policy.ServiceBackend { return policy.ServiceBackend{Address: ap(a), Weight: w} }
	wb := func(a string, w int) WeightedBackend { return WeightedBackend{Addr: ap(a), Weight: w} }
	addr := netip.MustParseAddr
	base := func(svcs ...policy.Service) *policy.Config {
		c := seedConfig()
		c.Services = svcs
		return c
	}
	web := policy.Service{Name: "web", Uplinks: []string{"ppp0", "ppp1"}, Proto: "tcp", Port: 80, Balance: policy.BalanceWeighted,
		Backends: []policy.ServiceBackend{be("10.0.0.2:80", 4), be("10.0.0.3:80", 2), be("10.0.0.4:80", 6)}}
	hairpin := web
	hairpin.Hairpin = true
	limited := web
	limited.Limit = &policy.ServiceLimit{Hits: 3, Seconds: 60}
	hashed := web
	hashed.Balance = policy.BalanceSourceHash
	tests := []struct {
		name        string
		cfg         *policy.Config
		uplinks     []policy.UplinkState
		healthy     map[string][]netip.AddrPort
		wantEntries []ServiceEntry
		wantBack    []WeightedBackend
		wantHairpin []netip.Prefix
		check       func(t *testing.T, s ServiceRules)
	}{{
		name:    "unchecked: every backend, weights divided by their gcd",
		cfg:     base(web),
		uplinks: seedState("192.0.2.1", "198.51.100.1"),
		wantEntries: []ServiceEntry{{Uplink: "ppp0", Iface: "ppp0", Addr: addr("192.0.2.1")},
			{Uplink: "ppp1", Iface: "ppp1", Addr: addr("198.51.100.1")}},
		wantBack: []WeightedBackend{wb("10.0.0.2:80", 2), wb("10.0.0.3:80", 1), wb("10.0.0.4:80", 3)},
	}, {
		name:        "checked: only the healthy, in config order",
		cfg:         base(web),
		uplinks:     seedState("192.0.2.1", ""),
		healthy:     map[string][]netip.AddrPort{"web": {ap("10.0.0.4:80"), ap("10.0.0.2:80")}, "other": nil},
		wantEntries: []ServiceEntry{{Uplink: "ppp0", Iface: "ppp0", Addr: addr("192.0.2.1")}},
		wantBack:    []WeightedBackend{wb("10.0.0.2:80", 2), wb("10.0.0.4:80", 3)},
	}, {
		name:    "none healthy, no address: nothing to DNAT",
		cfg:     base(web),
		uplinks: seedState("", ""),
		healthy: map[string][]netip.AddrPort{"web": {}},
	}, {
		name:    "hairpin adds the LAN interface and the LAN networks",
		cfg:     base(hairpin),
		uplinks: seedState("", "198.51.100.1"),
		wantEntries: []ServiceEntry{{Uplink: "ppp1", Iface: "ppp1", Addr: addr("198.51.100.1")},
			{Uplink: "ppp1", Iface: "eth0", Addr: addr("198.51.100.1"), Hairpin: true}},
		wantBack:    []WeightedBackend{wb("10.0.0.2:80", 2), wb("10.0.0.3:80", 1), wb("10.0.0.4:80", 3)},
		wantHairpin: prefixes("10.0.0.0/24"),
	}, {
		name:        "source hash, one down: buckets of every backend, the rest rehashed",
		cfg:         base(hashed),
		uplinks:     seedState("192.0.2.1", ""),
		healthy:     map[string][]netip.AddrPort{"web": {ap("10.0.0.2:80"), ap("10.0.0.4:80")}},
		wantEntries: []ServiceEntry{{Uplink: "ppp0", Iface: "ppp0", Addr: addr("192.0.2.1")}},
		wantBack:    []WeightedBackend{wb("10.0.0.2:80", 2), wb("10.0.0.4:80", 3)},
		check: func(t *testing.T, s ServiceRules) {
			want := []WeightedBackend{wb("10.0.0.2:80", 2), {Addr: ap("10.0.0.3:80"), Weight: 1, Down: true}, wb("10.0.0.4:80", 3)}
			if !reflect.DeepEqual(s.Buckets, want) {
				t.Errorf("buckets %+v, want %+v", s.Buckets, want)
			}
		},
	}, {
		name:        "source hash, all up: no buckets needed",
		cfg:         base(hashed),
		uplinks:     seedState("192.0.2.1", ""),
		healthy:     map[string][]netip.AddrPort{"web": {ap("10.0.0.2:80"), ap("10.0.0.3:80"), ap("10.0.0.4:80")}},
		wantEntries: []ServiceEntry{{Uplink: "ppp0", Iface: "ppp0", Addr: addr("192.0.2.1")}},
		wantBack:    []WeightedBackend{wb("10.0.0.2:80", 2), wb("10.0.0.3:80", 1), wb("10.0.0.4:80", 3)},
		check: func(t *testing.T, s ServiceRules) {
			if s.Buckets != nil {
				t.Errorf("buckets %+v with every backend up", s.Buckets)
			}
		},
	}, {
		name:        "limit as a per-source bucket",
		cfg:         base(limited),
		uplinks:     seedState("192.0.2.1", ""),
		healthy:     map[string][]netip.AddrPort{"web": {ap("10.0.0.3:80")}},
		wantEntries: []ServiceEntry{{Uplink: "ppp0", Iface: "ppp0", Addr: addr("192.0.2.1")}},
		wantBack:    []WeightedBackend{wb("10.0.0.3:80", 1)},
		check: func(t *testing.T, s ServiceRules) {
			want := &RateLimit{Proto: protoTCP, Port: 80, Burst: 3, Rate: 1, Unit: time.Minute, Period: time.Minute,
				Expire: 3 * time.Minute, Name: "svc_lim_web"}
			if !reflect.DeepEqual(s.Limit, want) {
				t.Errorf("limit %+v, want %+v", s.Limit, want)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := Compute(Input{Config: tt.cfg, Uplinks: tt.uplinks, Healthy: tt.healthy})
			if len(rs.Services) != 1 {
				t.Fatalf("services %+v", rs.Services)
			}
			s := rs.Services[0]
			if !reflect.DeepEqual(s.Entries, tt.wantEntries) {
				t.Errorf("entries %+v, want %+v", s.Entries, tt.wantEntries)
			}
			if !reflect.DeepEqual(s.Backends, tt.wantBack) {
				t.Errorf("backends %+v, want %+v", s.Backends, tt.wantBack)
			}
			if !reflect.DeepEqual(rs.HairpinSources, tt.wantHairpin) {
				t.Errorf("hairpin sources %v, want %v", rs.HairpinSources, tt.wantHairpin)
			}
			if s.Seed == 0 || s.Seed != serviceSeed("web") {
				t.Errorf("seed %#x is not the stable per-name seed", s.Seed)
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

// TestServiceChainNames: sanitized names that collide get distinct chains,
// and long names fit iptables' 28 characters.
func TestServiceChainNames(t *testing.T) {
	cfg := seedConfig()
	for _, n := range []string{"a b", "a_b", "a-very-long-service-name-indeed"} {
		cfg.Services = append(cfg.Services, policy.Service{Name: n, Uplinks: []string{"ppp0"}, Proto: "tcp", Port: 1,
			Backends: []policy.ServiceBackend{{Address: netip.MustParseAddrPort("10.0.0.2:1"), Weight: 1}}})
		cfg.Services[len(cfg.Services)-1].Port = uint16(len(cfg.Services))
	}
	rs := Compute(Input{Config: cfg, Uplinks: seedState("192.0.2.1", "")})
	seen := map[string]bool{}
	for _, s := range rs.Services {
		c := iptServiceChain(s)
		if seen[c] || seen[nftServiceChain(s)] || len(c) > iptChainNameMax {
			t.Errorf("chain %q / %q duplicate or too long", c, nftServiceChain(s))
		}
		seen[c], seen[nftServiceChain(s)] = true, true
	}
}

// TestWeightedRoundRobinExact runs the nftables and iptables decision
// procedures (numgen inc per rule, statistic nth per slot) on paper: over
// any window of sum(w) consecutive connections each backend gets exactly its
// weight.
func TestWeightedRoundRobinExact(t *testing.T) {
	for _, ws := range [][]int{{3, 1, 1}, {1}, {2, 5}, {1, 1, 1, 1}, {7, 3, 2}} {
		s := ServiceRules{Balance: policy.BalanceWeighted}
		for i, w := range ws {
			s.Backends = append(s.Backends, WeightedBackend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 2)}), 80), Weight: w})
		}
		slots := s.Slots()
		// nftables: rule i has its own counter and matches when
		// counter mod left_i < w_i.
		nftCounters := make([]int, len(ws))
		nftPick := func() int {
			left := slots
			for i, w := range ws {
				if i == len(ws)-1 {
					return i
				}
				c := nftCounters[i]
				nftCounters[i]++
				if c%left < w {
					return i
				}
				left -= w
			}
			return -1
		}
		// iptables: slot k matches every (slots-k)-th packet reaching it.
		var owner []int
		for i, w := range ws {
			for range w {
				owner = append(owner, i)
			}
		}
		iptCounters := make([]int, slots)
		iptPick := func() int {
			for k := range slots {
				if k == slots-1 {
					return owner[k]
				}
				c := iptCounters[k]
				iptCounters[k]++
				if c%(slots-k) == 0 {
					return owner[k]
				}
			}
			return -1
		}
		for _, pick := range []func() int{nftPick, iptPick} {
			for round := range 3 {
				got := make([]int, len(ws))
				for range slots {
					got[pick()]++
				}
				if !reflect.DeepEqual(got, ws) {
					t.Errorf("weights %v, round %d: got %v", ws, round, got)
				}
			}
		}
	}
}
