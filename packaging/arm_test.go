package packaging_test

import (
	"debug/buildinfo"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebRaspberryPi builds the packages for the Raspberry Pi (make deb
// GOARCH=arm64 and GOARCH=arm) and checks what dpkg on Raspberry Pi OS
// would: the architecture name (armhf, not Go's arm), a binary for the
// right CPU (ARMv6 hard-float for armhf: GOARM=6 runs on every Pi), lintian,
// and the packaged binary itself run under qemu-user on its config.
func TestDebRaspberryPi(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two .debs; skipped with -short")
	}
	root := repoRoot(t)
	for _, tc := range []struct {
		goarch, debarch, goarm, qemu string
	}{
		{"arm64", "arm64", "", "qemu-aarch64"},
		{"arm", "armhf", "6", "qemu-arm"},
	} {
		t.Run(tc.debarch, func(t *testing.T) {
			build := t.TempDir()
			runOK(t, "make", "-s", "-C", root, "deb", "GOARCH="+tc.goarch, "BUILDDIR="+build, "VERSION="+testVersion)
			deb := filepath.Join(build, "uplinkd_"+testVersion+"_"+tc.debarch+".deb")
			if got := strings.TrimSpace(runOK(t, "dpkg-deb", "-f", deb, "Architecture")); got != tc.debarch {
				t.Errorf("Architecture: %s, want %s", got, tc.debarch)
			}
			x := t.TempDir()
			runOK(t, "dpkg-deb", "-x", deb, x)
			bin := filepath.Join(x, "usr/sbin/uplinkd")
			info, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["GOARCH"] != tc.goarch || settings["GOARM"] != tc.goarm || settings["CGO_ENABLED"] != "0" {
				t.Errorf("binary built with GOARCH=%q GOARM=%q CGO_ENABLED=%q, want %q %q 0",
					settings["GOARCH"], settings["GOARM"], settings["CGO_ENABLED"], tc.goarch, tc.goarm)
			}

			t.Run("lintian", func(t *testing.T) { lintianClean(t, deb) })

			if _, err := exec.LookPath(tc.qemu); err != nil {
				t.Fatalf("%s missing (scripts/deps.sh installs qemu-user): %v", tc.qemu, err)
			}
			// The packaged config: valid, no uplink, so check warns and
			// run refuses it with EX_CONFIG before touching anything.
			conf := filepath.Join(x, "etc/uplinkd/uplinkd.toml")
			out, err := exec.Command(tc.qemu, bin, "check", "--config", conf).CombinedOutput()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("%s uplinkd check: %v\n%s", tc.qemu, err, out)
			}
			if !strings.Contains(string(out), "no [[uplink]]") {
				t.Errorf("%s uplinkd check on the packaged config: %v\n%s", tc.qemu, err, out)
			}
			out, err = exec.Command(tc.qemu, bin, "run", "--config", conf, "--log-format", "text").CombinedOutput()
			if !errors.As(err, &exit) || exit.ExitCode() != 78 {
				t.Errorf("%s uplinkd run on the packaged config: %v, want exit 78\n%s", tc.qemu, err, out)
			}
		})
	}
}
