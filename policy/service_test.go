package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// serviceBase is a LAN and two uplinks for the [[service]] tests.
const serviceBase = `
[lan]
interface = "eth0"
networks = ["10.0.0.0/24"]
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
[[uplink]]
name = "ppp1"
table = 201
rule_priority = 201
`

// TestParseServices: both backend spellings, every default, and the
// resolved check and hairpin.
func TestParseServices(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name string
		src  string
		want Service
	}{{
		name: "short form and defaults",
		src: `
[[service]]
name = "ssh"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.2:22", "10.0.0.3:22"]
`,
		want: Service{Name: "ssh", Uplinks: []string{"ppp0"}, Proto: ProtoTCP, Port: 22, Balance: BalanceSourceHash,
			Backends: []ServiceBackend{{ap("10.0.0.2:22"), 1}, {ap("10.0.0.3:22"), 1}},
			Check:    ServiceCheck{Enabled: true, Interval: 2 * time.Second, Timeout: time.Second, Down: 2, Up: 2},
			Hairpin:  true},
	}, {
		name: "tables, weights, check, limit, no hairpin",
		src: `
[[service]]
name = "web"
uplinks = ["ppp0", "ppp1"]
port = 80
balance = "weighted"
backends = [{ address = "10.0.0.2:8080", weight = 3 }, "10.0.0.3:8080", { address = "10.0.0.4:8080" }]
limit = { hits = 3, seconds = 60 }
hairpin = false
  [service.check]
  interval = "500ms"
  timeout = "200ms"
  down = 1
  up = 3
`,
		want: Service{Name: "web", Uplinks: []string{"ppp0", "ppp1"}, Proto: ProtoTCP, Port: 80, Balance: BalanceWeighted,
			Backends: []ServiceBackend{{ap("10.0.0.2:8080"), 3}, {ap("10.0.0.3:8080"), 1}, {ap("10.0.0.4:8080"), 1}},
			Check:    ServiceCheck{Enabled: true, Interval: 500 * time.Millisecond, Timeout: 200 * time.Millisecond, Down: 1, Up: 3},
			Limit:    &ServiceLimit{Hits: 3, Seconds: 60}},
	}, {
		name: "udp: no check by default",
		src: `
[[service]]
name = "dns"
uplinks = ["ppp1"]
proto = "udp"
port = 53
backends = ["10.0.0.2:53"]
`,
		want: Service{Name: "dns", Uplinks: []string{"ppp1"}, Proto: ProtoUDP, Port: 53, Balance: BalanceSourceHash,
			Backends: []ServiceBackend{{ap("10.0.0.2:53"), 1}},
			Check:    ServiceCheck{Interval: 2 * time.Second, Timeout: time.Second, Down: 2, Up: 2},
			Hairpin:  true},
	}, {
		name: "udp checked on a TCP port",
		src: `
[[service]]
name = "dns"
uplinks = ["ppp1"]
proto = "udp"
port = 53
backends = ["10.0.0.2:53"]
check.port = 53
`,
		want: Service{Name: "dns", Uplinks: []string{"ppp1"}, Proto: ProtoUDP, Port: 53, Balance: BalanceSourceHash,
			Backends: []ServiceBackend{{ap("10.0.0.2:53"), 1}},
			Check:    ServiceCheck{Enabled: true, Interval: 2 * time.Second, Timeout: time.Second, Down: 2, Up: 2, Port: 53},
			Hairpin:  true},
	}, {
		name: "check switched off",
		src: `
[[service]]
name = "ssh"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.2:22"]
check = { enabled = false }
`,
		want: Service{Name: "ssh", Uplinks: []string{"ppp0"}, Proto: ProtoTCP, Port: 22, Balance: BalanceSourceHash,
			Backends: []ServiceBackend{{ap("10.0.0.2:22"), 1}},
			Check:    ServiceCheck{Interval: 2 * time.Second, Timeout: time.Second, Down: 2, Up: 2},
			Hairpin:  true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", tomlDoc(serviceBase+tt.src), testTables)
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			if got := cfg.Services[0]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestParseServiceProblems: every wrong [[service]] key is reported at
// FILE:LINE:COL.
func TestParseServiceProblems(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{{
		name: "backends",
		src: `
[[service]]
name = "a"
uplinks = ["ppp0"]
port = 22
backends = [
  "10.0.0.2",
  { address = "10.0.0.3:22", weight = 0 },
  { address = "10.0.0.4:22", weight = 257 },
  { weight = 2 },
  { address = "10.0.0.5:22", wieght = 2 },
  "192.168.1.2:22",
  "10.0.0.3:22",
  22,
]
`,
		want: []string{
			`t.toml:18:3: backends[0] must be IPv4:PORT (got "10.0.0.2")`,
			`t.toml:19:39: weight must be 1..256 (got 0)`,
			`t.toml:20:39: weight must be 1..256 (got 257)`,
			`t.toml:21:3: missing "address" in backends[3]`,
			`t.toml:22:30: unknown key "wieght" in [[service.backends]] (did you mean "weight"?)`,
			`t.toml:23:3: backend 192.168.1.2:22 is not inside [lan] networks`,
			`t.toml:24:3: duplicate backend 10.0.0.3:22 (first at line 19)`,
			`t.toml:25:3: backends[7] must be "IPv4:PORT" or a table such as { address = "10.0.0.2:22", weight = 2 }, not an integer`,
		},
	}, {
		name: "check, limit, balance",
		src: `
[[service]]
name = "a"
uplinks = ["ppp0"]
port = 22
balance = "source-hash"
backends = [{ address = "10.0.0.2:22", weight = 32 }, "10.0.0.3:22"]
limit = { hits = 0, seconds = 7 }
  [service.check]
  interval = "0s"
  timeout = "-1s"
  down = 0
  up = 1001
  port = 0
[[service]]
name = "b"
uplinks = ["ppp0"]
proto = "udp"
port = 53
backends = ["10.0.0.2:53"]
check.enabled = true
`,
		want: []string{
			`t.toml:18:12: source-hash spreads clients over the weights divided by their common divisor, at most 32 slots (got 33): use smaller weights`,
			`t.toml:19:18: hits must be 1..1000000 (got 0)`,
			`t.toml:19:31: seconds = 7 cannot be enforced exactly: nftables and iptables hashlimit count a rate per second, minute, hour or day, so the window must divide 86400 (nearest: 6 or 8)`,
			`t.toml:21:14: interval must be 100ms..1h: a shorter one keeps a core busy with probes (got 0s)`,
			`t.toml:22:13: timeout must be 10ms..1m (got -1s)`,
			`t.toml:23:10: down must be 1..1000 (got 0)`,
			`t.toml:24:8: up must be 1..1000 (got 1001)`,
			`t.toml:25:10: port must be 1..65535 (got 0)`,
			`t.toml:32:17: a udp service is checked by a TCP connect to another port: set [service.check] port`,
		},
	}, {
		name: "hairpin without networks",
		src: `
[[service]]
name = "a"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.2:22"]
hairpin = true
`,
		want: []string{`t.toml:17:11: hairpin needs [lan] interface and networks: only connections from the LAN networks are hairpinned`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := serviceBase
			if tt.name == "hairpin without networks" {
				base = strings.Replace(serviceBase, "networks = [\"10.0.0.0/24\"]\n", "", 1)
			}
			_, err := Parse("t.toml", tomlDoc(base+tt.src), testTables)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
