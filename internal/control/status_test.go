package control

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// TestStatusJSONGolden pins schema v1: a changed field name or format is a
// breaking change for every script reading `uplinkd status --json`.
func TestStatusJSONGolden(t *testing.T) {
	st := daemonStatus()
	got, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status_v1.json", append(got, '\n'))

	// And it reads back to the same value.
	var back Status
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("round trip changed the status:\n%+v", back)
	}
	again, _ := json.MarshalIndent(back, "", "  ")
	if string(again) != string(got) {
		t.Errorf("round trip changed the JSON:\n%s", again)
	}
}

// TestStatusDrainedJSON: drained and the daemon's drain problems are in the
// JSON under the documented names, and absent when there is nothing to say
// (the v1 golden above has none of them).
func TestStatusDrainedJSON(t *testing.T) {
	st := daemonStatus()
	st.Uplinks[0].Drained = true
	st.Daemon.Error = "broken"
	st.Daemon.DrainedUnknown = []string{"gone"}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Daemon  map[string]any   `json:"daemon"`
		Uplinks []map[string]any `json:"uplinks"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Uplinks[0]["drained"] != true {
		t.Errorf("uplinks[0].drained = %v", raw.Uplinks[0]["drained"])
	}
	if _, ok := raw.Uplinks[1]["drained"]; ok {
		t.Errorf("uplinks[1].drained present for an uplink that is not drained")
	}
	if raw.Daemon["error"] != "broken" || !reflect.DeepEqual(raw.Daemon["drained_unknown"], []any{"gone"}) {
		t.Errorf("daemon = %v", raw.Daemon)
	}
}

func TestFormatStatusGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		st   Status
	}{
		{"status.txt", daemonStatus()},
		{"status_minimal.txt", func() Status {
			// Without the optional sections: no HA, services,
			// publishers or DHCP.
			st := daemonStatus()
			st.HA, st.Services, st.Publishers, st.DHCP = nil, nil, nil, nil
			return st
		}()},
		{"status_drained.txt", func() Status {
			// A drained uplink, a lost drain file and a drained name
			// the config no longer has.
			st := daemonStatus()
			st.HA, st.Services, st.Publishers, st.DHCP = nil, nil, nil, nil
			st.Uplinks[0].Default, st.Uplinks[0].Drained = false, true
			st.Daemon.Error = "drain state /var/lib/uplinkd/drained.json is unreadable (unexpected EOF); moved it to /var/lib/uplinkd/drained.json.bad and treat it as empty"
			st.Daemon.DrainedUnknown = []string{"old-dsl"}
			return st
		}()},
		{"status_lan6.txt", func() Status {
			// [lan.ipv6] mode npt: a learned delegation with lifetimes
			// and a former prefix, a configured one, one without.
			st := daemonStatus()
			st.HA, st.Services, st.Publishers, st.DHCP = nil, nil, nil, nil
			st.LAN = &LAN{IPv6: &LAN6{Mode: "npt", Prefix: netip.MustParsePrefix("fd00:18::/64"), Uplinks: []LAN6Uplink{
				{Name: "fibre", Delegated: netip.MustParsePrefix("2001:db8:8100::/56"), Source: "learned",
					Learned: goldenNow.Add(-5 * time.Minute), PreferredUntil: goldenNow.Add(time.Hour), ValidUntil: goldenNow.Add(2 * time.Hour),
					Former: []netip.Prefix{netip.MustParsePrefix("2001:db8:8000::/56")}, NPT: netip.MustParsePrefix("2001:db8:8100::/64")},
				{Name: "dsl", Delegated: netip.MustParsePrefix("2001:db8:9000::/48"), Source: "config", NPT: netip.MustParsePrefix("2001:db8:9000::/64")},
				{Name: "lte"},
			}}}
			return st
		}()},
		{"status_empty.txt", Status{V: Version, Daemon: Daemon{Version: "0.3.0", PID: 1, Started: goldenNow.Add(-3 * 24 * time.Hour),
			Config: "/etc/uplinkd/uplinkd.toml", ConfigLoaded: goldenNow.Add(-42 * time.Second)}, Uplinks: []Uplink{}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			golden(t, tc.file, []byte(FormatStatus(tc.st, goldenNow)))
		})
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Minute, "0s"}, // clock skew
		{59 * time.Second, "59s"},
		{61 * time.Second, "1m1s"},
		{3*time.Hour + 2*time.Minute + 5*time.Second, "3h2m"},
		{50 * time.Hour, "2d2h"},
	} {
		if got := age(now.Add(-tc.d), now); got != tc.want {
			t.Errorf("age(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := age(time.Time{}, now); got != "-" {
		t.Errorf("age(zero) = %q", got)
	}
}

// goldenNow is the "now" of the golden tables.
var goldenNow = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

// daemonStatus is a status shaped the way the daemon fills it (the lab test
// TestLabStatusTellsTheTruth in internal/daemon checks the real one): every
// section, and in each the cases the daemon produces.
//
//   - Uplinks: loss, rtt_ms and jitter_ms are of the last probe round; a
//     round with one answer has no jitter, one with none no rtt; an uplink
//     without a check, or whose link is not usable, has none of the three.
//     Reasons are the pass's ("up", "no carrier", "probes failing").
//   - Services (backendcheck): a backend that never changed has no since;
//     one that failed fewer than `down` checks is still healthy but has
//     last_error; an unchecked service's backends are healthy, never
//     checked.
//   - Publishers (publish.Manager): a command publisher after its
//     publish (next_try is the default refresh, 600h later), a dyndns2 one
//     retrying with its pending address.
//   - DHCP (dhcpd): in_use counts the fixed host's lease; free is the pool
//     less the held addresses.
func daemonStatus() Status {
	now := goldenNow
	started := now.Add(-2 * time.Hour)
	return Status{
		V: Version,
		Daemon: Daemon{
			Version: "0.3.0", PID: 4242, Started: started, Config: "/etc/uplinkd/uplinkd.toml",
			ConfigLoaded: now.Add(-30 * time.Minute), LastPass: now.Add(-3 * time.Second),
			Passes: 1234, Repairs: 2,
		},
		HA: &HA{Role: RoleMaster, Since: now.Add(-90 * time.Minute)},
		Uplinks: []Uplink{
			{
				Name: "dsl", Interface: "ppp0", Kind: "ppp", State: StateUp, Reason: "up",
				Address: netip.MustParseAddr("203.0.113.7"), Gateway: netip.MustParseAddr("198.51.100.1"),
				Table: 201, Tier: 1, Weight: 2, Default: true, Loss: f64(0), RTTms: f64(12.25), JitterMs: f64(1.5),
				Since: now.Add(-90 * time.Minute), Reconnects: 1,
				LastEvent: &LastEvent{Name: "probe-up", At: now.Add(-90 * time.Minute)},
				Traffic: &Traffic{In: Count{Packets: 120000, Bytes: 150_300_000}, Out: Count{Packets: 60000, Bytes: 4_200_000},
					ForwardIn: Count{Packets: 119000, Bytes: 150_000_000}, ForwardOut: Count{Packets: 59000, Bytes: 4_100_000}},
			},
			{
				Name: "cable", Interface: "eth1", Kind: "ethernet", State: StateUp, Reason: "up",
				Address: netip.MustParseAddr("198.51.100.23"), Gateway: netip.MustParseAddr("198.51.100.1"),
				Table: 202, Tier: 1, Weight: 1, Default: true, Loss: f64(0.5), RTTms: f64(48),
				Since:     now.Add(-2 * time.Hour),
				LastEvent: &LastEvent{Name: "link-up", At: now.Add(-2 * time.Hour)},
			},
			{
				Name: "lte", Interface: "wwan0", Kind: "ethernet", State: StateFailed, Reason: "probes failing",
				Address: netip.MustParseAddr("100.70.1.2"), Gateway: netip.MustParseAddr("100.70.1.1"),
				Table: 203, Tier: 2, Weight: 1, Loss: f64(1),
				Since: now.Add(-4 * time.Minute), Reconnects: 2,
				LastEvent: &LastEvent{Name: "reconnect", At: now.Add(-1 * time.Minute)},
			},
			{
				Name: "wlan", Interface: "wlan0", Kind: "wlan", State: StateDown, Reason: "no carrier",
				Table: 204, Tier: 3, Weight: 1, Since: now.Add(-2 * time.Minute), Reconnects: 3,
				LastEvent: &LastEvent{Name: "link-down", At: now.Add(-2 * time.Minute)},
			},
			{
				Name: "fiber", Interface: "eth2", Kind: "ethernet", State: StateUp, Reason: "up",
				Address: netip.MustParseAddr("192.0.2.50"), Gateway: netip.MustParseAddr("192.0.2.49"),
				Table: 205, Tier: 3, Weight: 1, Since: now.Add(-2 * time.Hour),
				LastEvent: &LastEvent{Name: "link-up", At: now.Add(-2 * time.Hour)},
			},
		},
		Services: []Service{
			{Name: "web", Checked: true, Backends: []ServiceBackend{
				{Address: netip.MustParseAddrPort("10.0.0.3:8080"), Healthy: true},
				{Address: netip.MustParseAddrPort("10.0.0.4:8080"), Since: now.Add(-90 * time.Second),
					LastError: "dial tcp4 10.0.0.4:8080: connect: connection refused"},
				{Address: netip.MustParseAddrPort("10.0.0.5:8080"), Healthy: true, Since: now.Add(-time.Hour),
					LastError: "no answer within 250ms"},
			}},
			{Name: "dns", Backends: []ServiceBackend{{Address: netip.MustParseAddrPort("10.0.0.5:53"), Healthy: true}}},
		},
		Publishers: []Publisher{{
			Uplink: "dsl", Name: "command-1", Kind: "command", Address: netip.MustParseAddr("203.0.113.7"),
			PublishedAt: now.Add(-89 * time.Minute), Result: "ok", Reply: "done", LastAttempt: now.Add(-89 * time.Minute),
			NextTry: now.Add(-89*time.Minute + 600*time.Hour),
		}, {
			Uplink: "lte", Name: "dyn", Kind: "dyndns2", Pending: netip.MustParseAddr("100.70.1.2"),
			Result: "retry", Reply: "911", Reason: "server error: 911",
			LastAttempt: now.Add(-1 * time.Minute), NextTry: now.Add(1 * time.Minute),
		}},
		DHCP: &DHCP{
			Mode: "embedded", Interface: "lan0", Listening: true, Binds: 1, InUse: 2, Free: 10, StaticHosts: 1, Dropped: 3,
			Leases: []DHCPLease{
				{IP: netip.MustParseAddr("10.0.0.20"), MAC: "dc:a6:32:90:31:cc", Hostname: "pi", State: "bound",
					Expires: now.Add(50 * time.Minute), Static: true},
				{IP: netip.MustParseAddr("10.0.0.100"), MAC: "02:00:00:00:01:01", State: "bound", Expires: now.Add(9*time.Minute + 49*time.Second)},
			},
		},
	}
}
