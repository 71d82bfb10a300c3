package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// listen creates the socket at path with its final mode and group before it
// appears under its name: it binds a temporary name in the same directory,
// sets mode and group there, then renames it into place, so there is no
// moment when the socket is reachable with the umask's mode.
//
// An existing socket at path is removed only when nothing answers on it; a
// live daemon answering there is an error, and so is anything that is not a
// socket.
func listen(path string, group int) (*net.UnixListener, os.FileInfo, error) {
	// sun_path holds 108 bytes including the NUL; the temporary name is
	// longer than path.
	if len(path)+16 > 107 {
		return nil, nil, fmt.Errorf("socket path %s: longer than a unix socket address allows", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := clearStale(path); err != nil {
		return nil, nil, err
	}

	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp) // left by an earlier process with our pid that crashed
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The file is renamed, so the listener must not unlink its old name;
	// Serve removes the socket itself.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	mode := os.FileMode(0o600)
	if group >= 0 {
		mode = 0o660
		if err := os.Lchown(tmp, -1, group); err != nil {
			return fail(fmt.Errorf("socket group %d: %w", group, err))
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("socket mode: %w", err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("socket %s: %w", path, err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, fi, nil
}

// clearStale removes a socket left by a daemon that died, and refuses to
// take over from one that is alive.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("socket %s: exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another uplinkd answers on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether a daemon answers on it: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("stale socket %s: %w", path, err)
	}
	return nil
}
