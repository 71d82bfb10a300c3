package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Exec runs argv inside namespace ns (`ip netns exec ns argv...`) and returns
// its combined output. The error includes the output, so a failing command
// explains itself in test logs.
func (l *Lab) Exec(ns string, argv ...string) (string, error) {
	return execIn(ns, nil, argv...)
}

func execIn(ns string, stdin io.Reader, argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("lab: exec: empty command")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: exec in %s: %s: %w: %s", ns, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Buffer is a goroutine-safe output buffer: Start captures a process's
// output in one, and tests read it while the process still writes.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Output returns what a process started with Start (without explicit
// writers) has printed so far, stdout and stderr interleaved.
func Output(cmd *exec.Cmd) string {
	if b, ok := cmd.Stdout.(*Buffer); ok {
		return b.String()
	}
	return ""
}

// StartOptions configures StartWith.
type StartOptions struct {
	// Stdout and Stderr receive the process's output. If both are nil, the
	// output goes to a *Buffer (see Output). A nil writer otherwise means
	// the stream is discarded.
	Stdout, Stderr io.Writer
	Env            []string // nil: inherit this process's environment
	Dir            string
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs argv in the background inside ns; its output is captured in a
// Buffer (see Output). The lab owns the process: Close stops it. Use
// Lab.Wait, not cmd.Wait, to wait for it, because the lab already waits.
func (l *Lab) Start(ns string, argv ...string) (*exec.Cmd, error) {
	return l.StartWith(ns, StartOptions{}, argv...)
}

// StartWith is Start with explicit output writers and environment.
func (l *Lab) StartWith(ns string, opts StartOptions, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("lab: start: empty command")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env, cmd.Dir = opts.Env, opts.Dir
	if opts.Stdout == nil && opts.Stderr == nil {
		b := &Buffer{}
		cmd.Stdout, cmd.Stderr = b, b
	} else {
		cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	}
	// Own process group: Close signals the whole group, so shells and their
	// children go too. Pdeathsig: if this process dies without running
	// Close (test timeout), the kernel kills the child instead of leaving it
	// to pin the namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	// Under the lock so that Close cannot miss a process started concurrently.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start in %s: %s: %w", ns, strings.Join(argv, " "), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	l.procs[cmd] = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return cmd, nil
}

// Wait waits for a process started by Start/StartWith to exit and returns
// its exit error.
func (l *Lab) Wait(cmd *exec.Cmd) error {
	l.mu.Lock()
	p, ok := l.procs[cmd]
	l.mu.Unlock()
	if !ok {
		return errors.New("lab: wait: process was not started by this lab")
	}
	<-p.done
	return p.err
}

// Exited reports whether a process started by this lab has exited.
func (l *Lab) Exited(cmd *exec.Cmd) bool {
	l.mu.Lock()
	p, ok := l.procs[cmd]
	l.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopProcs asks every running process group to terminate, and kills the
// ones still running after grace. Waiting is bounded so a process stuck in
// the kernel cannot hang Close forever.
func stopProcs(procs []*proc, grace time.Duration) {
	signalAll := func(sig syscall.Signal) {
		for _, p := range procs {
			select {
			case <-p.done:
			default:
				// Negative pid: the whole process group (Setpgid above).
				_ = syscall.Kill(-p.cmd.Process.Pid, sig)
			}
		}
	}
	waitAll := func(d time.Duration) bool {
		deadline := time.After(d)
		for _, p := range procs {
			select {
			case <-p.done:
			case <-deadline:
				return false
			}
		}
		return true
	}
	if len(procs) == 0 {
		return
	}
	signalAll(syscall.SIGTERM)
	if waitAll(grace) {
		return
	}
	signalAll(syscall.SIGKILL)
	waitAll(5 * time.Second)
}
