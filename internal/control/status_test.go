package control

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
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
