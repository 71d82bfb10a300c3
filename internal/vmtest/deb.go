package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BuildDeb returns the path of the project's .deb, built from the
// repository at root: `make deb` when the Makefile has that target, else
// the fallback below.
func BuildDeb(root, work string, logf func(string, ...any)) (string, error) {
	if exec.Command("make", "-C", root, "-n", "deb").Run() == nil {
		out, err := exec.Command("make", "-C", root, "deb").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("vmtest: make deb: %w\n%s", err, out)
		}
		// bin/ may hold packages of earlier versions: the newest is ours.
		debs, _ := filepath.Glob(filepath.Join(root, "bin", "uplinkd_*_amd64.deb"))
		newest, newestTime := "", time.Time{}
		for _, d := range debs {
			if st, err := os.Stat(d); err == nil && st.ModTime().After(newestTime) {
				newest, newestTime = d, st.ModTime()
			}
		}
		if newest == "" {
			return "", fmt.Errorf("vmtest: make deb left no bin/uplinkd_*_amd64.deb")
		}
		logf("package: %s (make deb)", filepath.Base(newest))
		return newest, nil
	}
	logf("package: FALLBACK minimal .deb built by the harness (no `make deb` target in this tree)")
	return fallbackDeb(root, work)
}

// fallbackDeb builds a minimal .deb with dpkg-deb: the binary, the systemd
// unit and the iproute2 protocol name, nothing else.
//
// FALLBACK: delete this function (and its call in BuildDeb) once `make deb`
// exists; it only stands in so the VM suite can run before packaging lands,
// and it installs fewer files than the real package (no default config, no
// ppp/ifupdown scripts).
func fallbackDeb(root, work string) (string, error) {
	pkg := filepath.Join(work, "debroot")
	if err := os.RemoveAll(pkg); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	bin := filepath.Join(pkg, "usr", "sbin", "uplinkd")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/uplinkd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vmtest: go build: %w\n%s", err, out)
	}
	files := map[string]string{
		"packaging/systemd/uplinkd.service": "lib/systemd/system/uplinkd.service",
		"packaging/iproute2/uplinkd.conf":   "etc/iproute2/rt_protos.d/uplinkd.conf",
	}
	for src, dst := range files {
		data, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			return "", fmt.Errorf("vmtest: %w", err)
		}
		dst = filepath.Join(pkg, dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", fmt.Errorf("vmtest: %w", err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return "", fmt.Errorf("vmtest: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(pkg, "etc", "uplinkd"), 0o755); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	control := strings.Join([]string{
		"Package: uplinkd",
		"Version: 0.0.0~vmtest",
		"Architecture: amd64",
		"Maintainer: uplinkd developers <uplinkd@localhost>",
		"Depends: iproute2",
		"Description: keeps the uplinks of a Linux gateway working (vmtest fallback package)",
		"",
	}, "\n")
	if err := os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	deb := filepath.Join(work, "uplinkd_0.0.0~vmtest_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
		return "", fmt.Errorf("vmtest: dpkg-deb: %w\n%s", err, out)
	}
	return deb, nil
}
