package helper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

func TestLocateFrom(t *testing.T) {
	root := t.TempDir()
	sbin, lib := filepath.Join(root, "sbin"), filepath.Join(root, "lib", "uplinkd")
	for _, d := range []string{sbin, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	put := func(dir string, mode os.FileMode) string {
		p := filepath.Join(dir, Name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := locateFrom(sbin); err == nil || !strings.Contains(err.Error(), filepath.Join(lib, Name)) {
		t.Fatalf("no helper: %v", err)
	}
	installed := put(lib, 0o755)
	if p, err := locateFrom(sbin); err != nil || p != installed {
		t.Fatalf("installed: %q %v", p, err)
	}
	// Not executable: skipped.
	put(sbin, 0o644)
	if p, err := locateFrom(sbin); err != nil || p != installed {
		t.Fatalf("beside, not executable: %q %v", p, err)
	}
	// Beside the daemon wins (a build tree).
	beside := put(sbin, 0o755)
	os.Chmod(beside, 0o755)
	if p, err := locateFrom(sbin); err != nil || p != beside {
		t.Fatalf("beside: %q %v", p, err)
	}
}

// withScript makes Override return a shell script with body.
func withScript(t *testing.T, body string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), Name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	old := Override
	Override = func() (string, error) { return p, nil }
	t.Cleanup(func() { Override = old })
}

func TestRun(t *testing.T) {
	withScript(t, `read line; echo "out:$line:$*"; echo first >&2; echo "the reason" >&2; [ "$1" = sleep ] && exec sleep 30; exit "$1"`)
	tests := []struct {
		arg     string
		timeout time.Duration
		out     string
		code    int // 0: no error
		msg     string
	}{
		{arg: "0", out: "out:in:0\n"},
		{arg: "1", out: "out:in:1\n", code: ExitFailed, msg: "the reason"},
		{arg: "3", out: "out:in:3\n", code: ExitTimeout, msg: "the reason"},
		{arg: "sleep", timeout: 200 * time.Millisecond, code: -1, msg: "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			out, err := Run(ctx, int(netnsx.Own), []byte("in\n"), tt.arg)
			if tt.code == 0 {
				if err != nil || string(out) != tt.out {
					t.Fatalf("got %q %v, want %q", out, err, tt.out)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("error %#v, want code %d with %q", err, tt.code, tt.msg)
			}
			if tt.code > 0 && string(out) != tt.out {
				t.Fatalf("stdout %q, want %q", out, tt.out)
			}
		})
	}
}

func TestRunMissingHelper(t *testing.T) {
	old := Override
	Override = func() (string, error) { return filepath.Join(t.TempDir(), "absent"), nil }
	defer func() { Override = old }()
	_, err := Run(context.Background(), int(netnsx.Own), nil, "publish")
	var e *Error
	if !errors.As(err, &e) || e.Code != -1 || !strings.Contains(e.Msg, "start "+Name) {
		t.Fatalf("error %#v", err)
	}
}

// TestRunHandsOverNamespace: a namespace other than Own reaches the helper
// as descriptor NetNSFD (here the test's own namespace, opened by path, so
// that nothing is created), and the caller's descriptor stays open.
func TestRunHandsOverNamespace(t *testing.T) {
	withScript(t, `readlink /proc/self/fd/`+strconv.Itoa(NetNSFD))
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Run(context.Background(), int(f.Fd()), nil)
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("helper's fd %d: %q %v, want %q", NetNSFD, out, err, want)
	}
	if _, err := f.Stat(); err != nil {
		t.Fatalf("the caller's namespace fd: %v", err)
	}
}
