package hooks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

// The hook directory ([daemon] hook_dir, default /etc/uplinkd/hooks.d) holds
// executables that run on every event, after the uplink's own [[uplink.hook]]
// commands, one after the other in name order (byte order, like run-parts
// with LC_ALL=C), with the same UPLINKD_* environment and DefaultHookTimeout.
//
// Names follow Debian's run-parts: only [A-Za-z0-9_-]+ is run. Names with a
// dot or tilde (notify.sh, hook~, hook.dpkg-old, README.md) are skipped, so
// that editor backups and package manager leftovers never run; they are
// reported as skipped, not as errors. Directories and files without an
// execute bit are skipped too.
//
// Everything in the directory runs as root, so a file that someone other than
// root could have written is refused: it must be owned by root and not be
// group- or world-writable, and the same holds for the directory itself.
// CheckHookDir is called when the config is loaded (the error goes to the
// user) and again before each event (a file refused then is logged and not
// run; the others still run).

// hookNameRE is run-parts' default name filter.
var hookNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// HookDir is what CheckHookDir found.
type HookDir struct {
	Path    string
	Run     []string // absolute paths of the executables to run, in order
	Skipped []string // names that are not run (filtered by name or type)
}

// CheckHookDir lists the executables of the hook directory path. An empty
// path or a directory that does not exist is an empty HookDir (the default
// directory usually does not exist). The error, if any, names every refused
// file and why; refused files are not in Run, acceptable ones still are.
func CheckHookDir(path string) (HookDir, error) {
	hd := HookDir{Path: path}
	if path == "" {
		return hd, nil
	}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return hd, nil
	}
	if err != nil {
		return hd, fmt.Errorf("hook_dir: %w", err)
	}
	if !st.IsDir() {
		return hd, fmt.Errorf("hook_dir %s: not a directory", path)
	}
	if err := checkOwner(path, st); err != nil {
		// A directory others can write to makes every file in it
		// replaceable: nothing in it runs.
		return hd, err
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return hd, fmt.Errorf("hook_dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !hookNameRE.MatchString(name) {
			hd.Skipped = append(hd.Skipped, name)
			continue
		}
		p := filepath.Join(path, name)
		fi, err := os.Stat(p) // follows symlinks: the target is what runs
		if err != nil {
			errs = append(errs, fmt.Errorf("hook %s: %w", p, err))
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			hd.Skipped = append(hd.Skipped, name)
			continue
		}
		if err := checkOwner(p, fi); err != nil {
			errs = append(errs, err)
			continue
		}
		hd.Run = append(hd.Run, p)
	}
	return hd, errors.Join(errs...)
}

// checkOwner refuses what a user other than root could modify.
func checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("hook %s: cannot read owner", path)
	}
	if st.Uid != 0 {
		return fmt.Errorf("hook %s refused: owned by uid %d, not root", path, st.Uid)
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("hook %s refused: writable by group or others (mode %04o)", path, m)
	}
	return nil
}
