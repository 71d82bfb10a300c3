package ha

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

func uplink(name string, mode policy.HAMode, weight int) policy.Uplink {
	return policy.Uplink{Name: name, HA: policy.UplinkHA{Mode: mode, Weight: weight}}
}

func states(usable map[string]bool) []policy.UplinkState {
	var out []policy.UplinkState
	for n, u := range usable {
		out = append(out, policy.UplinkState{Name: n, Usable: u})
	}
	return out
}

func TestTrackWeight(t *testing.T) {
	cfg := &policy.Config{Uplinks: []policy.Uplink{
		uplink("a", policy.HAActive, -50),
		uplink("b", policy.HAActive, -50),
		uplink("lte", policy.HAActive, 0), // tier 2: not counted
		uplink("x", policy.HAExclusive, -100),
	}}
	tests := []struct {
		name   string
		usable map[string]bool
		role   Role
		want   int
	}{
		{"all usable", map[string]bool{"a": true, "b": true, "lte": true, "x": true}, RoleMaster, 0},
		{"one active lost", map[string]bool{"a": false, "b": true, "lte": true, "x": true}, RoleMaster, -50},
		{"both active lost", map[string]bool{"a": false, "b": false, "lte": true, "x": true}, RoleMaster, -100},
		{"uncounted lost", map[string]bool{"a": true, "b": true, "lte": false, "x": true}, RoleMaster, 0},
		{"no state is lost", map[string]bool{"b": true, "x": true}, RoleMaster, -50},
		{"exclusive lost on master", map[string]bool{"a": true, "b": true, "x": false}, RoleMaster, -100},
		{"exclusive hung up on backup counts usable", map[string]bool{"a": true, "b": true, "x": false}, RoleBackup, 0},
		{"exclusive hung up in fault counts usable", map[string]bool{"a": true, "b": true, "x": false}, RoleFault, 0},
		{"exclusive before the first role", map[string]bool{"a": true, "b": true, "x": false}, RoleUnknown, 0},
		{"everything lost", map[string]bool{}, RoleMaster, -200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TrackWeight(cfg, states(tt.usable), tt.role); got != tt.want {
				t.Errorf("TrackWeight = %d, want %d", got, tt.want)
			}
		})
	}
	heavy := &policy.Config{Uplinks: []policy.Uplink{uplink("a", policy.HAActive, -200), uplink("b", policy.HAActive, -200)}}
	if got := TrackWeight(heavy, nil, RoleMaster); got != policy.MinHAWeight {
		t.Errorf("TrackWeight(all lost, -400) = %d, want %d", got, policy.MinHAWeight)
	}
}

func TestExclusive(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		in   ExclusiveInput
		want ExclusiveDecision
	}{
		{"master dials", ExclusiveInput{Role: RoleMaster}, ExclusiveDecision{Reconnect: true}},
		{"master keeps it up", ExclusiveInput{Role: RoleMaster, Up: true}, ExclusiveDecision{Reconnect: true}},
		{"backup stops it", ExclusiveInput{Role: RoleBackup, Up: true}, ExclusiveDecision{Stop: true}},
		{"fault stops it", ExclusiveInput{Role: RoleFault, Up: true}, ExclusiveDecision{Stop: true}},
		{"unknown stops it", ExclusiveInput{Role: RoleUnknown, Up: true}, ExclusiveDecision{Stop: true}},
		{"backup, already down", ExclusiveInput{Role: RoleBackup}, ExclusiveDecision{}},
		{"backup, stop running", ExclusiveInput{Role: RoleBackup, Up: true, Stopping: true}, ExclusiveDecision{}},
		{"backup, stopped just now", ExclusiveInput{Role: RoleBackup, Up: true, LastStop: now.Add(-time.Second)}, ExclusiveDecision{}},
		{"backup again after a short master period: stop at once", ExclusiveInput{Role: RoleBackup, RoleSince: now.Add(-10 * time.Millisecond), Up: true, LastStop: now.Add(-time.Second)}, ExclusiveDecision{Stop: true}},
		{"backup, up again after restop interval", ExclusiveInput{Role: RoleBackup, Up: true, LastStop: now.Add(-RestopInterval)}, ExclusiveDecision{Stop: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Exclusive(tt.in, now); got != tt.want {
				t.Errorf("Exclusive = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestState(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := NewState(t0)
	steps := []struct {
		role    Role
		old     Role
		changed bool
		since   time.Time
	}{
		{RoleBackup, RoleUnknown, true, t0.Add(1 * time.Second)},
		{RoleBackup, RoleBackup, false, t0.Add(1 * time.Second)},
		{RoleMaster, RoleBackup, true, t0.Add(3 * time.Second)},
		{RoleFault, RoleMaster, true, t0.Add(4 * time.Second)},
	}
	for i, st := range steps {
		now := t0.Add(time.Duration(i+1) * time.Second)
		old, changed := s.Set(st.role, now)
		if old != st.old || changed != st.changed || s.Role != st.role || !s.Since.Equal(st.since) {
			t.Errorf("step %d Set(%s) = %s, %v; state %+v; want %s, %v since %v", i, st.role, old, changed, s, st.old, st.changed, st.since)
		}
	}
}

func TestParseRole(t *testing.T) {
	for in, want := range map[string]Role{"MASTER": RoleMaster, "backup": RoleBackup, "Fault": RoleFault} {
		if got, err := ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "unknown", "STOP", "master "} {
		if _, err := ParseRole(in); err == nil {
			t.Errorf("ParseRole(%q) accepted", in)
		}
	}
}

func TestTrackFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ha-track")
	tf := NewTrackFile(path)
	steps := []struct {
		v       int
		changed bool
	}{{0, true}, {0, false}, {-50, true}, {-50, false}, {0, true}}
	for i, s := range steps {
		before, _ := os.Stat(path)
		changed, err := tf.Write(s.v)
		if err != nil {
			t.Fatal(err)
		}
		if changed != s.changed {
			t.Errorf("step %d: Write(%d) changed = %v, want %v", i, s.v, changed, s.changed)
		}
		got, err := Read(path)
		if err != nil || got != s.v {
			t.Errorf("step %d: file holds %d, %v; want %d", i, got, err, s.v)
		}
		after, _ := os.Stat(path)
		// An unchanged value must not touch the file: keepalived re-reads
		// on every inotify modification.
		if !s.changed && before != nil && !os.SameFile(before, after) {
			t.Errorf("step %d: unchanged value replaced the file", i)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "0\n" {
		t.Errorf("file = %q, want \"0\\n\"", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left behind: %v", ents)
	}
	if _, err := NewTrackFile(filepath.Join(dir, "missing", "f")).Write(1); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}

// TestTrackFileRestore: another process writing the track file (as
// keepalived's init_file does when its start races uplinkd's first write) or
// removing it is seen by Watch, and Restore puts the value back.
func TestTrackFileRestore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ha-track")
	tf := NewTrackFile(path)
	if found, restored, err := tf.Restore(); restored || err != nil || found != "" {
		t.Errorf("Restore before any Write = %q, %v, %v; want nothing", found, restored, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 16)
	if err := tf.Watch(ctx, func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tf.Write(0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func() error
		found  string
	}{
		{"keepalived's init_file", func() error { return os.WriteFile(path, []byte("-254\n"), 0o644) }, "-254"},
		{"removed", func() error { return os.Remove(path) }, ""},
	} {
		if err := tc.change(); err != nil {
			t.Fatal(err)
		}
		// Events of the earlier steps (uplinkd's own writes among them) may
		// still be queued: wait until Restore has something to do.
		deadline := time.After(30 * time.Second)
		for {
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("%s: no change seen within 30s", tc.name)
			}
			if found, restored, err := tf.Restore(); err != nil {
				t.Fatal(err)
			} else if restored {
				if found != tc.found {
					t.Errorf("%s: Restore found %q, want %q", tc.name, found, tc.found)
				}
				break
			}
		}
		if v, err := Read(path); err != nil || v != 0 {
			t.Errorf("%s: file holds %d, %v after Restore; want 0", tc.name, v, err)
		}
		if _, restored, err := tf.Restore(); restored || err != nil {
			t.Errorf("%s: a second Restore wrote again (%v, %v)", tc.name, restored, err)
		}
	}
}

func TestRunStop(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "stop.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$UPLINKD_UPLINK $1\" > \""+out+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := RunStop(context.Background(), []string{script, "peer1"}, []string{"UPLINKD_UPLINK=dsl"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "dsl peer1" {
		t.Errorf("stop command saw %q", b)
	}
	if err := RunStop(context.Background(), []string{"/bin/false"}, nil, 5*time.Second); err == nil {
		t.Error("a failing stop command reported success")
	}
	start := time.Now()
	err := RunStop(context.Background(), []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, nil, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 20*time.Second { // the command would hang for 30 s
		t.Errorf("hanging stop command: err %v after %v, want a deadline exceeded", err, time.Since(start))
	}
}

func TestWithDialGrace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	x := uplink("x", policy.HAExclusive, -100)
	x.Reconnect = &policy.Reconnect{DialTimeout: 30 * time.Second}
	cfg := &policy.Config{Uplinks: []policy.Uplink{uplink("a", policy.HAActive, -50), x}}
	lostX := []policy.UplinkState{{Name: "a", Usable: true}, {Name: "x"}}
	tests := []struct {
		name   string
		state  State
		now    time.Time
		states []policy.UplinkState
		weight int
		ends   time.Time
	}{
		{"new master dialling", State{RoleMaster, t0}, t0.Add(time.Second), lostX, 0, t0.Add(30 * time.Second)},
		{"master, dial_timeout passed", State{RoleMaster, t0}, t0.Add(30 * time.Second), lostX, -100, time.Time{}},
		{"backup: no grace needed", State{RoleBackup, t0}, t0.Add(time.Second), lostX, 0, time.Time{}},
		{"active uplinks get none", State{RoleMaster, t0}, t0.Add(time.Second), []policy.UplinkState{{Name: "a"}, {Name: "x", Usable: true}}, -50, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := append([]policy.UplinkState(nil), tt.states...)
			got, ends := WithDialGrace(cfg, tt.states, tt.state, tt.now)
			if w := TrackWeight(cfg, got, tt.state.Role); w != tt.weight || !ends.Equal(tt.ends) {
				t.Errorf("weight %d, grace ends %v; want %d, %v", w, ends, tt.weight, tt.ends)
			}
			for i := range before {
				if before[i] != tt.states[i] {
					t.Errorf("input states modified: %+v", tt.states)
				}
			}
		})
	}
}
