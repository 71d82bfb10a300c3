package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// uplinkTOML is a minimal valid uplink for tests that are about something else.
const uplinkTOML = `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
`

// TestParseSemantics covers the problems only the loader can see: each is an
// error at the key that is wrong, so nothing downstream skips or rounds.
func TestParseSemantics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{{
		name: "mark above the user mask",
		src: uplinkTOML + `
[[rule]]
name = "a"
uid = 1
uplink = "ppp0"
mark = 65536
priority = 100
[[rule]]
name = "b"
uid = 2
uplink = "ppp0"
mark = 70000
priority = 101
[[rule]]
name = "c"
uid = 3
uplink = "ppp0"
mark = 65535
priority = 102
`,
		want: []string{
			`t.toml:10:8: mark must be 1..65535: rule marks live in the low 16 bits of the packet mark (got 65536)`,
			`t.toml:16:8: mark must be 1..65535: rule marks live in the low 16 bits of the packet mark (got 70000)`,
		},
	}, {
		name: "degraded level: warnings below failures, action keys need a warning",
		src: `
[[uplink]]
name = "a"
table = 200
rule_priority = 200
[uplink.check]
targets = ["192.0.2.1"]
max_loss = 0.2
warn_loss = 0.3
max_latency = "300ms"
warn_latency = "300ms"
degraded = "drop"
[[uplink]]
name = "b"
table = 201
rule_priority = 201
[uplink.check]
targets = ["192.0.2.1"]
degraded = "leave"
degraded_weight = 50
[[uplink]]
name = "c"
table = 202
rule_priority = 202
[uplink.check]
targets = ["192.0.2.1"]
warn_loss = 1.5
[[uplink]]
name = "d"
table = 203
rule_priority = 203
[uplink.check]
targets = ["192.0.2.1"]
warn_latency = "100ms"
degraded = "leave"
degraded_weight = 50
`,
		want: []string{
			`t.toml:8:13: warn_loss 0.3 must be below max_loss 0.2: an uplink is degraded before it fails`,
			`t.toml:10:16: warn_latency 300ms must be below max_latency 300ms: an uplink is degraded before it fails`,
			`t.toml:11:12: degraded must be one of lower-weight, leave (got "drop")`,
			`t.toml:18:12: degraded does nothing without warn_loss or warn_latency: set one of them, or remove degraded`,
			`t.toml:19:19: degraded_weight does nothing without warn_loss or warn_latency: set one of them, or remove degraded_weight`,
			`t.toml:26:13: warn_loss must be between 0 and 1 (got 1.5)`,
			`t.toml:35:19: degraded_weight does nothing with degraded = "leave": a degraded uplink leaves the default route`,
		},
	}, {
		name: "local matches with in_interface, in_interface an uplink",
		src: uplinkTOML + `
[lan]
interface = "eth2"
[[rule]]
name = "uid"
uid = 108
in_interface = "eth2"
uplink = "ppp0"
mark = 1
priority = 100
[[rule]]
name = "gid"
gid = 108
in_interface = "eth2"
uplink = "ppp0"
mark = 2
priority = 101
[[rule]]
name = "user"
user = "root"
in_interface = "eth2"
uplink = "ppp0"
mark = 3
priority = 102
[[rule]]
name = "from-uplink"
in_interface = "ppp0"
uplink = "ppp0"
mark = 4
priority = 103
`,
		want: []string{
			`t.toml:11:16: in_interface (forwarded traffic) and uid (the host's own traffic) never match together`,
			`t.toml:18:16: in_interface (forwarded traffic) and gid (the host's own traffic) never match together`,
			`t.toml:25:16: in_interface (forwarded traffic) and user (the host's own traffic) never match together`,
			`t.toml:31:16: in_interface "ppp0" is uplink "ppp0": only traffic from the LAN can be routed by mark`,
		},
	}, {
		name: "uid and user together",
		src: uplinkTOML + `
[[rule]]
name = "a"
uid = 0
user = "root"
uplink = "ppp0"
mark = 1
priority = 100
`,
		want: []string{`t.toml:9:8: set uid or user, not both`},
	}, {
		name: "lan without uplinks",
		src: `
[lan]
interface = "eth0"
`,
		want: []string{`t.toml:1:1: [lan] without any [[uplink]]: there is nothing to route the LAN to`},
	}, {
		name: "uplink on the lan interface",
		src: `
[lan]
interface = "eth0"
[[uplink]]
name = "wan"
interface = "eth0"
table = 100
rule_priority = 100
`,
		want: []string{`t.toml:5:13: interface "eth0" is the [lan] interface: an uplink is a way out, not the LAN`},
	}, {
		name: "dhcp range outside lan.networks",
		src: uplinkTOML + `
[lan]
interface = "eth0"
networks = ["10.0.0.0/24", "10.1.0.0/24"]
dhcp.mode = "embedded"
dhcp.range = ["10.0.0.100", "10.1.0.5"]
`,
		want: []string{`t.toml:10:14: range 10.0.0.100..10.1.0.5 is not inside one of lan.networks`},
	}, {
		name: "dhcp range without networks: only the order",
		src: uplinkTOML + `
[lan]
interface = "eth0"
dhcp.mode = "embedded"
dhcp.range = ["192.168.9.1", "10.0.0.1"]
`,
		want: []string{`t.toml:9:14: range starts after it ends (192.168.9.1 > 10.0.0.1)`},
	}, {
		name: "two services on one uplink, proto and port",
		src: uplinkTOML + `
[[service]]
name = "a"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.2:22"]
[[service]]
name = "b"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.3:22"]
[[service]]
name = "c"
uplinks = ["ppp0"]
proto = "udp"
port = 22
backends = ["10.0.0.3:22"]
`,
		want: []string{`t.toml:13:12: duplicate service on uplink "ppp0" tcp port 22 (first at line 8)`},
	}, {
		name: "relative command paths",
		src: `
[[uplink]]
name = "wlan0"
table = 100
rule_priority = 100
reconnect.command = ["wpa_cli", "reassociate"]
reconnect.stop_command = ["./stop"]
hook = [{ on = ["up"], command = ["notify.sh"] }]
publish = [{ kind = "command", command = ["bin/publish"] }]
`,
		want: []string{
			`t.toml:5:22: command[0] must be an absolute path (got "wpa_cli")`,
			`t.toml:6:27: stop_command[0] must be an absolute path (got "./stop")`,
			`t.toml:7:35: command[0] must be an absolute path (got "notify.sh")`,
			`t.toml:8:43: command[0] must be an absolute path (got "bin/publish")`,
		},
	}, {
		name: "masquerade without a lan interface",
		src: uplinkTOML + `
[lan]
masquerade = true
`,
		want: []string{`t.toml:7:14: masquerade needs [lan] interface: without it uplinkd does not know which traffic is the LAN's`},
	}, {
		name: "limit windows the backends would round",
		src: uplinkTOML + `
firewall.limit = [
  { proto = "tcp", port = 22, hits = 2, seconds = 7 },
  { proto = "tcp", port = 23, hits = 2, seconds = 86401 },
  { proto = "tcp", port = 24, hits = 2, seconds = 45 },
  { proto = "tcp", port = 25, hits = 2, seconds = 86400 },
]
`,
		want: []string{
			`t.toml:7:51: seconds = 7 cannot be enforced exactly: nftables and iptables hashlimit count a rate per second, minute, hour or day, so the window must divide 86400 (nearest: 6 or 8)`,
			`t.toml:8:51: seconds must be 1..86400 (got 86401)`,
		},
	}, {
		name: "unknown user at its key",
		src: uplinkTOML + `
[[rule]]
name = "a"
user = "no-such-user-uplinkd-test"
uplink = "ppp0"
mark = 1
priority = 100
`,
		want: []string{`t.toml:8:8: unknown user "no-such-user-uplinkd-test"`},
	}, {
		name: "unknown control group at its key",
		src: uplinkTOML + `
[daemon]
control_group = "no-such-group-uplinkd-test"
`,
		want: []string{`t.toml:7:17: unknown group "no-such-group-uplinkd-test"`},
	}, {
		name: "sticky clash at the rule priority when sticky_priority is the default",
		src: uplinkTOML + `
[[rule]]
name = "a"
uid = 1
uplink = "ppp0"
mark = 1
priority = 32000
`,
		want: []string{`t.toml:11:12: priority 32000 clashes with the sticky connection rules, which use priorities 32000..32000 (set [daemon] sticky_priority to move them)`},
	}, {
		name: "sticky clash at sticky_priority when it is set",
		src: uplinkTOML + `
[daemon]
sticky_priority = 200
`,
		want: []string{`t.toml:7:19: the sticky connection rules use priorities 200..200 (sticky_priority), which clashes with rule priority 200 at line 4`},
	}, {
		name: "daemon keys",
		src: uplinkTOML + `
[daemon]
control_socket = "uplinkd.sock"
hook_dir = "hooks.d"
metrics_listen = "localhost"
allow_no_uplinks = "yes"
`,
		want: []string{
			`t.toml:7:18: control_socket must be an absolute path (got "uplinkd.sock")`,
			`t.toml:8:12: hook_dir must be an absolute path (got "hooks.d")`,
			`t.toml:9:18: metrics_listen must be HOST:PORT or :PORT, or empty to disable (got "localhost")`,
			`t.toml:10:20: allow_no_uplinks must be a boolean, not a string`,
		},
	}, {
		name: "reconnect dial_timeout",
		src: uplinkTOML + `reconnect.dial_timeout = "0s"
`,
		want: []string{`t.toml:5:26: dial_timeout must be 1s..1h (got 0s)`},
	}, {
		name: "publish keys per kind",
		src: uplinkTOML + `
[[uplink.publish]]
kind = "command"
command = ["/usr/local/bin/publish"]
hostname = "home.example.net"
ttl = "60s"
[[uplink.publish]]
kind = "dyndns2"
server = "https://dyn.example.net"
hostname = "home"
username = "me"
password_file = "/etc/uplinkd/dyn.secret"
zone = "example.net"
[[uplink.publish]]
name = "dns"
kind = "rfc2136"
server = "ns1.example.net:99999"
hostname = "home.example.org"
zone = "example.net"
key_file = "tsig.key"
ttl = "1500ms"
ca_file = "/etc/ssl/ca.pem"
[[uplink.publish]]
name = "dns"
kind = "rfc2136"
server = "ns1.example.net"
hostname = "home.example.net"
zone = "example.net"
refresh = "-1s"
timeout = "0s"
`,
		want: []string{
			`t.toml:9:12: hostname does not apply to kind "command"`,
			`t.toml:10:7: ttl does not apply to kind "command"`,
			`t.toml:14:12: hostname must be a fully qualified domain name such as "home.example.net" (got "home")`,
			`t.toml:17:8: zone does not apply to kind "dyndns2"`,
			`t.toml:21:10: server must be HOST or HOST:PORT (got "ns1.example.net:99999")`,
			`t.toml:22:12: hostname "home.example.org" is not in zone "example.net"`,
			`t.toml:24:12: key_file must be an absolute path (got "tsig.key")`,
			`t.toml:25:7: ttl must be whole seconds (got 1.5s)`,
			`t.toml:26:11: ca_file does not apply to kind "rfc2136"`,
			`t.toml:27:1: missing "key_file" in [[uplink.publish]]`,
			`t.toml:28:8: duplicate publish name "dns" (first at line 19)`,
			`t.toml:33:11: refresh must be 0s..8760h (got -1s)`,
			`t.toml:34:11: timeout must be 1s..10m (got 0s)`,
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

func TestParseResolves(t *testing.T) {
	cfg, err := Parse("t.toml", tomlDoc(uplinkTOML+`
[daemon]
control_group = "root"
[[rule]]
name = "a"
user = "root"
uplink = "ppp0"
mark = 1
priority = 100
`), testTables)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Daemon.ControlGID != 0 || cfg.Rules[0].UID == nil || *cfg.Rules[0].UID != 0 {
		t.Errorf("control gid %d, rule uid %v; want root's 0 and 0", cfg.Daemon.ControlGID, cfg.Rules[0].UID)
	}
}

func TestParsePublish(t *testing.T) {
	cfg, err := Parse("t.toml", tomlDoc(uplinkTOML+`
[[uplink.publish]]
kind = "dyndns2"
server = "https://dyn.example.net/nic/update"
hostname = "home.example.net."
username = "me"
password_file = "/etc/uplinkd/dyn.secret"
[[uplink.publish]]
kind = "rfc2136"
server = "192.0.2.53"
hostname = "home.example.net"
zone = "example.net"
key_file = "/etc/uplinkd/tsig.key"
refresh = "0s"
[[uplink.publish]]
kind = "command"
command = ["/usr/local/bin/publish", "--quiet"]
[[uplink.publish]]
kind = "command"
command = ["/usr/local/bin/publish2"]
`), testTables)
	if err != nil {
		t.Fatal(err)
	}
	pubs := cfg.Uplinks[0].Publish
	d, r, c1, c2 := pubs[0], pubs[1], pubs[2], pubs[3]
	if d.Name != "dyndns2-1" || d.URL == nil || d.URL.Host != "dyn.example.net" || d.Hostname != "home.example.net" || d.TTL != 0 {
		t.Errorf("dyndns2 = %+v", d)
	}
	if r.Name != "rfc2136-1" || r.ServerAddr != "192.0.2.53:53" || r.TTL != 60*time.Second || r.Refresh != 0 {
		t.Errorf("rfc2136 = %+v", r)
	}
	if c1.Name != "command-1" || c2.Name != "command-2" {
		t.Errorf("names = %q %q", c1.Name, c2.Name)
	}
	for _, p := range pubs {
		if p.Settle != 2*time.Second || p.MinInterval != 30*time.Second || p.Timeout != 10*time.Second {
			t.Errorf("%s: settle %s min_interval %s timeout %s", p.Name, p.Settle, p.MinInterval, p.Timeout)
		}
		if p.Name != "rfc2136-1" && p.Refresh != 600*time.Hour {
			t.Errorf("%s: refresh %s, want 600h", p.Name, p.Refresh)
		}
	}
}

func TestParseWarnings(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		warnings  []string
		runnable  bool
		wantError bool
	}{
		{"empty file", "", []string{"t.toml:1:1: warning: " + NoUplinksWarning}, false, false},
		{"comments only", "# nothing yet\n", []string{"t.toml:1:1: warning: " + NoUplinksWarning}, false, false},
		{"daemon only", "[daemon]\nlog_level = \"debug\"\n", []string{"t.toml:1:1: warning: " + NoUplinksWarning}, false, false},
		{"allowed on purpose", "[daemon]\nallow_no_uplinks = true\n", nil, true, false},
		{"one uplink", uplinkTOML, nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", tomlDoc(tt.src), testTables)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []string
			for _, w := range cfg.Warnings {
				got = append(got, w.String())
			}
			if !reflect.DeepEqual(got, tt.warnings) {
				t.Errorf("warnings %q, want %q", got, tt.warnings)
			}
			err = cfg.CheckRunnable()
			if (err == nil) != tt.runnable {
				t.Errorf("CheckRunnable = %v, want runnable %v", err, tt.runnable)
			}
			if err != nil && (!errors.Is(err, ErrNoUplinks) || !strings.HasPrefix(err.Error(), "t.toml: no [[uplink]]")) {
				t.Errorf("CheckRunnable = %q, want t.toml: ErrNoUplinks", err)
			}
		})
	}
}

func TestParseBOM(t *testing.T) {
	src := append([]byte{0xEF, 0xBB, 0xBF}, tomlDoc(uplinkTOML[1:]+"kind = \"dsl\"\n")...)
	_, err := Parse("t.toml", src, testTables)
	// The BOM is accepted, and columns on line 1 are not shifted by it.
	if err == nil || err.Error() != `t.toml:5:8: kind must be one of ppp, wlan, ethernet (got "dsl")` {
		t.Fatalf("Parse with BOM = %v", err)
	}
	if _, err := Parse("t.toml", append([]byte{0xEF, 0xBB, 0xBF}, "x = \n"...), testTables); err == nil ||
		!strings.HasPrefix(err.Error(), "t.toml:1:") {
		t.Errorf("syntax error after a BOM = %v", err)
	}
	if cfg, err := Parse("t.toml", append([]byte{0xEF, 0xBB, 0xBF}, uplinkTOML[1:]...), testTables); err != nil || cfg.Uplinks[0].Name != "ppp0" {
		t.Errorf("valid file with BOM: %v", err)
	}
}

func TestProblemsSummarised(t *testing.T) {
	var b strings.Builder
	for i := range 120 {
		fmt.Fprintf(&b, "bogus%d = 1\n", i)
	}
	_, err := Parse("t.toml", []byte(b.String()), testTables)
	var probs Problems
	if !errors.As(err, &probs) || len(probs) != 120 {
		t.Fatalf("Parse = %d problems, want 120", len(probs))
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != MaxReported+1 || lines[MaxReported] != "... and 70 more problems" || !strings.HasPrefix(lines[49], "t.toml:50:1: ") {
		t.Errorf("got %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if got := Problems(probs[:MaxReported]).Lines(); len(got) != MaxReported {
		t.Errorf("exactly %d problems gave %d lines", MaxReported, len(got))
	}
}

// TestReadStable changes the file between reads, as a writer saving in
// place would: ReadStable returns only a version that two reads agree on,
// and gives up on a file that never settles.
func TestReadStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "uplinkd.toml")
	full := tomlDoc(uplinkTOML)
	tests := []struct {
		name    string
		writes  map[int]string // attempt -> content written just before it
		want    string
		wantErr bool
	}{
		{"stable", nil, string(full), false},
		{"truncated, then written", map[int]string{0: "", 1: string(full[:10]), 2: string(full)}, string(full), false},
		{"truncated and left empty", map[int]string{0: ""}, "", false},
		{"changing on every read", map[int]string{0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}, "", true},
	}
	defer func(f func(int)) { beforeRead = f }(beforeRead)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, full, 0o600); err != nil {
				t.Fatal(err)
			}
			reads := 0
			beforeRead = func(attempt int) {
				reads++
				if s, ok := tt.writes[attempt]; ok {
					if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := ReadStable(path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ReadStable: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && string(got) != tt.want {
				t.Errorf("ReadStable = %q, want %q", got, tt.want)
			}
			if last := len(tt.writes); !tt.wantErr && reads != max(2, last+1) {
				t.Errorf("%d reads, want %d", reads, max(2, last+1))
			}
		})
	}
	beforeRead = func(int) {}
	if _, err := ReadStable(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestDefaultsAppliedOnce(t *testing.T) {
	cfg, err := Parse("t.toml", tomlDoc(uplinkTOML+`
[uplink.check]
targets = ["192.0.2.1"]
[uplink.reconnect]
[lan]
interface = "eth0"
networks = ["10.0.0.1/24"]
`), testTables)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Uplinks[0]
	if u.Tier != DefaultTier || u.Weight != DefaultWeight || u.SNAT != DefaultSNAT || u.RPFilter != DefaultRPFilter || u.Kind != KindPPP {
		t.Errorf("uplink defaults: %+v", u)
	}
	if u.Check.MaxLoss != DefaultCheckMaxLoss || u.Check.Method != ProbeICMP || u.Reconnect.DialTimeout != DefaultDialTimeout {
		t.Errorf("check/reconnect defaults: %+v %+v", u.Check, u.Reconnect)
	}
	if !cfg.LAN.Masquerade || !cfg.LAN.Forwarding || !cfg.LAN.RemoveDefaultRoute || cfg.LAN.Networks[0] != netip.MustParsePrefix("10.0.0.1/24") {
		t.Errorf("lan defaults: %+v", cfg.LAN)
	}
	d := cfg.Daemon
	if d.StickyPriority != DefaultStickyPriority || d.HookDir != DefaultHookDir || d.ControlSocket != DefaultControlSocket || d.AllowNoUplinks || d.MetricsListen != "" {
		t.Errorf("daemon defaults: %+v", d)
	}
}

// BenchmarkParseGarbage is a 10 MB file with a problem on every line: the
// loader must stay linear (it reports 50 and counts the rest).
func BenchmarkParseGarbage(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 10<<20; i++ {
		fmt.Fprintf(&sb, "[[uplink]]\nname = %d\ntable = \"no-such-table\"\n", i)
	}
	data := []byte(sb.String())
	for b.Loop() {
		_, err := Parse("big.toml", data, nil)
		if err == nil || !strings.Contains(err.Error(), "more problems") {
			b.Fatalf("Parse = %.200v", err)
		}
	}
}

// The seed's peer files, as pppoeconf wrote them: the first with
// `defaultroute`, the second with it commented out.
const (
	seedPeerDefaultRoute = "noipdefault\nusepeerdns\ndefaultroute\nhide-password\npersist\nplugin rp-pppoe.so eth0\n"
	seedPeerCommented    = "noipdefault\nusepeerdns\n#defaultroute\nhide-password\npersist\nplugin rp-pppoe.so eth1\n"
)

func TestParseWarnsOnPeerDefaultRoute(t *testing.T) {
	dir := t.TempDir()
	old := pppPeersDir
	pppPeersDir = dir
	t.Cleanup(func() { pppPeersDir = old })
	for name, text := range map[string]string{"dsl-provider": seedPeerDefaultRoute, "dsl-connection2": seedPeerCommented, "ppp0": seedPeerDefaultRoute} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uplink := func(name, reconnect string) string {
		return fmt.Sprintf("[[uplink]]\nname = %q\nkind = \"ppp\"\ntable = %d\nrule_priority = %d\n%s", name, 200+len(name), 200+len(name), reconnect)
	}
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"managed peer with defaultroute", uplink("ppp1", "[uplink.reconnect]\npeer = \"dsl-provider\"\n"),
			[]string{"t.toml:7:8: warning: peer file " + filepath.Join(dir, "dsl-provider") + " has `defaultroute`"}},
		{"peer defaults to the uplink name", uplink("ppp0", "[uplink.reconnect]\n"),
			[]string{"t.toml:6:1: warning: peer file " + filepath.Join(dir, "ppp0") + " has `defaultroute`"}},
		{"commented out", uplink("ppp1", "[uplink.reconnect]\npeer = \"dsl-connection2\"\n"), nil},
		{"not managed by uplinkd", uplink("ppp0", ""), nil},
		{"no such peer file", uplink("ppp1", "[uplink.reconnect]\npeer = \"nope\"\n"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte(tt.src), testTables)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range cfg.Warnings {
				got = append(got, w.String())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d like %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("warning %q, want prefix %q", got[i], tt.want[i])
				}
			}
		})
	}
}
