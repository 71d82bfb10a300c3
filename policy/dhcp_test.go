package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestDHCPKeys: [lan.dhcp] per mode — defaults, keys of another mode
// rejected where they are written, service needs exactly one of unit and
// command, embedded needs a range inside the LAN and max_lease ≥ lease.
func TestDHCPKeys(t *testing.T) {
	const lan = uplinkTOML + `
[lan]
interface = "eth0"
networks = ["10.0.0.0/24"]
  [lan.dhcp]
`
	tests := []struct {
		name string
		src  string
		want []string // problems; nil: the file loads and gives wantDHCP
		dhcp *DHCP
	}{{
		name: "mode defaults to off",
		src:  lan + "\n",
		dhcp: &DHCP{Mode: DHCPOff},
	}, {
		name: "off takes no other key",
		src:  lan + `range = ["10.0.0.100", "10.0.0.199"]` + "\n" + `unit = "kea-dhcp4.service"` + "\n",
		want: []string{`t.toml:10:9: range does not apply to mode off`, `t.toml:11:8: unit does not apply to mode off`},
	}, {
		name: "embedded defaults",
		src:  lan + `mode = "embedded"` + "\n" + `range = ["10.0.0.100", "10.0.0.199"]` + "\n",
		dhcp: &DHCP{Mode: DHCPEmbedded, Range: []netip.Addr{netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.199")},
			Lease: time.Hour, MaxLease: 24 * time.Hour, ConflictCheck: true},
	}, {
		name: "embedded with every key",
		src: lan + `mode = "embedded"
range = ["10.0.0.100", "10.0.0.199"]
lease = "2h"
max_lease = "12h"
router = ["10.0.0.254"]
dns = ["10.0.0.1", "10.0.0.2"]
ntp = ["10.0.0.1"]
domain = "lan.example"
conflict_check = false
`,
		dhcp: &DHCP{Mode: DHCPEmbedded, Range: []netip.Addr{netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.199")},
			Lease: 2 * time.Hour, MaxLease: 12 * time.Hour, Router: []netip.Addr{netip.MustParseAddr("10.0.0.254")},
			DNS: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")},
			NTP: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Domain: "lan.example"},
	}, {
		name: "embedded problems",
		src: lan + `mode = "embedded"
lease = "2h"
max_lease = "1h"
domain = "bad domain"
command = ["/usr/sbin/service", "isc-dhcp-server", "restart"]
hosts = [{ mac = "dc:a6:32:90:31:cc", ip = "192.168.1.5" }]
`,
		want: []string{
			`t.toml:9:3: missing "range" in [lan.dhcp]`,
			`t.toml:12:13: max_lease 1h0m0s is shorter than lease 2h0m0s`,
			`t.toml:13:10: domain "bad domain" is not a domain name`,
			`t.toml:14:11: command does not apply to mode embedded`,
			`t.toml:15:44: host ip 192.168.1.5 is not inside one of lan.networks`,
		},
	}, {
		name: "service with a unit",
		src:  lan + `mode = "service"` + "\n" + `unit = "isc-dhcp-server.service"` + "\n",
		dhcp: &DHCP{Mode: DHCPService, Unit: "isc-dhcp-server.service", RestartInterval: 10 * time.Second},
	}, {
		name: "service problems",
		src: lan + `mode = "service"
unit = "isc-dhcp-server.service"
command = ["service", "isc-dhcp-server", "restart"]
range = ["10.0.0.100", "10.0.0.199"]
restart_interval = "0s"
`,
		want: []string{
			`t.toml:10:8: mode service needs exactly one of unit or command`,
			`t.toml:12:12: command[0] must be an absolute path (got "service")`,
			`t.toml:13:9: range does not apply to mode service`,
			`t.toml:14:20: restart_interval must be 1s..1h (got 0s)`,
		},
	}, {
		name: "service needs one of unit and command",
		src:  lan + `mode = "service"` + "\n",
		want: []string{`t.toml:10:8: mode service needs exactly one of unit or command`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", tomlDoc(tt.src), testTables)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if tt.dhcp != nil && !reflect.DeepEqual(cfg.LAN.DHCP, tt.dhcp) {
				t.Errorf("dhcp = %+v, want %+v", cfg.LAN.DHCP, tt.dhcp)
			}
		})
	}
}
