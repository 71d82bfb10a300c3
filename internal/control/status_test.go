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
	st := sampleStatus()
	st.V = Version
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
	again, _ := json.MarshalIndent(back, "", "  ")
	if string(again) != string(got) {
		t.Errorf("round trip changed the JSON:\n%s", again)
	}
}

func TestFormatStatusGolden(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		file string
		st   Status
	}{
		{"status.txt", sampleStatus()},
		{"status_empty.txt", Status{Daemon: Daemon{Version: "0.3.0", PID: 1, Started: now.Add(-3 * 24 * time.Hour), Config: "/etc/uplinkd/uplinkd.toml", ConfigLoaded: now.Add(-42 * time.Second)}}},
		{"status_services.txt", func() Status {
			st := sampleStatus()
			st.Services = sampleServices(now)
			return st
		}()},
		{"status_ha.txt", func() Status {
			st := sampleStatus()
			st.HA = &HA{Role: RoleBackup, Since: now.Add(-5 * time.Minute)}
			return st
		}()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			golden(t, tc.file, []byte(FormatStatus(tc.st, now)))
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

func sampleServices(now time.Time) []Service {
	return []Service{
		{Name: "web", Checked: true, Backends: []ServiceBackend{
			{Address: netip.MustParseAddrPort("10.0.0.2:8080"), Healthy: true},
			{Address: netip.MustParseAddrPort("10.0.0.3:8080"), Since: now.Add(-90 * time.Second), LastError: "dial tcp4 10.0.0.3:8080: connect: connection refused"},
			{Address: netip.MustParseAddrPort("10.0.0.4:8080"), Healthy: true, Since: now.Add(-time.Hour)},
		}},
		{Name: "dns", Backends: []ServiceBackend{{Address: netip.MustParseAddrPort("10.0.0.5:53"), Healthy: true}}},
	}
}

// TestStatusServicesJSON: the services section is optional (a status
// without services marshals as before) and reads back unchanged.
func TestStatusServicesJSON(t *testing.T) {
	st := sampleStatus()
	st.V = Version
	st.Services = sampleServices(time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC))
	got, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status_services.json", append(got, '\n'))
	var back Status
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Services, st.Services) {
		t.Errorf("round trip: %+v", back.Services)
	}
}
