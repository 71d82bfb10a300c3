package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// TestLoopControlHandler drives the daemon's control.Handler on fakes, as
// any user: the status snapshot after a pass, reconnect (one attempt for a
// working link, not a backoff cycle; errors for unknown uplinks and ones
// without a command), an interface event that brings a pass, a refused
// role event.
func TestLoopControlHandler(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	attempts := filepath.Join(dir, "attempts")
	pon := script(t, dir, "pon", `echo "$UPLINKD_UPLINK $UPLINKD_ATTEMPT" >> `+attempts)
	cfg := strings.Replace(fakeConfig("", ""), "rule_priority = 300\n",
		"rule_priority = 300\n  [uplink.reconnect]\n  command = [\""+pon+"\"]\n  backoff = \"1s\"\n", 1)
	l := startLoop(t, loopOpts{config: cfg, obs: twoPPP()})
	h := ctlHandler{l.d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := h.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.V != control.Version || st.Daemon.Passes != 1 || st.Daemon.LastPass.IsZero() || st.Daemon.Config != l.cfgPath || len(st.Uplinks) != 2 {
		t.Fatalf("status: %+v", st)
	}
	for i, want := range []struct{ name, addr, peer string }{{"ppp0", "100.64.0.2", "100.64.0.1"}, {"ppp1", "100.64.1.2", "100.64.1.1"}} {
		u := st.Uplinks[i]
		if u.Name != want.name || u.State != control.StateUp || u.Address.String() != want.addr || u.Gateway.String() != want.peer ||
			!u.Default || u.Table != 200+i || u.Loss != nil || u.LastEvent == nil || u.LastEvent.Name != "link-up" {
			t.Errorf("uplink %d: %+v", i, u)
		}
	}
	if st.Publishers != nil || st.DHCP != nil {
		t.Errorf("sections without publishers or DHCP: %+v %+v", st.Publishers, st.DHCP)
	}

	for name, want := range map[string]string{"nope": `no uplink named "nope"`, "ppp0": "no [uplink.reconnect]"} {
		if err := h.Reconnect(ctx, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("reconnect %s: %v, want %q", name, err, want)
		}
	}
	if err := h.Reconnect(ctx, "ppp1"); err != nil {
		t.Fatal(err)
	}
	// The attempt's end kicks a pass, which ends the need: a later backoff
	// finds nothing to do.
	l.pass()
	if data, _ := os.ReadFile(attempts); strings.TrimSpace(string(data)) != "ppp1 1" {
		t.Fatalf("attempts %q, want one", data)
	}
	// No next attempt: either none was scheduled (the attempt's record has
	// no retry_in) or the cycle ended, which stops its timer before the
	// record is written. The clock then passes any backoff.
	var recs []map[string]any
	waitUntil(t, "the attempt's record", func() bool {
		recs = l.logs.records(map[string]any{"msg": "reconnect attempt finished", "uplink": "ppp1"})
		return len(recs) > 0
	})
	if _, retry := recs[0]["retry_in"]; retry {
		waitUntil(t, "the reconnect cycle ended", func() bool {
			return len(l.logs.records(map[string]any{"msg": "uplink back, reconnect cycle ends", "uplink": "ppp1"})) > 0
		})
	}
	l.clk.Advance(time.Minute)
	waitUntil(t, "the reconnect counted", func() bool {
		st, _ := h.Status(ctx)
		return st.Uplinks[1].Reconnects == 1 && st.Uplinks[1].LastEvent.Name == "reconnect"
	})

	if err := h.Event(ctx, control.Event{Iface: "ppp0", State: control.LinkDown}); err != nil {
		t.Fatal(err)
	}
	if s := l.pass(); s.Err != nil {
		t.Fatal(s.Err)
	}
	if st, _ := h.Status(ctx); st.Daemon.Passes != 3 {
		t.Errorf("passes %d, want 3 (start, reconnect end, event)", st.Daemon.Passes)
	}
	if err := h.Event(ctx, control.Event{Role: control.RoleBackup}); !errors.Is(err, ErrHAOff) {
		t.Errorf("role event without [ha]: %v, want %v", err, ErrHAOff)
	}
	l.quiet()

	// Reload: problems of a bad file as lines, nil error.
	l.writeConfig("[[uplink]]\nname = 7\n")
	problems, err := h.Reload(ctx)
	if err != nil || len(problems) == 0 || !strings.HasPrefix(problems[0], l.cfgPath+":") {
		t.Errorf("reload of a bad file: %q %v", problems, err)
	}
	l.stop()
}

// TestLoopReloadRefusesUnsafeHookDir: a reload whose hook_dir holds a file
// others may write is refused like a bad file; the running config stays.
func TestLoopReloadRefusesUnsafeHookDir(t *testing.T) {
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
	hooks := filepath.Join(t.TempDir(), "hooks.d")
	if err := os.Mkdir(hooks, 0o755); err != nil {
		t.Fatal(err)
	}
	script(t, hooks, "notify", "exit 0")
	if err := os.Chmod(filepath.Join(hooks, "notify"), 0o775); err != nil {
		t.Fatal(err)
	}
	l.writeConfig("[daemon]\nhook_dir = \"" + hooks + "\"\n" + strings.Replace(fakeConfig("", ""), "rule_priority = 300", "rule_priority = 310", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	problems, err := ctlHandler{l.d}.Reload(ctx)
	if err != nil || len(problems) == 0 || !strings.Contains(strings.Join(problems, "\n"), "hook_dir") {
		t.Fatalf("reload with an unsafe hook dir: %q %v", problems, err)
	}
	l.quiet()
	deleteRule(l, 300)
	if s := l.pass(); !restoresRule(s, 300) {
		t.Errorf("the old config's rule is not restored after the refused reload: %v", s.Changes)
	}
}
