package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// replaceLikeAnEditor writes text to a temporary file in the config's
// directory and renames it over the config, as vim, sed -i and config
// managers do.
func replaceLikeAnEditor(t *testing.T, path, text string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".uplinkd.toml.swp")
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestLoopConfigWatch: with WatchConfig the loop reloads a config replaced
// by rename exactly once (the burst of events is debounced) and applies
// only the difference; a broken file keeps the old config and touches
// nothing; a deleted file is ignored. Reloads are framed by RELOADING=1
// (with MONOTONIC_USEC) and READY=1 for systemd.
func TestLoopConfigWatch(t *testing.T) {
	verifyNoLeaks(t)
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), watch: true})
	reloaded := func() int { return len(l.logs.records(map[string]any{"msg": "config reloaded"})) }

	replaceLikeAnEditor(t, l.cfgPath, strings.Replace(fakeConfig("", ""), "rule_priority = 300", "rule_priority = 310", 1))
	s := l.pass()
	var added, deleted bool
	for _, c := range s.Changes {
		added = added || (c.Op == policy.OpAddRule && c.Rule.Priority == 310)
		deleted = deleted || (c.Op == policy.OpDelRule && c.Rule.Priority == 300)
	}
	if !added || !deleted || len(s.Changes) != 2 {
		t.Errorf("reload pass: %v, want the ppp1 rule moved from 300 to 310 and nothing else", s.Changes)
	}
	l.quiet()
	waitUntil(t, "READY=1 after the reload", func() bool { return l.countNotices("READY=1") == 2 })
	l.mu.Lock()
	var reloading []string
	for _, n := range l.notices {
		if strings.HasPrefix(n, "RELOADING=1") {
			reloading = append(reloading, n)
		}
	}
	l.mu.Unlock()
	if len(reloading) != 1 || !strings.Contains(reloading[0], "\nMONOTONIC_USEC=") {
		t.Errorf("RELOADING notices: %q", reloading)
	}

	// A broken file: logged, the old config stays, no pass.
	replaceLikeAnEditor(t, l.cfgPath, "[[uplink]]\nname = 7\n")
	waitUntil(t, "the failed reload logged", func() bool {
		return len(l.logs.records(map[string]any{"msg": "config reload failed; keeping the running config"})) == 1
	})
	// The watcher has handled the next save: a second reload of the first
	// one would have come before.
	if n := reloaded(); n != 1 {
		t.Errorf("%d reloads for one save, want 1", n)
	}
	l.quiet()
	deleteRule(l, 310)
	if s := l.pass(); !restoresRule(s, 310) {
		t.Errorf("after a broken file the old config's rule is not restored: %v", s.Changes)
	}

	// A deleted file is not a config.
	if err := os.Remove(l.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the removal logged", func() bool {
		return len(l.logs.records(map[string]any{"msg": "config file removed; keeping the running config"})) == 1
	})
	l.quiet()
	if n := reloaded(); n != 1 {
		t.Errorf("%d reloads, want still 1", n)
	}
	l.stop()
	if n := l.countNotices("STOPPING=1"); n != 1 {
		t.Errorf("%d STOPPING=1 notices on stop, want 1", n)
	}
}
