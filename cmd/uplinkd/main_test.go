package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestCheckAndRunRejectBadConfigAlike(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	text := "[[uplink]]\nname = \"ppp0\"\nTable = 200\nrule_priority = 200\n\n[[rule]]\nname = \"x\"\nuplink = \"ppp9\"\nmark = 1\npriority = 100\n"
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var checkOut, checkErr bytes.Buffer
	if code := run([]string{"check", "--config", bad}, &checkOut, &checkErr); code != 1 {
		t.Fatalf("check exit %d, want 1; stderr:\n%s", code, checkErr.String())
	}
	lines := strings.Split(strings.TrimSpace(checkErr.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want one line per problem, got:\n%s", checkErr.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, bad+":") {
			t.Errorf("line %q does not start with %s:LINE:COL:", l, bad)
		}
	}
	if !strings.Contains(checkErr.String(), bad+":3:1:") {
		t.Errorf("wrong-case key not reported at 3:1:\n%s", checkErr.String())
	}

	// run must refuse with the same lines, before touching anything, and
	// with EX_CONFIG so that systemd does not restart it.
	var runOut, runErr bytes.Buffer
	if code := run([]string{"run", "--config", bad}, &runOut, &runErr); code != exitConfig {
		t.Fatalf("run exit %d, want %d", code, exitConfig)
	}
	if runErr.String() != checkErr.String() {
		t.Errorf("run and check differ:\n--- check\n%s--- run\n%s", checkErr.String(), runErr.String())
	}
}

func TestCheckAcceptsContribConfigs(t *testing.T) {
	files, err := filepath.Glob("../../contrib/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no contrib configs: %v", err)
	}
	for _, f := range files {
		var out, errb bytes.Buffer
		if code := run([]string{"check", "--config", f}, &out, &errb); code != 0 {
			t.Errorf("%s: exit %d\n%s", f, code, errb.String())
		}
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage:") {
		t.Errorf("no args: exit %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "uplinkd.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodConfig = "[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = 200\n"

func TestCommandLine(t *testing.T) {
	good := writeConfig(t, goodConfig)
	empty := writeConfig(t, "")
	noUplinksOK := writeConfig(t, "[daemon]\nallow_no_uplinks = true\n")
	bad := writeConfig(t, goodConfig+"[[rule]]\nname = \"x\"\nuid = 1\nuplink = \"ppp0\"\nmark = 65536\npriority = 100\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // substring
		stderr   string // substring
		noStderr bool
	}{
		{"positional path", []string{"check", good}, 0, good + ": ok (1 uplinks, 0 rules)", "", true},
		{"--config path", []string{"check", "--config", good}, 0, good + ": ok", "", true},
		{"both agree", []string{"check", "--config", good, good}, 0, good + ": ok", "", true},
		{"both differ", []string{"check", "--config", good, empty}, exitUsage, "", "two config files given", false},
		{"two paths", []string{"check", good, empty}, exitUsage, "", "one config file at most", false},
		{"flag after path", []string{"check", good, "--strict"}, 0, good + ": ok", "", true},
		{"no uplinks: run refuses, so check does", []string{"check", empty}, exitFailure, "", empty + ":1:1: no [[uplink]]: `uplinkd run` refuses to start until one is configured (or set [daemon] allow_no_uplinks = true)\n", false},
		{"no uplinks allowed", []string{"check", noUplinksOK}, 0, noUplinksOK + ": ok (0 uplinks", "", true},
		{"--strict on a clean file", []string{"check", "--strict", good}, 0, ": ok", "", true},
		{"error", []string{"check", bad}, exitFailure, "", bad + ":9:8: mark must be 1..65535", false},
		{"plan on a bad file", []string{"plan", bad}, exitFailure, "", bad + ":9:8:", false},
		{"run on a bad file", []string{"run", bad}, exitConfig, "", bad + ":9:8:", false},
		{"run without uplinks", []string{"run", empty}, exitConfig, "", "no [[uplink]]: `uplinkd run` refuses to start", false},
		{"run on a missing file", []string{"run", empty + ".missing"}, exitConfig, "", "no such file", false},
		{"bad log format", []string{"check", "--log-format", "bogus", good}, exitUsage, "", `--log-format must be one of auto, text, json, journal (got "bogus")`, false},
		{"--strict is check's", []string{"plan", "--strict", good}, exitUsage, "", "uplinkd plan: flag provided but not defined: -strict (see uplinkd help plan)\n", false},
		{"help", []string{"help"}, 0, "usage: uplinkd COMMAND", "", true},
		{"--help", []string{"--help"}, 0, "usage: uplinkd COMMAND", "", true},
		{"help run", []string{"help", "run"}, 0, "usage: uplinkd run [--flush-on-exit]", "", true},
		{"run --help", []string{"run", "--help"}, 0, "usage: uplinkd run [--flush-on-exit]", "", true},
		{"check -h", []string{"check", "-h"}, 0, "usage: uplinkd check [--strict | --condition]", "", true},
		{"plan --help after a path", []string{"plan", good, "--help"}, 0, "usage: uplinkd plan", "", true},
		{"status --help", []string{"status", "--help"}, 0, "usage: uplinkd status [--json] [--config PATH] [--socket PATH]", "", true},
		{"event --help", []string{"event", "--help"}, 0, "uplinkd event --role master|backup|fault", "", true},
		{"help event", []string{"help", "event"}, 0, "a role event exits 3", "", true},
		{"help of an unknown command", []string{"help", "frob"}, exitUsage, "", "uplinkd help: unknown command \"frob\"", false},
		{"version", []string{"version"}, 0, "uplinkd dev (go", "", true},
		{"--version", []string{"--version"}, 0, "uplinkd dev (go", "", true},
		{"version --help", []string{"version", "--help"}, 0, "usage: uplinkd version", "", true},
		{"version with an argument", []string{"version", "x"}, exitUsage, "", "uplinkd version: unexpected argument \"x\"", false},
		{"unknown flag", []string{"check", "--frob", good}, exitUsage, "", "uplinkd check: flag provided but not defined: -frob (see uplinkd help check)\n", false},
		{"unknown command", []string{"frob"}, exitUsage, "", "uplinkd: unknown command \"frob\"; commands: run, check", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout %q, want %q in it", out.String(), tt.stdout)
			}
			if !strings.Contains(errb.String(), tt.stderr) || (tt.noStderr && errb.Len() > 0) {
				t.Errorf("stderr %q, want %q in it", errb.String(), tt.stderr)
			}
		})
	}
}

func TestLogFormatJournalNeedsJournald(t *testing.T) {
	if journal.Enabled() {
		t.Skip("journald is running here")
	}
	var out, errb bytes.Buffer
	good := writeConfig(t, goodConfig)
	if code := run([]string{"check", "--log-format", "journal", good}, &out, &errb); code != exitUsage ||
		!strings.Contains(errb.String(), "journald is not available") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestRunNeedsNetAdmin(t *testing.T) {
	if os.Getuid() == 0 {
		// Drop CAP_NET_ADMIN in a child, which is what an unprivileged
		// user has: run the test binary again as nobody.
		if os.Getenv("UPLINKD_TEST_AS_NOBODY") != "" {
			t.Fatal("still root")
		}
		// The test binary lives in a directory only root may enter.
		dir, err := os.MkdirTemp("", "uplinkd-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "uplinkd.test")
		if err := os.WriteFile(bin, self, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run", "^TestRunNeedsNetAdmin$", "-test.count=1", "-test.v")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "UPLINKD_TEST_AS_NOBODY=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestRunNeedsNetAdmin") {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
		return
	}
	if err := needNetAdmin(); err == nil {
		t.Skip("this user has CAP_NET_ADMIN")
	}
	good := writeConfig(t, goodConfig)
	var out, errb bytes.Buffer
	if code := run([]string{"run", good}, &out, &errb); code != exitFailure ||
		!strings.Contains(errb.String(), "uplinkd run needs root (CAP_NET_ADMIN)") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

// TestCheckAndRunRefuseUnsafeHookDir: a hook directory file others could
// write (it would run as root) is a config error for check (exit 1) and
// for run (EX_CONFIG), reported the same way, before anything starts.
func TestCheckAndRunRefuseUnsafeHookDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("hook files must be owned by root; needs root to create them")
	}
	dir := t.TempDir()
	hooks := filepath.Join(dir, "hooks.d")
	if err := os.Mkdir(hooks, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hooks, "notify"), []byte("#!/bin/sh\n"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(hooks, "notify"), 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "uplinkd.toml")
	text := "[daemon]\nhook_dir = \"" + hooks + "\"\ncontrol_socket = \"" + filepath.Join(dir, "c.sock") + "\"\n\n[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = 200\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var checkOut, checkErr bytes.Buffer
	if code := run([]string{"check", cfg}, &checkOut, &checkErr); code != 1 {
		t.Fatalf("check exit %d, want 1; stderr:\n%s", code, checkErr.String())
	}
	if !strings.Contains(checkErr.String(), "hook_dir") || !strings.Contains(checkErr.String(), "notify") {
		t.Errorf("check does not name the refused file:\n%s", checkErr.String())
	}
	var runOut, runErr bytes.Buffer
	if code := run([]string{"run", cfg}, &runOut, &runErr); code != exitConfig {
		t.Fatalf("run exit %d, want %d; stderr:\n%s", code, exitConfig, runErr.String())
	}
	if runErr.String() != checkErr.String() {
		t.Errorf("run and check differ:\n--- check\n%s--- run\n%s", checkErr.String(), runErr.String())
	}
}
