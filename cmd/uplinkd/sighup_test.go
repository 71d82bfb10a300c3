package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// TestEarlySIGHUPIsNotFatal execs the real command (`uplinkd run`, this test
// binary acting as it) in a network namespace of its own (unshare --net:
// the namespace goes with the process) and sends SIGHUP from the moment its
// first uplinkd package is initialised, every half millisecond, through
// config loading, netlink and firewall set-up, until the daemon answers its
// status with a pass done. The daemon must survive, apply the early SIGHUPs
// as one reload, take a later SIGHUP as a reload too, and stop cleanly on
// SIGTERM. Before internal/earlysig, the first SIGHUP killed it (status
// 129, nothing logged).
//
// The first uplinkd package's initialisation is seen in GODEBUG=inittrace
// output; a SIGHUP before it (the Go runtime's own start) is fatal for any
// Go program, and the test does not send one then.
func TestEarlySIGHUPIsNotFatal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace, CAP_NET_ADMIN)")
	}
	if reason := lab.Unsupported(); reason != "" {
		t.Skip(reason)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare missing (util-linux): %v", err)
	}
	for i := range 5 {
		early := startAndSIGHUP(t)
		t.Logf("run %d: %d SIGHUPs before the first pass", i, early)
	}
}

func startAndSIGHUP(t *testing.T) int {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	cfg := writeConfig(t, "[daemon]\ncontrol_socket = \""+sock+"\"\nstate_dir = \""+filepath.Join(dir, "state")+
		"\"\nhook_dir = \""+filepath.Join(dir, "hooks.d")+"\"\n\n[[uplink]]\nname = \"wan\"\ninterface = \"eth9\"\ntable = 200\nrule_priority = 200\n")
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "run", "--log-format", "text", cfg)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "GODEBUG=inittrace=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var (
		logMu sync.Mutex
		log   strings.Builder
	)
	ours := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "init github.com/uplinkd/uplinkd/") {
				once.Do(func() { close(ours) })
			}
			if !strings.HasPrefix(line, "init ") {
				logMu.Lock()
				log.WriteString(line + "\n")
				logMu.Unlock()
			}
		}
		exited <- cmd.Wait()
	}()
	output := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return log.String()
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			<-exited
		}
	}()
	select {
	case <-ours:
	case err := <-exited:
		killed = true
		t.Fatalf("exited before its first package was initialised: %v\n%s", err, output())
	case <-time.After(30 * time.Second):
		t.Fatal("no uplinkd package initialised within 30 s")
	}

	// SIGHUPs until a pass is done.
	ready := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-ready:
				sent <- n
				return
			default:
			}
			if cmd.Process.Signal(syscall.SIGHUP) == nil {
				n++
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			killed = true
			close(ready)
			t.Fatalf("the daemon died while starting: %v\n%s", describeExit(err), output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := control.Call(ctx, sock, control.Request{Cmd: control.CmdStatus})
		cancel()
		if err == nil && !resp.Status.Daemon.LastPass.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			close(ready)
			t.Fatalf("no pass within 60 s: %v\n%s", err, output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(ready)
	early := <-sent
	if early == 0 {
		t.Fatal("no SIGHUP was sent while the daemon started")
	}
	waitLog(t, output, "SIGHUP received while starting; reloading now")
	reloads := strings.Count(output(), `msg="config reloaded"`)
	// A SIGHUP now is the loop's: one more reload.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, output, func(s string) bool { return strings.Count(s, `msg="config reloaded"`) > reloads }, "a reload for the SIGHUP after start")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		killed = true
		if err != nil {
			t.Fatalf("stop: %v\n%s", describeExit(err), output())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no stop within 60 s of SIGTERM\n%s", output())
	}
	return early
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
	}
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func waitLog(t *testing.T, output func() string, want string) {
	t.Helper()
	waitFor(t, output, func(s string) bool { return strings.Contains(s, want) }, want)
}

func waitFor(t *testing.T, output func() string, ok func(string) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(output()) {
		if time.Now().After(deadline) {
			t.Fatalf("not logged within 30 s: %s\n%s", what, output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
