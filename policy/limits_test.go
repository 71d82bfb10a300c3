package policy

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Value builders for the bound tests: each returns the TOML of a value.
func dur(v int64) string { return fmt.Sprintf("%q", time.Duration(v).String()) }
func num(v int64) string { return fmt.Sprint(v) }
func word(n int64) string {
	return fmt.Sprintf("%q", strings.Repeat("w", int(n)))
}
func absPathOf(n int64) string {
	return fmt.Sprintf("%q", "/"+strings.Repeat("p", int(n)-1))
}

// domainOf is a valid domain name of n bytes: labels of at most 63.
func domainOf(n int64) string {
	var b strings.Builder
	for b.Len() < int(n) {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("d", min(63, int(n)-b.Len())))
	}
	return fmt.Sprintf("%q", b.String())
}

// targetsOf is an array of n ICMP targets.
func targetsOf(n int64) string {
	t := make([]string, n)
	for i := range t {
		t[i] = fmt.Sprintf("%q", fmt.Sprintf("192.0.2.%d", i+1))
	}
	return "[" + strings.Join(t, ", ") + "]"
}

func urlOf(n int64) string {
	return fmt.Sprintf("%q", "http://a/"+strings.Repeat("u", int(n)-len("http://a/")))
}

const (
	lanDHCP = `
[lan]
interface = "eth1"
networks = ["10.0.0.0/24"]
[lan.dhcp]
mode = "embedded"
range = ["10.0.0.100", "10.0.0.199"]
`
	lanService = `
[lan]
interface = "eth1"
[lan.dhcp]
mode = "service"
`
	serviceTOML = `
[[service]]
name = "ssh"
uplinks = ["ppp0"]
port = 22
backends = ["10.0.0.2:22"]
`
	haTOML = `
[ha]
track_file = "/run/uplinkd/track"
`
)

// boundCase places a value (from its builder) into a file for one key.
type boundCase struct {
	val func(int64) string
	doc func(v string) string
}

func in(prefix, suffix string) func(string) string {
	return func(v string) string { return prefix + v + suffix }
}

// boundCases is one file per numeric KeyLimits key; TestKeyLimitBounds
// fails for a key without one, so every new limit gets its test.
var boundCases = map[string]boundCase{
	"daemon.control_socket":            {absPathOf, in("[daemon]\ncontrol_socket = ", "\n"+uplinkTOML)},
	"daemon.state_dir":                 {absPathOf, in("[daemon]\nstate_dir = ", "\n"+uplinkTOML)},
	"daemon.hook_dir":                  {absPathOf, in("[daemon]\nhook_dir = ", "\n"+uplinkTOML)},
	"ha.track_file":                    {absPathOf, in("[ha]\ntrack_file = ", "\n"+uplinkTOML)},
	"daemon.default_priority":          {num, in("[daemon]\ndefault_priority = ", "\n"+uplinkTOML)},
	"daemon.sticky_priority":           {num, in("[daemon]\nsticky_priority = ", "\n"+uplinkTOML)},
	"daemon.min_sync_interval":         {dur, in("[daemon]\nmin_sync_interval = ", "\n"+uplinkTOML)},
	"lan.interface":                    {word, in("[lan]\ninterface = ", "\n"+uplinkTOML)},
	"uplink.interface":                 {word, in(uplinkTOML+"interface = ", "\n")},
	"rule.in_interface":                {word, in(uplinkTOML+"[[rule]]\nname = \"r\"\nuplink = \"ppp0\"\nmark = 1\npriority = 100\nin_interface = ", "\n")},
	"lan.dhcp.lease":                   {dur, in(uplinkTOML+lanDHCP+"max_lease = \"8760h\"\nlease = ", "\n")},
	"lan.dhcp.max_lease":               {dur, in(uplinkTOML+lanDHCP+"lease = \"1m\"\nmax_lease = ", "\n")},
	"lan.dhcp.domain":                  {domainOf, in(uplinkTOML+lanDHCP+"domain = ", "\n")},
	"lan.dhcp.unit":                    {word, in(uplinkTOML+lanService+"unit = ", "\n")},
	"lan.dhcp.restart_interval":        {dur, in(uplinkTOML+lanService+"unit = \"isc-dhcp-server.service\"\nrestart_interval = ", "\n")},
	"lan.dhcp.command[]":               {word, in(uplinkTOML+lanService+"command = [\"/bin/true\", ", "]\n")},
	"uplink.name":                      {word, in("[[uplink]]\ntable = 200\nrule_priority = 200\ninterface = \"eth0\"\nname = ", "\n")},
	"rule.name":                        {word, in(uplinkTOML+"[[rule]]\nuid = 1\nuplink = \"ppp0\"\nmark = 1\npriority = 100\nname = ", "\n")},
	"service.name":                     {word, in(uplinkTOML+"[[service]]\nuplinks = [\"ppp0\"]\nport = 22\nbackends = [\"10.0.0.2:22\"]\nname = ", "\n")},
	"uplink.publish.name":              {word, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nname = ", "\n")},
	"lan.dhcp.hosts.name":              {word, in(uplinkTOML+lanDHCP+"hosts = [{ mac = \"02:00:00:00:00:01\", ip = \"10.0.0.5\", name = ", " }]\n")},
	"uplink.rule_priority":             {num, in("[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = ", "\n")},
	"rule.priority":                    {num, in(uplinkTOML+"[[rule]]\nname = \"r\"\nuid = 1\nuplink = \"ppp0\"\nmark = 1\npriority = ", "\n")},
	"uplink.tier":                      {num, in(uplinkTOML+"tier = ", "\n")},
	"uplink.weight":                    {num, in(uplinkTOML+"weight = ", "\n")},
	"service.backends.weight":          {num, in(uplinkTOML+"[[service]]\nname = \"ssh\"\nuplinks = [\"ppp0\"]\nport = 22\nbalance = \"weighted\"\nbackends = [{ address = \"10.0.0.3:22\", weight = ", " }]\n")},
	"uplink.check.targets":             {targetsOf, in(uplinkTOML+"[uplink.check]\ntargets = ", "\n")},
	"uplink.check.targets[]":           {urlOf, in(uplinkTOML+"[uplink.check]\nmethod = \"http\"\ntargets = [", "]\n")},
	"uplink.check.interval":            {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\ntimeout = \"10ms\"\ninterval = ", "\n")},
	"service.check.interval":           {dur, in(uplinkTOML+serviceTOML+"check = { timeout = \"10ms\", interval = ", " }\n")},
	"uplink.check.timeout":             {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = \"1h\"\ntimeout = ", "\n")},
	"service.check.timeout":            {dur, in(uplinkTOML+serviceTOML+"check = { interval = \"1h\", timeout = ", " }\n")},
	"uplink.check.reliability":         {num, in(uplinkTOML+"[uplink.check]\ntargets = "+targetsOf(MaxProbeTargets)+"\nreliability = ", "\n")},
	"uplink.check.down":                {num, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\ndown = ", "\n")},
	"uplink.check.retries":             {num, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nretries = ", "\n")},
	"uplink.check.up":                  {num, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nup = ", "\n")},
	"service.check.down":               {num, in(uplinkTOML+serviceTOML+"check = { down = ", " }\n")},
	"service.check.up":                 {num, in(uplinkTOML+serviceTOML+"check = { up = ", " }\n")},
	"uplink.check.hold_down":           {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nhold_down = ", "\n")},
	"uplink.check.max_latency":         {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nmax_latency = ", "\n")},
	"uplink.check.warn_latency":        {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nwarn_latency = ", "\n")},
	"uplink.check.degraded_weight":     {num, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\nwarn_loss = 0.1\ndegraded_weight = ", "\n")},
	"uplink.check.traffic_window":      {dur, in(uplinkTOML+"[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = \"10s\"\ntraffic_window = ", "\n")},
	"uplink.reconnect.reconnect_after": {dur, in(uplinkTOML+"[uplink.reconnect]\nreconnect_after = ", "\n")},
	"uplink.reconnect.backoff":         {dur, in(uplinkTOML+"[uplink.reconnect]\nmax_backoff = \"24h\"\nbackoff = ", "\n")},
	"uplink.reconnect.max_backoff":     {dur, in(uplinkTOML+"[uplink.reconnect]\nbackoff = \"100ms\"\nmax_backoff = ", "\n")},
	"uplink.reconnect.timeout":         {dur, in(uplinkTOML+"[uplink.reconnect]\ntimeout = ", "\n")},
	"uplink.reconnect.dial_timeout":    {dur, in(uplinkTOML+"[uplink.reconnect]\ndial_timeout = ", "\n")},
	"uplink.reconnect.command[]":       {word, in(uplinkTOML+"[uplink.reconnect]\ncommand = [\"/bin/true\", ", "]\n")},
	"uplink.reconnect.stop_command[]":  {word, in(uplinkTOML+"[uplink.reconnect]\nstop_command = [\"/bin/true\", ", "]\n")},
	"uplink.publish.command[]":         {word, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\", ", "]\n")},
	"uplink.hook.command[]":            {word, in(uplinkTOML+"[[uplink.hook]]\non = [\"up\"]\ncommand = [\"/bin/true\", ", "]\n")},
	"uplink.hook.timeout":              {dur, in(uplinkTOML+"[[uplink.hook]]\non = [\"up\"]\ncommand = [\"/bin/true\"]\ntimeout = ", "\n")},
	"uplink.firewall.limit.hits":       {num, in(uplinkTOML+"[uplink.firewall]\nlimit = [{ proto = \"tcp\", port = 22, seconds = 60, hits = ", " }]\n")},
	"uplink.firewall.limit.seconds":    {num, in(uplinkTOML+"[uplink.firewall]\nlimit = [{ proto = \"tcp\", port = 22, hits = 5, seconds = ", " }]\n")},
	"service.limit.hits":               {num, in(uplinkTOML+serviceTOML+"limit = { seconds = 60, hits = ", " }\n")},
	"service.limit.seconds":            {num, in(uplinkTOML+serviceTOML+"limit = { hits = 5, seconds = ", " }\n")},
	"uplink.publish.ttl": {dur, in(uplinkTOML+`[[uplink.publish]]
kind = "rfc2136"
server = "ns1.example.net"
hostname = "home.example.net"
zone = "example.net"
key_file = "/etc/uplinkd/tsig.key"
ttl = `, "\n")},
	"uplink.publish.settle":        {dur, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nsettle = ", "\n")},
	"uplink.publish.min_interval":  {dur, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nmin_interval = ", "\n")},
	"uplink.publish.refresh":       {dur, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nrefresh = ", "\n")},
	"uplink.publish.timeout":       {dur, in(uplinkTOML+"[[uplink.publish]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\ntimeout = ", "\n")},
	"uplink.publish.username":      {word, in(uplinkTOML+dyndns2TOML+"username = ", "\npassword_file = \"/etc/uplinkd/dyn.pass\"\n")},
	"uplink.publish.password_file": {absPathOf, in(uplinkTOML+dyndns2TOML+"username = \"u\"\npassword_file = ", "\n")},
	"uplink.publish.ca_file":       {absPathOf, in(uplinkTOML+dyndns2TOML+"username = \"u\"\npassword_file = \"/etc/uplinkd/dyn.pass\"\nca_file = ", "\n")},
	"uplink.publish.key_file": {absPathOf, in(uplinkTOML+`[[uplink.publish]]
kind = "rfc2136"
server = "ns1.example.net"
hostname = "home.example.net"
zone = "example.net"
key_file = `, "\n")},
	"rule.mark":                {num, in(uplinkTOML+"[[rule]]\nname = \"r\"\nuid = 1\nuplink = \"ppp0\"\npriority = 100\nmark = ", "\n")},
	"ha.lost_uplink_weight":    {num, in(haTOML+"lost_uplink_weight = ", "\n"+uplinkTOML)},
	"uplink.ha.weight":         {num, in(haTOML+uplinkTOML+"[uplink.ha]\nweight = ", "\n")},
	"uplink":                   {uplinksOf, in("", "")},
	"lan.ipv6.max_interval":    {dur, in(lan6Announce+"max_interval = ", "\n"+uplink6TOML)},
	"lan.ipv6.min_interval":    {dur, in(lan6Announce+"max_interval = \"1800s\"\nmin_interval = ", "\n"+uplink6TOML)},
	"lan.ipv6.router_lifetime": {dur, in(lan6Announce+"max_interval = \"4s\"\nrouter_lifetime = ", "\n"+uplink6TOML)},
	"lan.ipv6.rdnss":           {listOf(func(i int64) string { return fmt.Sprintf("2001:db8::%x", i+1) }), in(lan6Announce+"rdnss = ", "\n"+uplink6TOML)},
	"lan.ipv6.dnssl":           {listOf(func(i int64) string { return fmt.Sprintf("d%d.example", i) }), in(lan6Announce+"dnssl = ", "\n"+uplink6TOML)},
	"lan.ipv6.dnssl[]":         {domainOf, in(lan6Announce+"dnssl = [", "]\n"+uplink6TOML)},
	"lan.ipv6.subnet":          {num, in("[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42::/64\"\nsubnet = ", "\n"+strings.Replace(uplinkTOML, "rule_priority = 200\n", "rule_priority = 200\nipv6 = true\n", 1))},
}

// lan6Announce starts [lan.ipv6] with router advertisements on; uplink6TOML
// is the uplink it needs.
const lan6Announce = "[lan]\ninterface = \"eth1\"\n[lan.ipv6]\nmode = \"prefix\"\nannounce = true\n"

var uplink6TOML = strings.Replace(uplinkTOML, "rule_priority = 200\n", "rule_priority = 200\nipv6 = true\n", 1)

// listOf is an array builder of n quoted elements.
func listOf(elem func(i int64) string) func(int64) string {
	return func(n int64) string {
		e := make([]string, max(n, 0))
		for i := range e {
			e[i] = fmt.Sprintf("%q", elem(int64(i)))
		}
		return "[" + strings.Join(e, ", ") + "]"
	}
}

// dyndns2TOML lacks username (and the file keys that follow it).
const dyndns2TOML = `[[uplink.publish]]
kind = "dyndns2"
server = "https://dyn.example.net/nic/update"
hostname = "home.example.net"
`

// uplinksOf is a file with n uplinks; the password_file of dyndns2TOML is
// not needed here.
func uplinksOf(n int64) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[uplink]]\nname = \"u%d\"\ninterface = \"eth%d\"\ntable = %d\nrule_priority = %d\n", i, i, 1000+i, 100+i)
	}
	return b.String()
}

// TestKeyLimitBounds tries every numeric bound of KeyLimits from just
// inside (accepted) and just outside (an error at the key's line). Lengths
// are tried at their maximum only: below the minimum is the empty string,
// which each key reports in its own words ("must not be empty").
func TestKeyLimitBounds(t *testing.T) {
	for _, lim := range KeyLimits {
		if lim.Kind == LimitRule {
			continue
		}
		step := int64(1) // one nanosecond, one, one byte
		for _, key := range lim.Keys {
			bc, ok := boundCases[key]
			if !ok {
				t.Errorf("%s: no case in boundCases", key)
				continue
			}
			type try struct {
				v      int64
				accept bool
			}
			tries := []try{{lim.Max, true}, {lim.Max + step, false}}
			if lim.Kind != LimitLength {
				tries = append(tries, try{lim.Min, true}, try{lim.Min - step, false})
			}
			for _, tr := range tries {
				src := bc.doc(bc.val(tr.v))
				name := fmt.Sprintf("%s=%d", key, tr.v)
				t.Run(name, func(t *testing.T) {
					if (key == "uplink" || key == "lan.ipv6.rdnss" || key == "lan.ipv6.dnssl") && tr.v < 0 {
						t.Skip("no list has fewer than zero elements")
					}
					_, err := Parse("t.toml", tomlDoc(src), testTables)
					if tr.accept {
						if err != nil {
							t.Fatalf("rejected:\n%v\nfile:\n%s", err, src)
						}
						return
					}
					if err == nil {
						t.Fatalf("accepted; file:\n%s", src)
					}
					last := key[strings.LastIndexByte(key, '.')+1:]
					last = strings.TrimSuffix(last, "[]")
					if !strings.Contains(err.Error(), last) || !strings.HasPrefix(err.Error(), "t.toml:") {
						t.Errorf("error does not name %q with a position:\n%v", last, err)
					}
				})
			}
		}
	}
	for key := range boundCases {
		if limitIndex[key] == nil {
			t.Errorf("boundCases has %s, KeyLimits does not", key)
		}
	}
}

// TestLimitsDoc keeps docs/config-limits.md generated from KeyLimits.
// go test ./policy -run TestLimitsDoc -update rewrites it.
func TestLimitsDoc(t *testing.T) {
	const path = "../docs/config-limits.md"
	const begin, end = "<!-- limits:begin (generated by `go test ./policy -run TestLimitsDoc -update`) -->\n", "<!-- limits:end -->\n"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s: no generated section between %q and %q", path, begin, end)
	}
	want := s[:i+len(begin)] + LimitsMarkdown() + s[j:]
	if want == s {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with KeyLimits: run go test ./policy -run TestLimitsDoc -update", path)
}

// TestKeyLimitRules covers the address and name rules of KeyLimits: each
// bad value is an error at its position, its good neighbour is accepted.
func TestKeyLimitRules(t *testing.T) {
	gw := in(uplinkTOML+"interface = \"eth0\"\ngateway = ", "\n")
	deny := in("[lan]\ninterface = \"eth1\"\nnetworks = [\"10.0.0.0/24\", \"192.168.8.0/22\"]\n"+uplinkTOML+"[[firewall.deny]]\nsource = ", "\n")
	dhcp := in(uplinkTOML+lanDHCP[:strings.Index(lanDHCP, "range")]+"range = ", "\n")
	deny6 := in("[lan]\ninterface = \"eth1\"\n"+uplinkTOML+"ipv6 = true\ndelegated_prefix = \"2001:db8:a::/56\"\n"+
		"[lan.ipv6]\nmode = \"npt\"\nprefix = \"fd42:0:0:1::/64\"\nsubnet = 3\n[[firewall.deny]]\nsource = ", "\n")
	tests := []struct {
		name string
		src  string
		want string // "" accepted, else a substring of the one error
	}{
		{"gateway unicast", gw(`"192.168.1.1"`), ""},
		{"gateway broadcast", gw(`"255.255.255.255"`), "t.toml:6:11: gateway must be a unicast address, not 255.255.255.255"},
		{"gateway unspecified", gw(`"0.0.0.0"`), "gateway must be a unicast address, not 0.0.0.0"},
		{"gateway this-network", gw(`"0.1.2.3"`), "gateway must be a unicast address"},
		{"gateway loopback", gw(`"127.0.0.1"`), "gateway must be a unicast address"},
		{"gateway multicast", gw(`"224.0.0.1"`), "gateway must be a unicast address"},
		{"deny one LAN host", deny(`"10.0.0.50"`), ""},
		{"deny part of a LAN", deny(`"192.168.9.0/24"`), ""},
		{"deny outside", deny(`"198.51.100.0/24"`), ""},
		{"deny everything", deny(`"0.0.0.0/0"`), "t.toml:10:10: source 0.0.0.0/0 would drop all input and forwarding"},
		{"deny covering a LAN", deny(`"10.0.0.0/8"`), "source 10.0.0.0/8 covers all of lan.networks[0] (10.0.0.0/24)"},
		{"deny exactly a LAN", deny(`"192.168.8.0/22"`), "covers all of lan.networks[1]"},
		{"deny covering loopback", deny(`"64.0.0.0/2"`), "covers the loopback network"},
		{"deny without a LAN", uplinkTOML + "[[firewall.deny]]\nsource = \"0.0.0.0/0\"\n", "would drop all input"},
		{"deny one IPv6 LAN host", deny6(`"fd42:0:0:1::50"`), ""},
		{"deny an IPv6 range outside", deny6(`"2001:db8:ff::/48"`), ""},
		{"deny part of the IPv6 LAN", deny6(`"fd42:0:0:1:8000::/65"`), ""},
		{"deny another /64 of the delegation", deny6(`"2001:db8:a:4::/64"`), ""},
		{"deny all IPv6", deny6(`"::/0"`), "t.toml:15:10: source ::/0 would drop all IPv6 input and forwarding"},
		{"deny IPv6 loopback", deny6(`"::1"`), "t.toml:15:10: source ::1/128 covers the loopback address ::1"},
		{"deny covering IPv6 loopback", deny6(`"::/8"`), "covers the loopback address ::1"},
		{"deny link-local", deny6(`"fe80::/10"`), "covers the link-local network fe80::/10"},
		{"deny one link-local host", deny6(`"fe80::1234"`), ""},
		{"deny the IPv6 LAN prefix", deny6(`"fd42:0:0:1::/64"`), "t.toml:15:10: source fd42:0:0:1::/64 covers all of [lan.ipv6] prefix fd42:0:0:1::/64"},
		{"deny covering the IPv6 LAN prefix", deny6(`"fd00::/8"`), "covers all of [lan.ipv6] prefix"},
		{"deny the LAN /64 of a delegation", deny6(`"2001:db8:a:3::/64"`), `covers the LAN's /64 of uplink "ppp0"'s delegated_prefix 2001:db8:a::/56`},
		{"deny a whole delegation", deny6(`"2001:db8::/32"`), `covers the LAN's /64 of uplink "ppp0"`},
		{"deny IPv6 without an IPv6 uplink", uplinkTOML + "[[firewall.deny]]\nsource = \"2001:db8::1\"\n", "t.toml:6:10: source 2001:db8::1/128 is IPv6: uplinkd filters IPv6 only with an [[uplink]] with ipv6 = true"},
		{"deny IPv6 with a zone", deny6(`"fe80::1%eth0"`), "must be an IPv4 or IPv6 address or prefix"},
		{"forward drop, iptables, npt", strings.Replace(deny6(`"2001:db8:ff::/48"`), "[[firewall.deny]]", "[firewall]\nbackend = \"iptables\"\nforward_policy = \"drop\"\n[[firewall.deny]]", 1),
			"t.toml:16:18: forward_policy = \"drop\" with backend = \"iptables\" and [lan.ipv6] mode npt would drop every IPv6 reply"},
		{"forward drop, nftables, npt", strings.Replace(deny6(`"2001:db8:ff::/48"`), "[[firewall.deny]]", "[firewall]\nforward_policy = \"drop\"\n[[firewall.deny]]", 1), ""},
		{"dhcp range inside", dhcp(`["10.0.0.1", "10.0.0.254"]`), ""},
		{"dhcp range with the network address", dhcp(`["10.0.0.0", "10.0.0.20"]`), "range includes 10.0.0.0, the network or broadcast address of 10.0.0.0/24"},
		{"dhcp range with the broadcast address", dhcp(`["10.0.0.200", "10.0.0.255"]`), "range includes 10.0.0.255"},
		{"dhcp range too large", "[lan]\ninterface = \"eth1\"\nnetworks = [\"10.0.0.0/8\"]\n[lan.dhcp]\nmode = \"embedded\"\nrange = [\"10.0.0.1\", \"10.1.0.1\"]\n" + uplinkTOML, "holds 65537 addresses, at most 65536"},
		{"dhcp router broadcast", uplinkTOML + lanDHCP + "router = [\"255.255.255.255\"]\n", "router[0] must be a unicast address"},
		{"dhcp dns loopback", uplinkTOML + lanDHCP + "dns = [\"127.0.0.53\"]\n", "dns[0] must be a unicast address"},
		{"dhcp host ip multicast", uplinkTOML + strings.Replace(lanDHCP, "networks = [\"10.0.0.0/24\"]\n", "", 1) + "hosts = [{ mac = \"02:00:00:00:00:01\", ip = \"239.0.0.1\" }]\n", "ip must be a unicast address"},
		{"backend loopback", uplinkTOML + "[[service]]\nname = \"s\"\nuplinks = [\"ppp0\"]\nport = 22\nbackends = [\"127.0.0.1:22\"]\n", "address must be a unicast address"},
		{"icmp target broadcast", uplinkTOML + "[uplink.check]\ntargets = [\"255.255.255.255\"]\n", "targets[0] must be a unicast address"},
		{"lan network /0", "[lan]\ninterface = \"eth1\"\nnetworks = [\"0.0.0.0/0\"]\n" + uplinkTOML, "networks[0] must be an IPv4 prefix of length 8..32"},
		{"lan network loopback", "[lan]\ninterface = \"eth1\"\nnetworks = [\"127.0.0.0/8\"]\n" + uplinkTOML, "networks[0] must be an IPv4 prefix of length 8..32"},
		{"lan network /8", "[lan]\ninterface = \"eth1\"\nnetworks = [\"10.0.0.0/8\"]\n" + uplinkTOML, ""},
		{"interface dot", uplinkTOML + "interface = \".\"\n", `interface "." is not a valid interface name`},
		{"interface with a space", uplinkTOML + "interface = \"a b\"\n", `is not a valid interface name`},
		{"interface with a newline", uplinkTOML + "interface = \"a\\nb\"\n", `is not a valid interface name`},
		{"name with a control character", "[[uplink]]\nname = \"a\\u001bb\"\ninterface = \"eth0\"\ntable = 200\nrule_priority = 200\n", "name must be printable UTF-8 without control characters"},
		{"name in UTF-8", "[[uplink]]\nname = \"glasfaser-süd\"\ninterface = \"eth0\"\ntable = 200\nrule_priority = 200\n", ""},
		{"NUL in a string", uplinkTOML + "[uplink.reconnect]\ncommand = [\"/usr/bin/pon\\u0000x\"]\n", "t.toml:6:12: command[0] must not contain a NUL byte"},
		{"NUL in a path", "[daemon]\nstate_dir = \"/var/lib/\\u0000\"\n" + uplinkTOML, "state_dir must not contain a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", tomlDoc(tt.src), testTables)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("rejected:\n%v\nfile:\n%s", err, tt.src)
			case tt.want == "":
			case err == nil:
				t.Fatalf("accepted, want %q; file:\n%s", tt.want, tt.src)
			case !strings.Contains(err.Error(), tt.want) || strings.Count(err.Error(), "\n") > 0:
				t.Errorf("got\n%v\nwant one error containing %q", err, tt.want)
			}
		})
	}
}
