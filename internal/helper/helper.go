// Package helper finds and runs uplinkd-helper, the second binary of the
// package. The helper holds the code that talks HTTP, TLS or DNS to servers
// outside the gateway: the dyndns2 and RFC 2136 address publishers and the
// http health probe. The daemon runs it on demand, one process per publish
// or probe, so that the daemon's own binary links none of net/http,
// crypto/tls, crypto/x509 or miekg/dns: those made up a quarter of it, and
// the kernel maps nearly all of a binary's pages into an idle daemon
// (docs/design.md, "The helper binary"; docs/performance.md, "Idle RSS").
//
// The interface between the two is argv, stdin and stdout, never a shell
// string, and never a secret: the helper reads password and key files
// itself, from the paths it is given.
package helper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// Name is the helper's file name.
const Name = "uplinkd-helper"

// libDir is where an installed helper lives relative to the daemon's
// directory, beside the package's other private programs: /usr/sbin/uplinkd
// runs /usr/lib/uplinkd/uplinkd-helper (the Debian package),
// /usr/local/sbin/uplinkd the one under /usr/local/lib (make install). It
// is no command for people, so it stays off PATH.
const libDir = "../lib/uplinkd"

// Exit codes of the helper beyond 0 (done).
const (
	ExitFailed  = 1 // the publish or probe failed; stderr says why
	ExitUsage   = 2 // bad arguments: a bug in the daemon or a version skew
	ExitTimeout = 3 // the probe timed out
)

// Override, when set, returns the helper to run instead of the one Locate
// finds. Tests set it to build one on first use.
var Override func() (string, error)

// Locate returns the helper to run: Override's, else uplinkd-helper beside the
// running executable (a build tree, `make run`), else in ../lib/uplinkd
// from it (an installed uplinkd).
func Locate() (string, error) {
	if Override != nil {
		return Override()
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%s: own executable: %w", Name, err)
	}
	return locateFrom(filepath.Dir(exe))
}

// locateFrom is Locate for a daemon in directory dir.
func locateFrom(dir string) (string, error) {
	tried := []string{filepath.Join(dir, Name), filepath.Clean(filepath.Join(dir, libDir, Name))}
	for _, p := range tried {
		if unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (looked at %s and %s)", Name, tried[0], tried[1])
}

// Error is a helper run that did not exit 0.
type Error struct {
	Code int    // exit code; -1 when it did not exit by itself (killed, not started)
	Msg  string // its last line on stderr, or what went wrong running it
}

func (e *Error) Error() string { return e.Msg }

// maxOutput bounds what is kept of the helper's stdout and stderr: its
// answers are one short line or a small JSON object.
const maxOutput = 64 << 10

// NetNSFD is the descriptor under which a helper started by Run for
// another network namespace finds that namespace.
const NetNSFD = 3

// Run runs the helper with args and stdin and returns its stdout. When ns
// is another namespace than the daemon's (netnsx.IsOwn), the helper gets
// it as descriptor NetNSFD; args must tell it so (http-probe's
// --netns-fd). The helper starts on hooks' starter thread with
// Pdeathsig=SIGKILL, as every program uplinkd runs does, so it dies with
// the daemon. ctx ends it (SIGKILL); a non-zero exit is an *Error.
func Run(ctx context.Context, ns int, stdin []byte, args ...string) ([]byte, error) {
	path, err := Locate()
	if err != nil {
		return nil, &Error{Code: -1, Msg: err.Error()}
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	stdout, stderr := hooks.CappedBuffer{Max: maxOutput}, hooks.CappedBuffer{Max: maxOutput}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// If the helper leaves a child holding its pipes, do not wait for it.
	cmd.WaitDelay = time.Second
	if !netnsx.IsOwn(ns) {
		// A duplicate: an *os.File closes its descriptor when collected,
		// and ns belongs to the caller.
		dup, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, &Error{Code: -1, Msg: fmt.Sprintf("start %s: namespace fd %d: %v", Name, ns, err)}
		}
		f := os.NewFile(uintptr(dup), "netns")
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f} // the child's NetNSFD
	}
	if err := hooks.StartProcess(cmd); err != nil {
		return nil, &Error{Code: -1, Msg: fmt.Sprintf("start %s: %v", Name, err)}
	}
	err = cmd.Wait()
	if err == nil {
		return stdout.Bytes(), nil
	}
	msg := lastLine(string(stderr.Bytes()))
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		if msg == "" {
			msg = fmt.Sprintf("%s exited %d", Name, exit.ExitCode())
		}
		return stdout.Bytes(), &Error{Code: exit.ExitCode(), Msg: msg}
	}
	if ctx.Err() != nil {
		return nil, &Error{Code: -1, Msg: fmt.Sprintf("%s: %v", Name, ctx.Err())}
	}
	if msg != "" {
		msg = ": " + msg
	}
	return nil, &Error{Code: -1, Msg: fmt.Sprintf("%s: %v%s", Name, err, msg)}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
