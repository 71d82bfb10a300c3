package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testTables = map[string]int64{"PPP0": 200, "PPP1": 201, "main": 254}

// tomlDoc lets a test document start on the line after the backquote, so that
// line numbers in the expectations are the ones you count in the source.
func tomlDoc(s string) []byte { return []byte(strings.TrimPrefix(s, "\n")) }

func TestParseGood(t *testing.T) {
	data, err := os.ReadFile("testdata/config/good.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("good.toml", data, testTables)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	if cfg.Path != "good.toml" || len(cfg.Warnings) != 0 {
		t.Errorf("Path, Warnings = %q, %v", cfg.Path, cfg.Warnings)
	}
	want := Daemon{
		ControlSocket:   DefaultControlSocket,
		StateDir:        DefaultStateDir,
		HookDir:         DefaultHookDir,
		DefaultTable:    300,
		DefaultPriority: 32500,
		LogLevel:        LogDebug,
		MinSyncInterval: DefaultMinSync,
		StickyPriority:  DefaultStickyPriority,
		LastResort:      LastResortLink,
	}
	if !reflect.DeepEqual(cfg.Daemon, want) {
		t.Errorf("Daemon = %+v, want %+v", cfg.Daemon, want)
	}
	wantLAN := LAN{
		Interface:          "eth0",
		Networks:           []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.1.0.0/16")},
		Masquerade:         true,
		Forwarding:         true,
		RemoveDefaultRoute: true,
		DHCP: &DHCP{
			Mode:  DHCPEmbedded,
			Range: []netip.Addr{netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.199")},
			Hosts: []DHCPHost{{Name: "node-2", MAC: "dc:a6:32:90:31:cc", IP: netip.MustParseAddr("10.0.0.2")}},
			Lease: time.Hour, MaxLease: 24 * time.Hour, ConflictCheck: true,
		},
		IPv6: LAN6{Mode: LAN6Off},
	}
	if !reflect.DeepEqual(cfg.LAN, wantLAN) {
		t.Errorf("LAN = %+v, want %+v", cfg.LAN, wantLAN)
	}
	wantUplinks := []Uplink{{
		Name: "ppp0", Interface: "ppp0", Kind: KindPPP, Table: 200, RulePriority: 200,
		SNAT: SNATSNAT, RPFilter: RPFilterLoose, Tier: 1, Weight: 1,
		Check: &Check{
			Method: ProbeICMP, Targets: []string{"192.0.2.1", "192.0.2.2"},
			Interval: time.Second, Timeout: 800 * time.Millisecond,
			Reliability: 2, Retries: 2, Down: 3, Up: 3, HoldDown: 30 * time.Second, MaxLoss: 0, TrafficWindow: 300 * time.Millisecond, WarnLoss: 1, Degraded: DegradedLowerWeight, DegradedWeight: 25,
		},
		Reconnect: &Reconnect{
			Peer:           "dsl-provider",
			ReconnectAfter: 10 * time.Second, Backoff: 5 * time.Second,
			MaxBackoff: 5 * time.Minute, Timeout: 30 * time.Second, DialTimeout: 30 * time.Second,
		},
	}, {
		Name: "wlan0", Interface: "wlan0", Kind: KindWLAN, Table: 100, RulePriority: 1000,
		SNAT: SNATSNAT, RPFilter: RPFilterLoose, Tier: 2, Weight: 1,
		Check: &Check{
			Method: ProbeHTTP, Targets: []string{"http://192.0.2.80/generate_204"},
			Interval: time.Second, Timeout: 800 * time.Millisecond,
			Reliability: 1, Retries: 2, Down: 3, Up: 3, MaxLoss: 1, TrafficWindow: 300 * time.Millisecond, WarnLoss: 1, Degraded: DegradedLowerWeight, DegradedWeight: 25,
		},
		Hooks: []Hook{{On: []HookEvent{"down", "up"}, Command: []string{"/usr/local/bin/notify", "--quiet"}}},
	}}
	if !reflect.DeepEqual(cfg.Uplinks, wantUplinks) {
		t.Errorf("Uplinks =\n%+v\nwant\n%+v", cfg.Uplinks, wantUplinks)
	}
	wantRules := []MarkRule{{Name: "p2p", UID: pointerTo[uint32](108), Uplink: "ppp0", Mark: 1, Priority: 100}}
	if !reflect.DeepEqual(cfg.Rules, wantRules) {
		t.Errorf("Rules = %+v, want %+v", cfg.Rules, wantRules)
	}
	wantFW := Firewall{Backend: BackendNFTables, IPTablesVariant: IPTablesAuto, InputPolicy: PolicyAccept, ForwardPolicy: PolicyAccept}
	if !reflect.DeepEqual(cfg.Firewall, wantFW) {
		t.Errorf("Firewall = %+v, want %+v", cfg.Firewall, wantFW)
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse("t.toml", tomlDoc(`
[[uplink]]
name = "eth1"
table = 300
rule_priority = 300
[[service]]
name = "web"
uplinks = ["eth1"]
port = 80
backends = ["10.0.0.2:80"]
[firewall]
deny = [{ mac = "00:11:22:33:44:55" }]
`), nil)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	if u := cfg.Uplinks[0]; u.Kind != KindEthernet || u.Interface != "eth1" || u.Table != 300 {
		t.Errorf("uplink = %+v", u)
	}
	if s := cfg.Services[0]; s.Proto != "tcp" || s.Balance != "source-hash" {
		t.Errorf("service = %+v", s)
	}
	if d := cfg.Firewall.Deny[0]; d.Action != "drop" {
		t.Errorf("deny = %+v", d)
	}
}

// TestUplinkNumberDefaults: an uplink without table or rule_priority gets
// 1000+N and 1000+100×N (N its 1-based position), whatever the other
// uplinks set; explicit numbers stay as they are.
func TestUplinkNumberDefaults(t *testing.T) {
	cfg, err := Parse("t.toml", tomlDoc(`
[[uplink]]
name = "ppp0"
[[uplink]]
name = "ppp1"
table = 200
rule_priority = 300
[[uplink]]
name = "wlan0"
table = 7
[[uplink]]
name = "eth1"
rule_priority = 50
`), nil)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	type nums struct {
		table, prio     int
		tableDef, prDef bool
	}
	want := []nums{{1001, 1100, true, true}, {200, 300, false, false}, {7, 1300, false, true}, {1004, 50, true, false}}
	for i, u := range cfg.Uplinks {
		if got := (nums{u.Table, u.RulePriority, u.TableDefaulted, u.RulePriorityDefaulted}); got != want[i] {
			t.Errorf("uplink %s: %+v, want %+v", u.Name, got, want[i])
		}
	}
	// The largest defaults stay clear of uplinkd's own numbers.
	if DefaultUplinkTable(MaxUplinks) >= 253 && DefaultUplinkTable(1) <= 255 || DefaultUplinkTable(1) <= DefaultTable {
		t.Errorf("default tables %d..%d meet the kernel's 253..255 or default_table %d", DefaultUplinkTable(1), DefaultUplinkTable(MaxUplinks), DefaultTable)
	}
	if last := DefaultRulePriority(MaxUplinks); last >= DefaultStickyPriority || last >= DefaultPriority {
		t.Errorf("default rule priorities reach %d, into the sticky (%d) or default-route (%d) rules", last, DefaultStickyPriority, DefaultPriority)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{{
		name: "syntax error",
		src: `
[daemon
log_level = "info"
`,
		want: []string{`t.toml:1:8: syntax error: expected ']' to close table name`},
	}, {
		// The misspelt key is not reported a second time as missing.
		name: "wrong-case key",
		src: `
[[uplink]]
name = "ppp0"
Table = 200
rule_priority = 200
[[rule]]
name = "x"
uplink = "ppp9"
mark = 1
priority = 100
`,
		want: []string{
			`t.toml:3:1: unknown key "Table" in [[uplink]] (did you mean "table"?)`,
			`t.toml:7:10: unknown uplink "ppp9"`,
		},
	}, {
		name: "unknown keys and tables",
		src: `
[deamon]
[lan]
interfaces = "eth0"
dhcp.mode = "off"
dhcp.leases = "1h"
[[uplink]]
name = "ppp0"
reconnect.backof = "1s"
  [uplink.check]
  x = 1
[[uplink.firewall.allow]]
proto = "tcp"
port = 22
[[uplink.publish]]
kind = "command"
  command = ["x"]
  zone = "example.net"
  Zone = "example.net"
[service.web]
`,
		want: []string{
			`t.toml:1:2: unknown key "deamon" (did you mean "daemon"?)`,
			`t.toml:3:1: unknown key "interfaces" in [lan] (did you mean "interface"?)`,
			`t.toml:5:6: unknown key "leases" in [lan.dhcp] (did you mean "lease"?)`,
			`t.toml:8:11: unknown key "backof" in [uplink.reconnect] (did you mean "backoff"?)`,
			`t.toml:9:3: missing "targets" in [uplink.check]`,
			`t.toml:10:3: unknown key "x" in [uplink.check]`,
			`t.toml:13:1: unknown key "port" in [[uplink.firewall.allow]] (did you mean "ports"?)`,
			`t.toml:16:14: command[0] must be an absolute path (got "x")`,
			`t.toml:18:3: unknown key "Zone" in [[uplink.publish]] (did you mean "zone"?)`,
			`t.toml:19:2: service must be an array of tables, not a table`,
		},
	}, {
		name: "wrong types",
		src: `
[daemon]
default_priority = "0"
min_sync_interval = 5
log_level = ["info"]
[lan]
forwarding = "yes"
networks = "10.0.0.0/24"
dhcp = "embedded"
[[uplink]]
name = 1
table = true
rule_priority = 2.5
weight = 99999999999999999999
  [uplink.check]
  targets = [["192.0.2.1"], 1]
  interval = "1 second"
  max_loss = "10%"
  [uplink.firewall]
  allow = [{ proto = "tcp", ports = [22, "80"] }]
  limit = { proto = "tcp" }
[[rule]]
mark = -1
uid = 1979-05-27
`,
		want: []string{
			`t.toml:2:20: default_priority must be an integer, not a string`,
			`t.toml:3:21: min_sync_interval must be a duration string such as "30s", not an integer`,
			`t.toml:4:13: log_level must be a string, not an array`,
			`t.toml:6:14: forwarding must be a boolean, not a string`,
			`t.toml:7:12: networks must be an array of strings, not a string`,
			`t.toml:8:8: dhcp must be a table, not a string`,
			`t.toml:10:8: name must be a string, not an integer`,
			`t.toml:11:9: table must be a number or a table name, not a boolean`,
			`t.toml:12:17: rule_priority must be an integer, not a float`,
			`t.toml:13:10: weight 99999999999999999999 is out of range`,
			`t.toml:15:14: targets[0] must be a string, not an array`,
			`t.toml:15:29: targets[1] must be a string, not an integer`,
			`t.toml:16:14: interval must be a duration such as "800ms" or "5m" (got "1 second")`,
			`t.toml:17:14: max_loss must be a number, not a string`,
			`t.toml:19:42: ports[1] must be an integer, not a string`,
			`t.toml:20:11: limit must be an array of tables, not a table`,
			`t.toml:21:1: missing "name" in [[rule]]`,
			`t.toml:21:1: missing "uplink" in [[rule]]`,
			`t.toml:21:1: missing "priority" in [[rule]]`,
			`t.toml:22:8: mark must be 0..4294967295 (got -1)`,
			`t.toml:23:7: uid must be an integer, not a date/time`,
		},
	}, {
		name: "array of tables for a table",
		src: `
[[daemon]]
`,
		want: []string{`t.toml:1:1: daemon must be a table, not an array of tables`},
	}, {
		name: "keys and tables defined twice",
		src: `
[daemon]
log_level = "info"
log_level = "debug"
[daemon]
[[uplink]]
name = "a"
[uplink]
[[lan]]
x = 1
[[uplink]]
check = { method = "icmp" }
check.up = 3
[uplink.check]
`,
		want: []string{
			`t.toml:3:1: duplicate key "log_level"`,
			`t.toml:4:2: table [daemon] is already defined`,
			`t.toml:7:2: table [uplink] is already defined`,
			`t.toml:8:1: lan must be a table, not an array of tables`,
			`t.toml:10:1: missing "name" in [[uplink]]`,
			`t.toml:11:9: missing "targets" in [uplink.check]`,
			`t.toml:12:1: "check" is already defined and cannot be extended here`,
			`t.toml:13:9: table [uplink.check] is already defined`,
		},
	}, {
		name: "missing required keys",
		src: `
[[uplink]]
interface = "eth1"
[[rule]]
mark = 0
`,
		want: []string{
			`t.toml:1:1: missing "name" in [[uplink]]`,
			`t.toml:3:1: missing "name" in [[rule]]`,
			`t.toml:3:1: missing "uplink" in [[rule]]`,
			`t.toml:3:1: missing "priority" in [[rule]]`,
			`t.toml:4:8: mark must not be 0 (unmarked traffic has mark 0)`,
		},
	}, {
		name: "duplicate names, interfaces, tables and priorities",
		src: `
[[rule]]
name = "p2p"
uplink = "ppp0"
mark = 1
priority = 200
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
[[uplink]]
name = "ppp0"
interface = "ppp0"
table = "PPP0"
rule_priority = 300
[[rule]]
name = "p2p"
uplink = "ppp0"
mark = 2
priority = 300
`,
		want: []string{
			`t.toml:9:17: duplicate rule priority 200 (first at line 5)`,
			`t.toml:11:8: duplicate uplink name "ppp0" (first at line 7)`,
			`t.toml:12:13: duplicate interface "ppp0" (first at line 6)`,
			`t.toml:13:9: duplicate table 200 (first at line 8)`,
			`t.toml:16:8: duplicate rule name "p2p" (first at line 2)`,
			`t.toml:19:12: duplicate rule priority 300 (first at line 14)`,
		},
	}, {
		name: "defaulted numbers meet explicit ones",
		src: `
[[uplink]]
name = "a"
[[uplink]]
name = "b"
table = 1001
rule_priority = 1100
[[uplink]]
name = "c"
[[rule]]
name = "r"
uplink = "c"
mark = 1
priority = 1300
`,
		want: []string{
			`t.toml:1:1: uplink "a" has no table, and its default 1001 (1000 + its position 1) is the table set at line 5: set table here`,
			`t.toml:1:1: uplink "a" has no rule_priority, and its default 1100 (1000 + 100 × its position 1) is the priority set at line 6: set rule_priority here`,
			`t.toml:7:1: uplink "c" has no rule_priority, and its default 1300 (1000 + 100 × its position 3) is the priority set at line 13: set rule_priority here`,
		},
	}, {
		name: "unknown uplinks and tables",
		src: `
[[uplink]]
name = "a"
table = "PPP9"
rule_priority = 1
[[uplink]]
name = "b"
table = "main"
rule_priority = 2
[[uplink]]
name = "c"
table = 255
rule_priority = 32766
[[rule]]
name = "r"
uplink = "ppp9"
mark = 1
priority = 3
[[service]]
name = "s"
uplinks = ["a", "x"]
port = 22
backends = ["10.0.0.2:22"]
`,
		want: []string{
			`t.toml:3:9: unknown table name "PPP9" (not in rt_tables)`,
			`t.toml:7:9: table "main" (254) is reserved for the kernel (253 default, 254 main, 255 local)`,
			`t.toml:11:9: table 255 is reserved for the kernel (253 default, 254 main, 255 local)`,
			`t.toml:12:17: rule_priority must be 1..32765 (got 32766)`,
			`t.toml:15:10: unknown uplink "ppp9"`,
			`t.toml:20:17: unknown uplink "x"`,
		},
	}, {
		name: "uplink values",
		src: `
[[uplink]]
name = "wan"
interface = "eth1"
kind = "dsl"
table = 100
rule_priority = 100
gateway = "fe80::1"
snat = "nat"
tier = 0
weight = 257
rp_filter = "on"
[[uplink]]
name = "wan2"
interface = "a/b"
table = 101
rule_priority = 101
`,
		want: []string{
			`t.toml:4:8: kind must be one of ppp, wlan, ethernet (got "dsl")`,
			`t.toml:7:11: gateway must be an IPv4 address (got "fe80::1")`,
			`t.toml:8:8: snat must be one of snat, masquerade, off (got "nat")`,
			`t.toml:9:8: tier must be 1..255 (got 0)`,
			`t.toml:10:10: weight must be 1..256 (got 257)`,
			`t.toml:11:13: rp_filter must be one of off, loose, strict (got "on")`,
			`t.toml:14:13: interface "a/b" is not a valid interface name`,
		},
	}, {
		name: "health checks",
		src: `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
  [uplink.check]
  targets = ["192.0.2.1", "example.com"]
  interval = "500ms"
  reliability = 3
  down = 0
  max_loss = 1.5
  max_latency = "-1s"
[[uplink]]
name = "ppp1"
table = 201
rule_priority = 201
check = { method = "tcp", targets = ["192.0.2.1"], timeout = "2s" }
[[uplink]]
name = "ppp2"
table = 202
rule_priority = 202
check = { method = "smtp", targets = [] }
[[uplink]]
name = "ppp3"
table = 203
rule_priority = 203
check = { targets = ["192.0.2.1"], interval = "200ms", timeout = "100ms", traffic_trigger = true, traffic_window = "250ms" }
[[uplink]]
name = "ppp4"
table = 204
rule_priority = 204
check = { targets = ["192.0.2.1"], traffic_window = "50ms" }
[[uplink]]
name = "ppp5"
table = 205
rule_priority = 205
check = { targets = ["192.0.2.1"], interval = "200ms", timeout = "100ms" }
`,
		want: []string{
			`t.toml:6:27: targets[1] must be an IPv4 address for method "icmp" (got "example.com")`,
			`t.toml:7:14: timeout 800ms must not exceed interval 500ms`,
			`t.toml:8:17: reliability must be 1..2 (got 3)`,
			`t.toml:9:10: down must be 1..1000 (got 0)`,
			`t.toml:10:14: max_loss must be between 0 and 1 (got 1.5)`,
			`t.toml:11:17: max_latency must be 1ms..1m (got -1s)`,
			`t.toml:16:38: targets[0] must be HOST:PORT for method "tcp" (got "192.0.2.1")`,
			`t.toml:16:62: timeout 2s must not exceed interval 1s`,
			`t.toml:21:20: method must be one of icmp, tcp, dns, http (got "smtp")`,
			`t.toml:21:38: targets must not be empty`,
			`t.toml:26:116: traffic_window 250ms must not exceed interval 200ms`,
			`t.toml:31:53: traffic_window must be 100ms..10s: shorter windows mistake a slow reply for an outage and read the counters more often (got 50ms)`,
		},
	}, {
		name: "reconnect and uplink firewall",
		src: `
[[uplink]]
name = "wlan0"
table = 100
rule_priority = 100
  [uplink.reconnect]
  peer = "provider"
  stop_command = ["wpa_cli", ""]
  backoff = "1m"
  max_backoff = "30s"
  [uplink.firewall]
  allow = [{ proto = "icmp", ports = [0, 70000] }, { proto = "tcp" }]
  limit = [{ proto = "tcp", port = 22, hits = 0 }]
  icmp_types = [8, 256]
`,
		want: []string{
			`t.toml:6:10: peer is only used by kind "ppp"; set command instead`,
			`t.toml:7:19: stop_command[0] must be an absolute path (got "wpa_cli")`,
			`t.toml:7:30: stop_command[1] must not be empty`,
			`t.toml:9:17: max_backoff 30s must not be less than backoff 1m0s`,
			`t.toml:11:22: proto must be one of tcp, udp, sctp (got "icmp")`,
			`t.toml:11:39: ports[0] must be 1..65535 (got 0)`,
			`t.toml:11:42: ports[1] must be 1..65535 (got 70000)`,
			`t.toml:11:52: missing "ports" in [[uplink.firewall.allow]]`,
			`t.toml:12:12: missing "seconds" in [[uplink.firewall.limit]]`,
			`t.toml:12:47: hits must be 1..1000000 (got 0)`,
			`t.toml:13:20: icmp_types[1] must be 0..255 (got 256)`,
		},
	}, {
		name: "publish and hooks",
		src: `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
  [[uplink.publish]]
  kind = "dyndns2"
  server = "ftp://dyn.example.net"
  password_file = "dyn.secret"
  [[uplink.publish]]
  kind = "command"
  [[uplink.publish]]
  kind = "mail"
  [[uplink.hook]]
  on = ["down", "sometimes"]
  command = []
  [[uplink.hook]]
  command = ["/bin/true"]
`,
		want: []string{
			`t.toml:5:3: missing "hostname" in [[uplink.publish]]`,
			`t.toml:5:3: missing "username" in [[uplink.publish]]`,
			`t.toml:7:12: server must be an http:// or https:// URL (got "ftp://dyn.example.net")`,
			`t.toml:8:19: password_file must be an absolute path (got "dyn.secret")`,
			`t.toml:9:3: missing "command" in [[uplink.publish]]`,
			`t.toml:12:10: kind must be one of command, dyndns2, rfc2136 (got "mail")`,
			`t.toml:14:17: on[1] must be one of link-down, link-up, addr-change, probe-down, probe-up, probe6-down, probe6-up, down, up, reconnect, publish (got "sometimes")`,
			`t.toml:15:13: command must not be empty`,
			`t.toml:16:3: missing "on" in [[uplink.hook]]`,
		},
	}, {
		name: "mark rules",
		src: `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
[[uplink]]
name = "ppp1"
table = 201
rule_priority = 201
[[rule]]
name = "a"
uplink = "ppp0"
mark = 1
priority = 40000
source = ["10.0.0.0/33", "10.0.0.1"]
destination = ["::/0"]
ports = [80]
uid = -1
[[rule]]
name = "b"
uplink = "ppp1"
mark = 1
priority = 100
proto = "icmp"
`,
		want: []string{
			`t.toml:13:12: priority must be 1..32765 (got 40000)`,
			`t.toml:14:11: source[0] must be an IPv4 address or prefix such as "10.0.0.0/24" (got "10.0.0.0/33")`,
			`t.toml:15:16: destination[0] must be an IPv4 address or prefix such as "10.0.0.0/24" (got "::/0")`,
			`t.toml:16:9: ports need proto = "tcp" or "udp"`,
			`t.toml:17:7: uid must be 0..4294967295 (got -1)`,
			`t.toml:21:8: mark 1 already sends traffic via uplink "ppp0" (rule "a")`,
			`t.toml:23:9: proto must be one of tcp, udp (got "icmp")`,
		},
	}, {
		name: "daemon, lan, firewall and services",
		src: `
[daemon]
state_dir = "var/lib/uplinkd"
default_metric = 0
log_level = "verbose"
min_sync_interval = "-1s"
[lan]
networks = ["10.0.0.0/24", "10.0.0.0"]
  [lan.dhcp]
  mode = "dhcpd"
  range = ["10.0.0.199", "10.0.0.100"]
  hosts = [
    { name = "a", mac = "dc:a6:32:90:31:cc", ip = "10.0.0.2" },
    { name = "a", mac = "DC:A6:32:90:31:CC", ip = "10.0.0.2" },
    { mac = "dc:a6:32", ip = "10.0.0.300" },
  ]
[firewall]
backend = "pf"
input_policy = "reject"
deny = [{ action = "block" }, { source = "11.0.0.0/8", mac = "xx" }]
[[service]]
name = "ssh"
port = 0
proto = "sctp"
backends = ["10.0.0.2"]
balance = "rr"
`,
		want: []string{
			`t.toml:2:13: state_dir must be an absolute path (got "var/lib/uplinkd")`,
			"t.toml:3:1: default_metric was removed in 0.3: uplinkd's default route now lives in its own table (default_table) behind `lookup main suppress_prefixlength 0`, so no metric can make it lose to a foreign default route",
			`t.toml:4:13: log_level must be one of debug, info, warn, error (got "verbose")`,
			`t.toml:5:21: min_sync_interval must be 0s..1m: events inside it wait for the next pass, so a longer one leaves damage unrepaired (got -1s)`,
			`t.toml:6:1: [lan] without any [[uplink]]: there is nothing to route the LAN to`,
			`t.toml:7:28: networks[1] must be an IPv4 prefix such as "10.0.0.0/24" (got "10.0.0.0")`,
			`t.toml:9:10: mode must be one of embedded, service, off (got "dhcpd")`,
			`t.toml:10:11: range starts after it ends (10.0.0.199 > 10.0.0.100)`,
			`t.toml:13:14: duplicate host name "a" (first at line 12)`,
			`t.toml:13:25: duplicate host mac dc:a6:32:90:31:cc (first at line 12)`,
			`t.toml:13:51: duplicate host ip 10.0.0.2 (first at line 12)`,
			`t.toml:14:13: mac must be a MAC address such as "dc:a6:32:90:31:cc" (got "dc:a6:32")`,
			`t.toml:14:30: ip must be an IPv4 address (got "10.0.0.300")`,
			`t.toml:17:11: backend must be one of nftables, iptables (got "pf")`,
			`t.toml:18:16: input_policy must be one of accept, drop (got "reject")`,
			`t.toml:19:9: deny needs a source or a mac`,
			`t.toml:19:20: action must be one of reject, drop (got "block")`,
			`t.toml:19:62: mac must be a MAC address such as "dc:a6:32:90:31:cc" (got "xx")`,
			`t.toml:20:1: missing "uplinks" in [[service]]`,
			`t.toml:22:8: port must be 1..65535 (got 0)`,
			`t.toml:23:9: proto must be one of tcp, udp (got "sctp")`,
			`t.toml:24:13: backends[0] must be IPv4:PORT (got "10.0.0.2")`,
			`t.toml:25:11: balance must be one of weighted, source-hash (got "rr")`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", tomlDoc(tt.src), testTables)
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

func TestContribConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../contrib/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no contrib configs: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(f, data, testTables); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "uplinkd.toml")
	if err := os.WriteFile(path, tomlDoc(`
[[uplink]]
name = "ppp0"
table = 0
rule_priority = 200
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var probs Problems
	if !errors.As(err, &probs) || len(probs) != 1 {
		t.Fatalf("Load = %v, want one problem", err)
	}
	if want := (Problem{File: path, Line: 3, Col: 9, Msg: "table must be 1..2147483647 (got 0)"}); probs[0] != want {
		t.Errorf("problem = %+v, want %+v", probs[0], want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want not-exist", err)
	}
}

func pointerTo[T any](v T) *T { return &v }

// FuzzParse checks that no input panics and that every problem has a
// position inside the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../contrib/*.toml")
	for _, name := range append(files, "testdata/config/good.toml") {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.toml", data, testTables)
		var probs Problems
		if err != nil && !errors.As(err, &probs) {
			t.Fatalf("Parse returned %T, want Problems", err)
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range probs {
			if p.Line < 1 || p.Line > lines || p.Col < 1 {
				t.Errorf("problem outside the file: %v", p)
			}
		}
	})
}
