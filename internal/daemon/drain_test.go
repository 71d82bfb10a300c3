package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/drainstate"
	"github.com/uplinkd/uplinkd/policy"
)

// defaultVia is the devices of the default route a pass wants in uplinkd's
// default table, sorted; "" for none.
func defaultVia(res SyncResult) string {
	var devs []string
	for _, r := range res.Desired.Routes {
		if r.Table == policy.DefaultTable && r.Dst.Bits() == 0 {
			for _, nh := range r.Nexthops {
				devs = append(devs, nh.Dev)
			}
		}
	}
	slices.Sort(devs)
	return strings.Join(devs, ",")
}

func drainedNames(st control.Status) []string {
	var out []string
	for _, u := range st.Uplinks {
		if u.Drained {
			out = append(out, u.Name)
		}
	}
	return out
}

// TestLoopDrain drives drain and undrain through the daemon's control
// handler on fakes: the pass after a drain moves the default route, the
// uplink keeps its own rules, the status, the log (with the caller's uid
// and pid) and the state file say so; the last uplink is refused without
// force; a restart reads the state back.
func TestLoopDrain(t *testing.T) {
	verifyNoLeaks(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), stateDir: stateDir})
	h := ctlHandler{l.d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := control.Caller{UID: 1000, PID: 4242}

	if err := h.Drain(ctx, control.Drain{Uplink: "nope", Caller: alice}); err == nil || !strings.Contains(err.Error(), `no uplink named "nope"`) {
		t.Errorf("drain of an unknown uplink: %v", err)
	}
	if err := h.Drain(ctx, control.Drain{Uplink: "ppp0", Caller: alice}); err != nil {
		t.Fatal(err)
	}
	res := l.pass()
	if got := defaultVia(res); got != "ppp1" {
		t.Errorf("after draining ppp0 the default route is via %q, want ppp1", got)
	}
	st0 := res.Desired.Uplinks[0]
	if !st0.Drained || st0.Active || !st0.Usable {
		t.Errorf("ppp0 after the drain: %+v", st0)
	}
	// What stays: its from rule and its sticky rule (existing flows).
	for what, keep := range map[string]func(r policy.Rule) bool{
		"from rule":             func(r policy.Rule) bool { return r.Src.Addr().String() == "100.64.0.2" && r.Table == 200 },
		"sticky rule":           func(r policy.Rule) bool { return r.Mark == policy.UplinkMark(0) && r.Table == 200 },
		"[[rule]] p2p via ppp1": func(r policy.Rule) bool { return r.Mark == 1 && r.Table == 201 },
	} {
		l.k.mu.Lock()
		ok := slices.ContainsFunc(l.k.obs.Rules, func(r policy.Rule) bool { return r.Protocol == policy.Protocol && keep(r) })
		l.k.mu.Unlock()
		if !ok {
			t.Errorf("%s gone after the drain", what)
		}
	}
	st, _ := h.Status(ctx)
	if got := drainedNames(st); !slices.Equal(got, []string{"ppp0"}) || st.Uplinks[0].Default || !st.Uplinks[1].Default {
		t.Errorf("status drained %v, default %v/%v", got, st.Uplinks[0].Default, st.Uplinks[1].Default)
	}
	if st.Uplinks[0].LastEvent == nil || st.Uplinks[0].LastEvent.Name != "drain" {
		t.Errorf("ppp0's last event: %+v", st.Uplinks[0].LastEvent)
	}
	if recs := l.logs.records(map[string]any{"event": "drain", "uplink": "ppp0", "uid": float64(1000), "pid": float64(4242),
		"level": "INFO", "msg": "uplink drained: out of the default route and its balancing"}); len(recs) != 1 {
		t.Errorf("%d drain records with the caller, want 1:\n%s", len(recs), l.logs.buf.String())
	}
	set, err := drainstate.Load(drainstate.Path(stateDir))
	if err != nil || set["ppp0"].UID != 1000 || set["ppp0"].PID != 4242 || len(set) != 1 {
		t.Errorf("state file: %v, %v", set, err)
	}

	// Draining again changes nothing and brings no pass.
	if err := h.Drain(ctx, control.Drain{Uplink: "ppp0", Caller: alice}); err != nil {
		t.Errorf("second drain: %v", err)
	}

	// ppp1 is the last one: refused, with the way out in the message.
	err = h.Drain(ctx, control.Drain{Uplink: "ppp1", Caller: alice})
	if err == nil || !strings.Contains(err.Error(), "last uplink") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("draining the last uplink: %v", err)
	}
	if recs := l.logs.records(map[string]any{"event": "drain", "uplink": "ppp1", "msg": "drain refused", "uid": float64(1000)}); len(recs) != 1 {
		t.Errorf("%d refusal records, want 1", len(recs))
	}
	l.quiet()
	if err := h.Drain(ctx, control.Drain{Uplink: "ppp1", Force: true, Caller: alice}); err != nil {
		t.Fatal(err)
	}
	if got := defaultVia(l.pass()); got != "" {
		t.Errorf("with every uplink drained the default route is via %q, want none", got)
	}
	if err := h.Drain(ctx, control.Drain{Uplink: "ppp1", Undrain: true, Caller: control.Caller{UID: 0, PID: 7}}); err != nil {
		t.Fatal(err)
	}
	if got := defaultVia(l.pass()); got != "ppp1" {
		t.Errorf("after undraining ppp1 the default route is via %q", got)
	}
	if recs := l.logs.records(map[string]any{"event": "undrain", "uplink": "ppp1", "uid": float64(0), "pid": float64(7)}); len(recs) != 1 {
		t.Errorf("%d undrain records, want 1", len(recs))
	}

	// A restart reads the state back: ppp0 is still drained from the first
	// pass on.
	l.stop()
	l = startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), stateDir: stateDir})
	h = ctlHandler{l.d}
	st, _ = h.Status(ctx)
	if got := drainedNames(st); !slices.Equal(got, []string{"ppp0"}) || st.Uplinks[0].Default || st.Daemon.Error != "" {
		t.Errorf("after a restart: drained %v, ppp0 default %v, error %q", got, st.Uplinks[0].Default, st.Daemon.Error)
	}
	if err := h.Drain(ctx, control.Drain{Uplink: "ppp0", Undrain: true}); err != nil {
		t.Fatal(err)
	}
	if got := defaultVia(l.pass()); got != "ppp0,ppp1" {
		t.Errorf("after undraining ppp0 the default route is via %q", got)
	}
	if set, err := drainstate.Load(drainstate.Path(stateDir)); err != nil || len(set) != 0 {
		t.Errorf("state file after undraining all: %v, %v", set, err)
	}
}

// TestLoopDrainStateProblems: a corrupt drain file is moved aside and
// reported, names the config lacks are reported and ignored (and can be
// undrained), and a drain that cannot be saved is refused and changes
// nothing.
func TestLoopDrainStateProblems(t *testing.T) {
	verifyNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("corrupt", func(t *testing.T) {
		stateDir := t.TempDir()
		path := drainstate.Path(stateDir)
		if err := os.WriteFile(path, []byte(`{"v":1,"uplinks":[{"name":"ppp0"`), 0o644); err != nil {
			t.Fatal(err)
		}
		l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), stateDir: stateDir})
		h := ctlHandler{l.d}
		st, _ := h.Status(ctx)
		if !strings.Contains(st.Daemon.Error, "drained.json.bad") || len(drainedNames(st)) != 0 {
			t.Errorf("status after a corrupt file: error %q, drained %v", st.Daemon.Error, drainedNames(st))
		}
		if _, err := os.Stat(path + ".bad"); err != nil {
			t.Errorf("the corrupt file was not moved aside: %v", err)
		}
		if recs := l.logs.records(map[string]any{"event": "drain", "level": "ERROR", "reason": "corrupt"}); len(recs) != 1 {
			t.Errorf("%d error records for the corrupt file, want 1", len(recs))
		}
		// A drain writes a good file and clears the error.
		if err := h.Drain(ctx, control.Drain{Uplink: "ppp1"}); err != nil {
			t.Fatal(err)
		}
		l.pass()
		if st, _ := h.Status(ctx); st.Daemon.Error != "" || !slices.Equal(drainedNames(st), []string{"ppp1"}) {
			t.Errorf("after a drain: error %q, drained %v", st.Daemon.Error, drainedNames(st))
		}
	})

	t.Run("unknown names", func(t *testing.T) {
		stateDir := t.TempDir()
		if err := drainstate.Save(drainstate.Path(stateDir), drainstate.Set{"gone": {}, "ppp1": {}}); err != nil {
			t.Fatal(err)
		}
		l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), stateDir: stateDir})
		h := ctlHandler{l.d}
		st, _ := h.Status(ctx)
		if !slices.Equal(st.Daemon.DrainedUnknown, []string{"gone"}) || !slices.Equal(drainedNames(st), []string{"ppp1"}) {
			t.Errorf("status: unknown %v, drained %v", st.Daemon.DrainedUnknown, drainedNames(st))
		}
		if recs := l.logs.records(map[string]any{"event": "drain", "uplink": "gone", "level": "WARN"}); len(recs) != 1 {
			t.Errorf("%d warnings for the unknown name, want 1", len(recs))
		}
		// Only the configured name counts: ppp0 carries the default alone.
		if err := h.Drain(ctx, control.Drain{Uplink: "ppp0"}); err == nil {
			t.Error("draining the last undrained configured uplink was allowed")
		}
		if err := h.Drain(ctx, control.Drain{Uplink: "gone"}); err == nil {
			t.Error("draining a name the config lacks was allowed")
		}
		if err := h.Drain(ctx, control.Drain{Uplink: "gone", Undrain: true}); err != nil {
			t.Errorf("undraining the unknown name: %v", err)
		}
		l.pass()
		st, _ = h.Status(ctx)
		if len(st.Daemon.DrainedUnknown) != 0 {
			t.Errorf("unknown names after the undrain: %v", st.Daemon.DrainedUnknown)
		}
	})

	t.Run("cannot save", func(t *testing.T) {
		// state_dir is a file: the drain cannot be kept, so it is not made.
		stateDir := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(stateDir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), stateDir: stateDir})
		h := ctlHandler{l.d}
		if err := h.Drain(ctx, control.Drain{Uplink: "ppp0"}); err == nil || !strings.Contains(err.Error(), "drain state") {
			t.Errorf("drain without a usable state_dir: %v", err)
		}
		l.quiet()
		if st, _ := h.Status(ctx); len(drainedNames(st)) != 0 {
			t.Errorf("drained %v after a failed save", drainedNames(st))
		}
	})
}
