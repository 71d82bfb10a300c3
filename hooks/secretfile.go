package hooks

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxSecretFile bounds what readSecretFile reads: a password or TSIG key is
// a few hundred bytes; a path pointing at something huge is a mistake.
const maxSecretFile = 64 << 10

// readSecretFile reads a password or key file. It refuses a file whose mode
// lets group or others read or write it: a secret anyone on the gateway can
// read is no secret, and failing loudly makes the admin fix the mode instead
// of never noticing. Errors name the file and the problem, never its content.
func readSecretFile(what, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: not set", what)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s %s: mode %04o gives group or others access; it holds a secret (chmod 600 %s)", what, path, m, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, maxSecretFile)
	}
	return b, nil
}

// readPassword reads a password file: the first line, without its newline.
func readPassword(what, path string) (string, error) {
	b, err := readSecretFile(what, path)
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
