package publish

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSecretFile bounds what ReadSecretFile reads: a password or TSIG key is
// a few hundred bytes; a path pointing at something huge is a mistake.
const maxSecretFile = 64 << 10

// MaxCAFile bounds a ca_file: a system bundle is about 200 KiB.
const MaxCAFile = 4 << 20

// ReadSecretFile reads a password or key file. The file must be a regular
// file (not a symlink, FIFO, device or directory), owned by root or by the
// daemon's user, with no group or other access bits: a secret anyone on
// the gateway can read or replace is no secret, and failing loudly makes
// the admin fix it instead of never noticing. Errors name the file and the
// problem, never its content.
func ReadSecretFile(what, path string) ([]byte, error) {
	return ReadRegularFile(what, path, maxSecretFile, true)
}

// ReadRegularFile reads path, at most limit bytes, without ever blocking
// on what the path names: it is opened with O_NONBLOCK and O_NOFOLLOW (a
// FIFO opens at once instead of waiting for a writer, which wedged the
// loop, a reload and `uplinkd check`), and the checks are made with fstat on
// the opened descriptor, so the file checked is the file read. secret adds
// the owner and mode checks.
func ReadRegularFile(what, path string, limit int64, secret bool) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: not set", what)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s %s: is a symbolic link; name the file itself", what, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if secret {
		if euid := os.Geteuid(); st.Uid != 0 && int(st.Uid) != euid {
			return nil, fmt.Errorf("%s %s: owned by uid %d; it holds a secret and must be owned by root or uid %d (chown)", what, path, st.Uid, euid)
		}
		if m := st.Mode & 0o777; m&0o077 != 0 {
			return nil, fmt.Errorf("%s %s: mode %04o gives group or others access; it holds a secret (chmod 600 %s)", what, path, m, path)
		}
	}
	if st.Size > limit {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, limit)
	}
	// The size may grow between fstat and read: the read is bounded too.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, limit)
	}
	return b, nil
}

// ReadPassword reads a password file: the first line, without its newline.
func ReadPassword(what, path string) (string, error) {
	b, err := ReadSecretFile(what, path)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s %s: empty", what, path)
	}
	return pw, nil
}
