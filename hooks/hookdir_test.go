package hooks

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (file ownership)")
	}
}

func TestCheckHookDir(t *testing.T) {
	requireRoot(t)
	type file struct {
		name  string
		mode  os.FileMode
		owner int // -1: root
		dir   bool
	}
	tests := []struct {
		name     string
		files    []file
		dirMode  os.FileMode
		wantRun  []string
		wantSkip []string
		wantErr  []string // substrings
	}{
		{"name order, run-parts names", []file{{"20-b", 0o755, -1, false}, {"10_a", 0o700, -1, false}, {"C", 0o755, -1, false}},
			0o755, []string{"10_a", "20-b", "C"}, nil, nil},
		{"dots, tilde, not executable, directories skipped", []file{{"a.sh", 0o755, -1, false}, {"b~", 0o755, -1, false},
			{"c.dpkg-old", 0o755, -1, false}, {"d", 0o644, -1, false}, {"e", 0o755, -1, true}, {"f", 0o755, -1, false}},
			0o755, []string{"f"}, []string{"a.sh", "b~", "c.dpkg-old", "d", "e"}, nil},
		{"not root-owned refused, others still run", []file{{"a", 0o755, 65534, false}, {"b", 0o755, -1, false}},
			0o755, []string{"b"}, nil, []string{"/a refused: owned by uid 65534, not root"}},
		{"group or world writable refused", []file{{"a", 0o775, -1, false}, {"b", 0o757, -1, false}, {"c", 0o755, -1, false}},
			0o755, []string{"c"}, nil, []string{"/a refused: writable by group or others (mode 0775)", "/b refused: writable by group or others (mode 0757)"}},
		{"world-writable directory refuses everything", []file{{"a", 0o755, -1, false}},
			0o777, nil, nil, []string{"refused: writable by group or others (mode 0777)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hooks.d")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				p := filepath.Join(dir, f.name)
				if f.dir {
					os.Mkdir(p, f.mode)
					continue
				}
				if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				os.Chmod(p, f.mode) // not subject to umask
				if f.owner >= 0 {
					os.Chown(p, f.owner, f.owner)
				}
			}
			os.Chmod(dir, tt.dirMode)
			hd, err := CheckHookDir(dir)
			var run []string
			for _, p := range hd.Run {
				run = append(run, strings.TrimPrefix(p, dir+"/"))
			}
			if !slices.Equal(run, tt.wantRun) || !slices.Equal(hd.Skipped, tt.wantSkip) {
				t.Fatalf("run %q skipped %q, want %q %q", run, hd.Skipped, tt.wantRun, tt.wantSkip)
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v does not say %q", err, w)
				}
			}
		})
	}
	t.Run("missing or unset", func(t *testing.T) {
		for _, p := range []string{"", filepath.Join(t.TempDir(), "nope")} {
			if hd, err := CheckHookDir(p); err != nil || len(hd.Run) != 0 {
				t.Fatalf("%q: %v %v", p, hd, err)
			}
		}
	})
}

// TestHookDirRunsAfterConfigHooks: the hook directory runs on every event,
// after the matching [[uplink.hook]] commands, in name order; a file that
// becomes unsafe after load is refused at run time and logged.
func TestHookDirRunsAfterConfigHooks(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	trace := filepath.Join(tmp, "trace")
	dir := filepath.Join(tmp, "hooks.d")
	os.Mkdir(dir, 0o755)
	for _, n := range []string{"20-second", "10-first", "30-unsafe"} {
		testutil.Script(t, dir, n, `echo "`+n+` $UPLINKD_EVENT $UPLINKD_RESULT $UPLINKD_PUBLISHER." >> `+trace)
	}
	testutil.Script(t, dir, "15-skipped.sh", `echo skipped >> `+trace)
	cfg := testutil.Script(t, tmp, "cfg", `echo "cfg $UPLINKD_EVENT" >> `+trace)
	if _, err := CheckHookDir(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "30-unsafe"), 0o777)

	log, logs := testutil.NewCapture()
	r := NewRunner(log)
	r.SetHookDir(dir)
	hooks := []HookSpec{{On: []string{"publish"}, Command: []string{cfg}}}
	r.Fire(hooks, HookEvent{Event: "publish", Uplink: "u", NewIP: "192.0.2.7", Result: "ok", Publisher: "dyn"})
	r.Fire(hooks, HookEvent{Event: "reconnect", Uplink: "u", Result: "timeout"})
	testutil.WaitFor(t, "both events", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 5 })
	r.Close()
	want := []string{"cfg publish", "10-first publish ok dyn.", "20-second publish ok dyn.", "10-first reconnect timeout .", "20-second reconnect timeout ."}
	if got := testutil.Lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if recs := logs.Find(t, "hook directory: files refused", map[string]any{"level": "ERROR", "uplink": "u"}); len(recs) != 2 ||
		!strings.Contains(recs[0]["reason"].(string), "30-unsafe refused: writable by group or others") {
		t.Fatalf("refusal not logged: %v", logs.Records(t))
	}
}
