package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

	// run must refuse with the same lines, before touching anything.
	var runOut, runErr bytes.Buffer
	if code := run([]string{"run", "--config", bad}, &runOut, &runErr); code != 1 {
		t.Fatalf("run exit %d, want 1", code)
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
