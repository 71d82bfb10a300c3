package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// The guard proves the suite left the host's network namespace alone (the
// VM has no network device to the host at all).
func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

// vmTimeout bounds one VM run, boot to power-off; the scenarios' own
// timeouts (run.sh) are shorter, so a hang still leaves results behind.
const vmTimeout = 14 * time.Minute

// TestVM builds (or takes from the cache) the Debian image, installs the
// project's .deb in a VM with systemd, real pppd + rp-pppoe, hostapd and
// wpa_supplicant, runs the scenarios in scenarios/ and reports their
// checks and timings.
func TestVM(t *testing.T) {
	if testing.Short() {
		t.Skip("VM acceptance suite: not with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("VM acceptance suite: needs root (debootstrap, image cache in " + CacheRoot + ")")
	}
	for _, tool := range []string{"qemu-system-x86_64", "debootstrap", "mkfs.ext4", "debugfs", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("VM acceptance suite: %s not installed (scripts/deps.sh installs it)", tool)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	suiteStart := time.Now()

	mirror, err := DebianMirror()
	if err != nil {
		t.Fatal(err)
	}
	img, err := EnsureImage(filepath.Join(root, "internal/vmtest/image"), mirror, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if img.Built {
		t.Logf("TIMING image_build=%d_ms", img.Elapsed.Milliseconds())
	} else {
		t.Logf("image: cached %s", img.Dir)
	}

	deb, err := BuildDeb(root, work, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	scenarios, err := filepath.Glob(filepath.Join(root, "internal/vmtest/scenarios/*.sh"))
	if err != nil || len(scenarios) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	if only := os.Getenv("UPLINKD_VM_ONLY"); only != "" {
		// For chasing one scenario: a run of only the named ones
		// (comma-separated, without .sh).
		names := strings.Split(only, ",")
		scenarios = slices.DeleteFunc(scenarios, func(sc string) bool {
			return !slices.Contains(names, strings.TrimSuffix(filepath.Base(sc), ".sh"))
		})
		if len(scenarios) == 0 {
			t.Fatalf("UPLINKD_VM_ONLY=%s names no scenario", only)
		}
	}
	data := filepath.Join(work, "data")
	if err := stageData(data, root, deb, scenarios); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(work, "data.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "vmtest", "-d", data, disk, "128M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 data disk: %v\n%s", err, out)
	}

	console := filepath.Join(work, "console.log")
	boot := &Boot{Image: img, DataDisk: disk, Console: console, Timeout: vmTimeout, Logf: t.Logf}
	res, bootErr := boot.Run(context.Background())
	t.Logf("vm: accel %s, boot to power-off %d ms", res.Accel, res.Elapsed.Milliseconds())

	results := filepath.Join(work, "results")
	if out, err := exec.Command("debugfs", "-R", "rdump /results "+work, disk).CombinedOutput(); err != nil {
		t.Logf("debugfs rdump: %v\n%s", err, out)
	}
	var failed []string
	if bootErr != nil || !exists(filepath.Join(results, "done")) {
		failed = append(failed, fmt.Sprintf("the VM run did not complete: %v", bootErr))
		t.Errorf("the VM run did not complete: %v\nconsole tail:\n%s\nrunner log:\n%s",
			bootErr, tail(console, 80), tail(filepath.Join(results, "run.log"), 80))
	}
	if keep := os.Getenv("UPLINKD_VM_RESULTS"); keep != "" {
		// For a look at the full logs of a run that passed.
		out, err := exec.Command("cp", "-r", results, console, keep).CombinedOutput()
		t.Logf("results kept in %s: %v %s", keep, err, out)
	}
	if b, err := os.ReadFile(filepath.Join(results, "boot.log")); err == nil {
		t.Logf("vm: %s", strings.TrimSpace(string(b)))
	}

	for _, sc := range scenarios {
		name := strings.TrimSuffix(filepath.Base(sc), ".sh")
		t.Run(name, func(t *testing.T) { failed = append(failed, checkScenario(t, results, name)...) })
	}
	t.Logf("TIMING suite_total=%d_ms", time.Since(suiteStart).Milliseconds())
	// Last, so that the tail of a CI log (all some CI views keep) still
	// names what failed; the scenarios' logs above have the whole story.
	for i, f := range failed {
		if i == maxFailSummary {
			t.Logf("failed: %d more", len(failed)-i)
			break
		}
		t.Logf("failed: %s", clip(f, maxFailBytes))
	}
}

// maxFailSummary bounds the failures repeated at the end of the run, and
// maxFailBytes each of them: room for a check's own account of what it saw
// (the ipv6 scenario's missing delegation names the gateway's and the ISP's
// side of DHCPv6 in about 500 bytes).
const (
	maxFailSummary = 6
	maxFailBytes   = 800
)

// clip shortens s to at most n bytes (whole UTF-8 characters), marking
// the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer line", 8, "a longer…"},
		{"ppp0 → ppp1", 6, "ppp0 …"}, // the arrow is 3 bytes from index 5: not cut inside it
		{"ppp0 → ppp1", 8, "ppp0 →…"},
	} {
		if got := clip(tc.in, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// checkScenario reads one scenario's log: TIMING lines are reported, FAIL
// lines fail the test with the whole log (which carries the journal tail
// and kernel state the scenario dumped), XFAIL/SKIP/TARGET lines are
// reported. It returns what failed, a line each, named by the scenario.
func checkScenario(t *testing.T, results, name string) (failed []string) {
	logPath := filepath.Join(results, name+".log")
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("no results from scenario %s: %v", name, err)
		return []string{name + ": no results"}
	}
	var passes, fails int
	var timings []string
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "TIMING "):
			timings = append(timings, strings.TrimPrefix(line, "TIMING "))
		case strings.HasPrefix(line, "PASS "):
			passes++
			t.Log(line)
		case strings.HasPrefix(line, "FAIL "):
			fails++
			failed = append(failed, name+": "+line)
			t.Log(line)
		case strings.Contains(line, ": command not found"), strings.Contains(line, ": syntax error"),
			strings.Contains(line, ": unbound variable"):
			// A broken scenario script proves nothing, whatever it printed.
			fails++
			failed = append(failed, name+": FAIL scenario script: "+line)
			t.Log("FAIL scenario script: " + line)
		case strings.HasPrefix(line, "XFAIL "), strings.HasPrefix(line, "SKIP "), strings.HasPrefix(line, "TARGET "):
			t.Log(line)
		}
	}
	sort.Strings(timings)
	for _, tm := range timings {
		t.Logf("TIMING %s.%s", name, tm)
	}
	rc := strings.TrimSpace(readString(filepath.Join(results, name+".rc")))
	switch {
	case fails > 0:
		t.Errorf("%d check(s) failed in scenario %s; its log:\n%s", fails, name, data)
	case rc != "0":
		t.Errorf("scenario %s exited with %q (no FAIL line); its log:\n%s", name, rc, data)
		failed = append(failed, fmt.Sprintf("%s: exited with %q", name, rc))
	case passes == 0:
		t.Errorf("scenario %s passed no check; its log:\n%s", name, data)
		failed = append(failed, name+": passed no check")
	}
	return failed
}

// stageData lays out the data disk: run.sh, lib.sh, the scenarios, the
// .deb and the repository files the scenarios use (configs, seed peers).
func stageData(dir, root, deb string, scenarios []string) error {
	copies := map[string]string{
		filepath.Join(root, "internal/vmtest/guest/run.sh"): "run.sh",
		filepath.Join(root, "internal/vmtest/guest/lib.sh"): "lib.sh",
		deb: "uplinkd.deb",
	}
	for _, sc := range scenarios {
		copies[sc] = filepath.Join("scenarios", filepath.Base(sc))
	}
	guestFiles, _ := filepath.Glob(filepath.Join(root, "internal/vmtest/guest/files/*"))
	for _, f := range guestFiles {
		copies[f] = filepath.Join("files", filepath.Base(f))
	}
	for src, dst := range copies {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("vmtest: staging: %w", err)
		}
		dst = filepath.Join(dir, dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("vmtest: staging: %w", err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return fmt.Errorf("vmtest: staging: %w", err)
		}
	}
	return os.MkdirAll(filepath.Join(dir, "results"), 0o755)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func readString(p string) string { b, _ := os.ReadFile(p); return string(b) }

// tail returns the last n lines of a file.
func tail(p string, n int) string {
	lines := strings.Split(strings.TrimRight(readString(p), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
