package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The adversarial config suite (issue 17): classes of files a careless or
// hostile hand writes. Each must come back from the loader with positioned
// problems (see checkOutcome), never a panic, never a hang, and never a
// config the daemon could not live with.

// adversarialSeeds are small hostile files; FuzzLoad starts from them too.
var adversarialSeeds = map[string]string{
	// huge values
	"integer overflow":       uplinkTOML + "tier = 99999999999999999999\n",
	"int64 max tier":         uplinkTOML + "tier = 9223372036854775807\n",
	"int64 min weight":       uplinkTOML + "weight = -9223372036854775808\n",
	"huge table":             "[[uplink]]\nname = \"ppp0\"\ntable = 4294967296\nrule_priority = 200\n",
	"huge port":              uplinkTOML + "[uplink.firewall]\nallow = [{ proto = \"tcp\", ports = [65536] }]\n",
	"huge mark":              uplinkTOML + "[[rule]]\nname = \"r\"\nuid = 1\nuplink = \"ppp0\"\npriority = 100\nmark = 4294967296\n",
	"duration overflow":      uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = \"9999999999999h\"\n",
	"probe every nanosecond": uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = \"1ns\"\ntimeout = \"1ns\"\n",
	"sync every 1000h":       "[daemon]\nmin_sync_interval = \"1000h\"\n" + uplinkTOML,
	"max_loss infinite":      uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\nmax_loss = inf\n",
	"max_loss nan":           uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\nmax_loss = nan\n",
	"float for an integer":   uplinkTOML + "tier = 1.5\n",
	// zero and negative
	"zero interval":         uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = \"0s\"\n",
	"negative backoff":      uplinkTOML + "[uplink.reconnect]\nbackoff = \"-5s\"\n",
	"negative priority":     "[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = -1\n",
	"negative table":        "[[uplink]]\nname = \"ppp0\"\ntable = -200\nrule_priority = 200\n",
	"zero weight":           uplinkTOML + "weight = 0\n",
	"zero hits and seconds": uplinkTOML + "[uplink.firewall]\nlimit = [{ proto = \"tcp\", port = 22, hits = 0, seconds = 0 }]\n",
	// duplicates
	"duplicate key":            uplinkTOML + "table = 201\n",
	"duplicate table":          "[daemon]\n[daemon]\n" + uplinkTOML,
	"duplicate uplink":         uplinkTOML + uplinkTOML,
	"duplicate interface":      uplinkTOML + "[[uplink]]\nname = \"b\"\ninterface = \"ppp0\"\ntable = 201\nrule_priority = 201\n",
	"table redefined as array": "[uplink]\nname = \"x\"\n" + uplinkTOML,
	// wrong types
	"name is a number":    "[[uplink]]\nname = 5\ntable = 200\nrule_priority = 200\n",
	"targets is a string": uplinkTOML + "[uplink.check]\ntargets = \"192.0.2.1\"\n",
	"uplink is a string":  "uplink = \"ppp0\"\n",
	"daemon is an array":  "daemon = [1, 2]\n" + uplinkTOML,
	"date for a name":     "[[uplink]]\nname = 1979-05-27T07:32:00Z\ntable = 200\nrule_priority = 200\n",
	"bool for a duration": uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\"]\ninterval = true\n",
	"mixed array":         uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\", 5, {a = 1}]\n",
	// overlong names and addresses
	"uplink name of 250 bytes": "[[uplink]]\nname = \"" + strings.Repeat("u", 250) + "\"\ninterface = \"eth0\"\ntable = 200\nrule_priority = 200\n",
	"interface name of 16":     uplinkTOML + "interface = \"" + strings.Repeat("e", 16) + "\"\n",
	"socket path of 92":        "[daemon]\ncontrol_socket = \"/" + strings.Repeat("s", 91) + "\"\n" + uplinkTOML,
	"gateway broadcast":        uplinkTOML + "gateway = \"255.255.255.255\"\n",
	"deny everything":          uplinkTOML + "[[firewall.deny]]\nsource = \"0.0.0.0/0\"\n",
	// NUL bytes and non-UTF-8
	"NUL escaped":                uplinkTOML + "interface = \"eth\\u00000\"\n",
	"NUL raw in a string":        uplinkTOML + "interface = \"eth\x000\"\n",
	"NUL raw in a key":           uplinkTOML + "inter\x00face = \"eth0\"\n",
	"NUL raw in a comment":       uplinkTOML + "# a\x00b\n",
	"invalid UTF-8 in a string":  uplinkTOML + "interface = \"eth\xff0\"\n",
	"invalid UTF-8 in a comment": uplinkTOML + "# \xc3\x28\n",
	"surrogate escape":           uplinkTOML + "interface = \"\\ud800\"\n",
	"BOM then garbage":           "\xef\xbb\xbf[[[\n",
	"lone CR":                    uplinkTOML + "tier = 1\rweight = 2\n",
	// structure
	"empty":                        "",
	"only whitespace":              " \t\n\n\t ",
	"unterminated string":          uplinkTOML + "interface = \"eth0\n",
	"unterminated array":           uplinkTOML + "[uplink.check]\ntargets = [\"192.0.2.1\",\n",
	"unterminated table header":    "[[uplink\nname = \"x\"\n",
	"header with empty key":        "[a..b]\n",
	"key without value":            uplinkTOML + "tier =\n",
	"unknown everywhere":           "[nope]\nx = 1\n[[uplink]]\nnmae = \"x\"\n[uplink.chek]\n",
	"array of tables into a value": "a = 1\n[[a]]\n",
	"inline table extended":        "daemon = {}\n[daemon.x]\n",
	"dotted key over a value":      "a = 1\na.b = 2\n",
}

// generated are the large classes: deep nesting, 10 MB files, huge arrays.
func adversarialGenerated() map[string]string {
	const tenMB = 10 << 20
	big := map[string]string{
		"deeply nested inline tables": "a = " + strings.Repeat("{b = ", 10000) + "1" + strings.Repeat("}", 10000) + "\n",
		"deeply nested arrays":        "a = " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n",
		"deep dotted key":             strings.Repeat("a.", 10000) + "b = 1\n",
		"deep table header":           "[" + strings.Repeat("a.", 10000) + "b]\n",
		"10 MB comment":               uplinkTOML + "# " + strings.Repeat("x", tenMB) + "\n",
		"10 MB string":                uplinkTOML + "interface = \"" + strings.Repeat("e", tenMB) + "\"\n",
		"10 MB of garbage lines":      strings.Repeat("garbage line !\n", tenMB/15),
		"10 MB of unknown keys":       uniqueKeys(tenMB),
		"100k uplinks":                uplinksOf(100000),
		"1M probe targets":            uplinkTOML + "[uplink.check]\ntargets = " + bigArray(1000000) + "\n",
		"10 MB single line":           uplinkTOML + "x = [" + strings.Repeat("1,", tenMB/2) + "]",
		"many hosts":                  uplinkTOML + lanDHCP + "hosts = [" + strings.Repeat("{ mac = \"02:00:00:00:00:01\", ip = \"10.0.0.5\" },", 100000) + "]\n",
	}
	// Just under the size limit: the loader's own work must stay fast.
	const under = MaxConfigSize - 1024
	big["1 MB of unknown keys"] = uniqueKeys(under)
	big["1 MB of garbage lines"] = strings.Repeat("garbage line !\n", under/15)
	big["1 MB single line"] = uplinkTOML + "x = [" + strings.Repeat("1,", under/2) + "]\n"
	big["1 MB of uplinks"] = uplinksOf(under / 86)
	big["1 MB of probe targets"] = uplinkTOML + "[uplink.check]\ntargets = " + bigArray(under/17) + "\n"
	big["1 MB of hosts"] = uplinkTOML + lanDHCP + "hosts = [" + strings.Repeat("{ mac = \"02:00:00:00:00:01\", ip = \"10.0.0.5\" },", under/47) + "]\n"
	big["1 MB of deny rules"] = uplinkTOML + strings.Repeat("[[firewall.deny]]\nsource = \"0.0.0.0/0\"\n", under/39)
	big["1 MB of rules"] = uplinkTOML + manyRules(under)
	big["1 MB of duplicate keys"] = uplinkTOML + strings.Repeat("tier = 1\n", under/9)
	return big
}

func manyRules(size int) string {
	var b strings.Builder
	for i := 0; b.Len() < size-200; i++ {
		fmt.Fprintf(&b, "[[rule]]\nname = \"r%d\"\nuid = 1\nuplink = \"ppp0\"\nmark = %d\npriority = %d\n", i, i%65535+1, i%32765+1)
	}
	return b.String()
}

func uniqueKeys(size int) string {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "k%d = %d\n", i, i)
	}
	return b.String()
}

func bigArray(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		fmt.Fprintf(&b, "\"192.0.%d.%d\",", i/256%256, i%256)
	}
	b.WriteByte(']')
	return b.String()
}

// acceptedSeeds are the adversarial files that are fine as they are.
var acceptedSeeds = map[string]bool{
	"NUL raw in a comment": false, // TOML forbids control characters in comments
	"empty":                true,  // only the "no [[uplink]]" warning
	"only whitespace":      true,
}

func TestAdversarialConfigs(t *testing.T) {
	cases := map[string]string{}
	for k, v := range adversarialSeeds {
		cases[k] = v
	}
	if !testing.Short() {
		for k, v := range adversarialGenerated() {
			cases[k] = v
		}
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			data := []byte(src)
			type result struct {
				cfg *Config
				err error
				pan any
			}
			done := make(chan result, 1)
			go func() {
				defer func() {
					if p := recover(); p != nil {
						done <- result{pan: p}
					}
				}()
				cfg, err := Parse("f.toml", data, testTables)
				done <- result{cfg: cfg, err: err}
			}()
			var r result
			// Generous: a hang is what this catches, not slowness on a
			// busy machine.
			select {
			case r = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatalf("Parse did not return within 2 minutes on %d bytes", len(data))
			}
			if r.pan != nil {
				t.Fatalf("Parse panicked: %v", r.pan)
			}
			checkOutcome(t, data, r.cfg, r.err)
			if acceptedSeeds[name] {
				if r.err != nil {
					t.Fatalf("rejected: %v", r.err)
				}
				return
			}
			if r.err == nil {
				t.Fatalf("accepted %d bytes", len(data))
			}
			// Lines stays short whatever the file: a garbage file does not
			// bury the first mistakes.
			if n := len(r.err.(Problems).Lines()); n > MaxReported+1 {
				t.Errorf("%d lines of problems, want at most %d", n, MaxReported+1)
			}
		})
	}
}
