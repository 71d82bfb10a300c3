package hooks

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// alive reports whether pid exists and is not a zombie (a killed orphan may
// sit as a zombie until init reaps it).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// state is the field after "(comm)".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// lockThread locks the calling goroutine to its thread for good.
func lockThread() { runtime.LockOSThread() }

// noLeaks checks that everything a test started has ended; the package's
// process starter thread lives for the whole process by design.
func noLeaks(t *testing.T) {
	t.Helper()
	goleak.VerifyNone(t, goleak.IgnoreTopFunction("github.com/uplinkd/uplinkd/hooks.processStarter"),
		goleak.IgnoreCurrent())
}
