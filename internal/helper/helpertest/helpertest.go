// Package helpertest builds uplinkd and uplinkd-helper for tests: the
// helper beside a built uplinkd (GoBuild, BuildHelper), or on first use
// for the in-process daemon's publishers and http probes (HelperMain).
// Only tests import it.
package helpertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/uplinkd/uplinkd/internal/helper"
)

// GoBuild builds package pkg (an import path) into out with go build
// flags and the environment plus env.
func GoBuild(out, pkg string, env []string, flags ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// BuildHelper builds uplinkd-helper into dir (GoBuild) and returns its
// path. Build it beside a built uplinkd, where the daemon looks for it
// (helper.Locate).
func BuildHelper(dir string, env []string, flags ...string) (string, error) {
	path := filepath.Join(dir, helper.Name)
	return path, GoBuild(path, "github.com/uplinkd/uplinkd/cmd/uplinkd-helper", env, flags...)
}

// HelperMain is TestMain's body for a package whose tests run the daemon's
// publishers or http probes in-process: it points helper.Override at an
// uplinkd-helper built on first use (so that a run whose tests all skip,
// cross-test's as nobody included, builds nothing), runs run (m.Run or
// lab.GuardMain), removes the build and returns the exit code.
func HelperMain(run func() int) int {
	var dir string
	helper.Override = sync.OnceValues(func() (string, error) {
		var err error
		if dir, err = os.MkdirTemp("", "uplinkd-helper-"); err != nil {
			return "", err
		}
		return BuildHelper(dir, nil)
	})
	defer func() {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}()
	return run()
}
