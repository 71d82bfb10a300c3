package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/ha"
)

// TestHATrackFileAndRole: one router, no keepalived. The track file follows
// the uplinks in the pass that changes their health, a value another process
// wrote is put back, role events are taken and observed, and a clean stop
// leaves the "stopped" value.
func TestHATrackFileAndRole(t *testing.T) {
	l := dualLab(t)
	track := filepath.Join(t.TempDir(), "ha-track")
	r := start(t, l, writeConfig(t, labConfig+fmt.Sprintf("\n[ha]\ntrack_file = %q\nlost_uplink_weight = -30\n", track)))
	trackIs := func(want int) func() bool {
		return func() bool { v, err := ha.Read(track); return err == nil && v == want }
	}
	r.eventually("track file 0", trackIs(0))
	// keepalived's init_file racing the first write (it found no file, then
	// opened it for writing after uplinkd's rename): the value is put back
	// without any change of health.
	if err := os.WriteFile(track, []byte("-254\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.eventually("track file 0 again after another process wrote -254", trackIs(0))
	if role, _, on := r.d.HAState(); role != "unknown" || !on {
		t.Errorf("HAState = %s, %v; want unknown, on", role, on)
	}
	var mu sync.Mutex
	var seen []string
	r.d.OnHARole(func(role string, _ time.Time) { mu.Lock(); seen = append(seen, role); mu.Unlock() })

	for _, step := range []struct {
		uplink string
		up     bool
		want   int
	}{{"ppp0", false, -30}, {"ppp1", false, -60}, {"ppp0", true, -30}, {"ppp1", true, 0}} {
		if _, err := l.SetCarrier(step.uplink, step.up); err != nil {
			t.Fatal(err)
		}
		r.eventually(fmt.Sprintf("track file %d after %s up=%v", step.want, step.uplink, step.up), trackIs(step.want))
	}

	ctx := context.Background()
	before := time.Now()
	if err := r.d.SetRole(ctx, "MASTER"); err != nil {
		t.Fatal(err)
	}
	r.eventually("role master", func() bool { role, _, _ := r.d.HAState(); return role == "master" })
	if st := r.d.HAStatus(); st == nil || st.Role != control.RoleMaster || st.Since.Before(before) {
		t.Errorf("HAStatus = %+v, want master since after %v", st, before)
	}
	if err := r.d.SetRole(ctx, "standby"); err == nil {
		t.Error("SetRole(standby) accepted")
	}
	if err := r.d.SetRole(ctx, "fault"); err != nil {
		t.Fatal(err)
	}
	r.eventually("role fault", func() bool { role, _, _ := r.d.HAState(); return role == "fault" })
	mu.Lock()
	if got := fmt.Sprint(seen); got != "[master fault]" {
		t.Errorf("observed roles %s, want [master fault]", got)
	}
	mu.Unlock()

	r.stop()
	if v, err := ha.Read(track); err != nil || v != ha.StoppedWeight {
		t.Errorf("track file after a clean stop = %d, %v; want %d", v, err, ha.StoppedWeight)
	}
}

func TestHAOffRefusesRoles(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	if err := r.d.SetRole(context.Background(), "master"); !errors.Is(err, ErrHAOff) {
		t.Errorf("SetRole with HA off = %v, want ErrHAOff", err)
	}
	if _, _, on := r.d.HAState(); on || r.d.HAStatus() != nil {
		t.Error("HAState/HAStatus say on")
	}
}

// TestHAReconnectRefused: `uplinkd reconnect` of an exclusive uplink is
// refused unless this gateway is the MASTER; other uplinks are not affected.
func TestHAReconnectRefused(t *testing.T) {
	cfgText := labConfig + `
[ha]
track_file = "/run/uplinkd/ha-track"
[[uplink]]
name = "dsl0"
kind = "ppp"
table = 202
rule_priority = 400
ha.mode = "exclusive"
reconnect.peer = "dsl"
`
	cfg, err := LoadConfig(writeConfig(t, cfgText))
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: cfg, ha: newHARuntime(cfg)}
	for _, tc := range []struct {
		role   ha.Role
		uplink string
		refuse bool
	}{
		{ha.RoleUnknown, "dsl0", true},
		{ha.RoleBackup, "dsl0", true},
		{ha.RoleFault, "dsl0", true},
		{ha.RoleMaster, "dsl0", false},
		{ha.RoleBackup, "ppp0", false},
		{ha.RoleBackup, "nosuch", false},
	} {
		d.ha.state.Role = tc.role
		if err := d.haReconnectRefused(tc.uplink); (err != nil) != tc.refuse {
			t.Errorf("%s as %s: %v, want refused %v", tc.uplink, tc.role, err, tc.refuse)
		}
	}
}
