package policy

import (
	"reflect"
	"strings"
	"testing"
)

// TestParseHA: [ha] and [uplink.ha] defaults, and the tier rule for the
// per-uplink weight.
func TestParseHA(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    HA
		uplinks []UplinkHA
	}{{
		name:    "off by default",
		src:     "[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = 200\n",
		want:    HA{},
		uplinks: []UplinkHA{{}},
	}, {
		name: "defaults follow the tier and lost_uplink_weight",
		src: `
[ha]
track_file = "/run/uplinkd/ha-track"
lost_uplink_weight = -30
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
[[uplink]]
name = "wlan0"
table = 201
rule_priority = 201
tier = 2
[[uplink]]
name = "ppp1"
table = 202
rule_priority = 202
  [uplink.ha]
  mode = "exclusive"
  weight = -254
  [uplink.reconnect]
`,
		want: HA{TrackFile: "/run/uplinkd/ha-track", LostUplinkWeight: -30},
		uplinks: []UplinkHA{
			{Mode: HAActive, Weight: -30},
			{Mode: HAActive, Weight: 0},
			{Mode: HAExclusive, Weight: -254},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", tomlDoc(tt.src), testTables)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HA != tt.want {
				t.Errorf("HA = %+v, want %+v", cfg.HA, tt.want)
			}
			var got []UplinkHA
			for _, u := range cfg.Uplinks {
				got = append(got, u.HA)
			}
			if !reflect.DeepEqual(got, tt.uplinks) {
				t.Errorf("uplink HA = %+v, want %+v", got, tt.uplinks)
			}
		})
	}
}

// TestParseHAProblems: every HA key that is wrong, or would do nothing, is
// reported at FILE:LINE:COL.
func TestParseHAProblems(t *testing.T) {
	const uplink = `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
`
	tests := []struct {
		name string
		src  string
		want []string
	}{{
		name: "relative track file, weights out of range",
		src: `
[ha]
track_file = "ha-track"
lost_uplink_weight = 10
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
  [uplink.ha]
  mode = "hot"
  weight = -255
`,
		want: []string{
			`t.toml:2:14: track_file must be an absolute path (got "ha-track")`,
			`t.toml:3:22: lost_uplink_weight must be -254..0 (got 10)`,
			`t.toml:9:10: mode must be one of active, exclusive (got "hot")`,
			`t.toml:10:12: weight must be -254..0 (got -255)`,
		},
	}, {
		name: "keys without a track file",
		src: `
[ha]
track_file = ""
lost_uplink_weight = -10
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
  [uplink.ha]
  mode = "exclusive"
`,
		want: []string{
			`t.toml:2:14: track_file must not be empty (leave out [ha] to turn HA off)`,
			`t.toml:3:22: lost_uplink_weight has no effect without [ha] track_file`,
			`t.toml:8:3: [uplink.ha] has no effect without [ha] track_file`,
		},
	}, {
		name: "exclusive without a way to dial or stop",
		src: `
[ha]
track_file = "/run/uplinkd/ha-track"
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
ha.mode = "exclusive"
[[uplink]]
name = "eth1"
table = 201
rule_priority = 201
ha.mode = "exclusive"
reconnect.command = ["/usr/local/bin/dial"]
[[uplink]]
name = "ppp1"
table = 202
rule_priority = 202
ha.mode = "exclusive"
reconnect.command = ["/usr/local/bin/dial"]
[[uplink]]
name = "eth2"
table = 203
rule_priority = 203
ha.mode = "exclusive"
`,
		want: []string{
			`t.toml:7:11: mode "exclusive" needs [uplink.reconnect]: only the MASTER dials the uplink, so uplinkd must dial and stop it`,
			`t.toml:12:11: mode "exclusive" needs [uplink.reconnect] stop_command: a BACKUP must hang the uplink up`,
			`t.toml:18:11: mode "exclusive" needs [uplink.reconnect] stop_command with a custom command: a BACKUP must hang the uplink up`,
			`t.toml:24:11: mode "exclusive" needs [uplink.reconnect]: only the MASTER dials the uplink, so uplinkd must dial and stop it`,
		},
	}, {
		name: "exclusive ppp with the default pon/poff is fine",
		src: `
[ha]
track_file = "/run/uplinkd/ha-track"
` + uplink + `
  [uplink.ha]
  mode = "exclusive"
  [uplink.reconnect]
  peer = "dsl"
`,
	}, {
		name: "exclusive ethernet needs a command",
		src: `
[ha]
track_file = "/run/uplinkd/ha-track"
[[uplink]]
name = "eth1"
table = 200
rule_priority = 200
ha.mode = "exclusive"
reconnect.stop_command = ["/usr/local/bin/hangup"]
`,
		want: []string{
			`t.toml:7:11: mode "exclusive" needs [uplink.reconnect] command for kind "ethernet" (only ppp has a default dial and hang-up)`,
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

// TestTwoGatewaysContrib: contrib/two-gateways.toml counts the DSL line and
// the shared fibre account, not the tier-2 LTE stick, and the fibre account
// is exclusive.
func TestTwoGatewaysContrib(t *testing.T) {
	cfg := loadContrib(t, "two-gateways.toml")
	want := map[string]UplinkHA{
		"ppp0":  {Mode: HAActive, Weight: -127},
		"fibre": {Mode: HAExclusive, Weight: -127},
		"lte":   {Mode: HAActive, Weight: 0},
	}
	for name, w := range want {
		if u := cfg.UplinkByName(name); u == nil || u.HA != w {
			t.Errorf("%s: %+v, want %+v", name, u, w)
		}
	}
	if !cfg.HA.Enabled() {
		t.Error("HA off")
	}
}
