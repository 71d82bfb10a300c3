package hooks

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

// TestHookDiesWithDaemon: a daemon killed by SIGKILL takes its running hook
// with it (Pdeathsig), instead of leaving it orphaned under PID 1. The
// "daemon" is this test binary re-executed as a helper that fires a hook and
// waits; the hook records its pid and then becomes `sleep 60` (exec keeps
// the pid).
func TestHookDiesWithDaemon(t *testing.T) {
	if os.Getenv("UPLINKD_TEST_HELPER") == "hook-daemon" {
		helperDaemon()
		return
	}
	tests := []struct{ name, via string }{
		{"runner hook", "hook"},
		{"reconnect command", "reconnect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			helper := exec.Command(os.Args[0], "-test.run=^TestHookDiesWithDaemon$")
			helper.Env = append(os.Environ(), "UPLINKD_TEST_HELPER=hook-daemon", "HELPER_PIDFILE="+pidFile, "HELPER_VIA="+tt.via, "HELPER_DIR="+dir)
			helper.Stdout, helper.Stderr = os.Stderr, os.Stderr
			if err := helper.Start(); err != nil {
				t.Fatal(err)
			}
			defer helper.Process.Kill()
			testutil.WaitFor(t, "hook started", 10*time.Second, func() bool { return strings.TrimSpace(testutil.ReadFile(t, pidFile)) != "" })
			pid, err := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidFile)))
			if err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, "hook exec'd sleep", 5*time.Second, func() bool {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				return strings.TrimSpace(string(b)) == "sleep"
			})
			// The helper now ends many locked threads; the hook must survive
			// that (it was forked from the starter's thread, which lives on).
			testutil.WaitFor(t, "thread churn", 10*time.Second, func() bool { return testutil.ReadFile(t, pidFile+".churned") != "" })
			if !alive(pid) {
				t.Fatal("hook died when unrelated threads of the daemon exited")
			}
			helper.Process.Signal(syscall.SIGKILL)
			helper.Wait()
			deadline := time.Now().Add(5 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("hook pid %d outlived the SIGKILLed daemon", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// helperDaemon fires a hook that hangs, from a goroutine that locks its
// thread and exits (the case Pdeathsig-per-thread would get wrong without
// the dedicated starter thread), then waits to be killed.
func helperDaemon() {
	dir, pidFile := os.Getenv("HELPER_DIR"), os.Getenv("HELPER_PIDFILE")
	body := "echo $$ > " + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "\nexec sleep 60\n"
	cmd := filepath.Join(dir, "hang")
	os.WriteFile(cmd, []byte("#!/bin/sh\n"+body), 0o755)
	switch os.Getenv("HELPER_VIA") {
	case "hook":
		r := NewRunner(quiet())
		done := make(chan struct{})
		go func() {
			// Locked and never unlocked: the runtime ends this thread when
			// the goroutine returns.
			lockThread()
			r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{cmd}, Timeout: time.Minute}}, HookEvent{Event: "up", Uplink: "u"})
			close(done)
		}()
		<-done
	case "reconnect":
		rc := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "ppp0", Kind: "ppp", Command: []string{cmd}, Timeout: time.Minute}, quiet(), nil, nil)
		rc.Down(true)
	}
	for {
		if b, _ := os.ReadFile(pidFile); len(b) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Thread churn: goroutines that lock their thread and return make the
	// runtime end those threads.
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lockThread()
			time.Sleep(time.Millisecond)
		}()
	}
	wg.Wait()
	os.WriteFile(pidFile+".churned", []byte("yes"), 0o644)
	time.Sleep(time.Minute)
	os.Exit(1)
}
