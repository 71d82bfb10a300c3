package vmtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildDeb builds the project's .deb with `make deb` (the package a user
// installs) into work, so that concurrent test packages building their own
// never share an output directory, and returns its path.
func BuildDeb(root, work string, logf func(string, ...any)) (string, error) {
	build := filepath.Join(work, "deb")
	out, err := exec.Command("make", "-s", "-C", root, "deb", "BUILDDIR="+build).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("vmtest: make deb: %w\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(build, "uplinkd_*_amd64.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("vmtest: make deb made %q, want one uplinkd_*_amd64.deb", debs)
	}
	logf("package: %s (make deb)", filepath.Base(debs[0]))
	return debs[0], nil
}
