package hooks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Output limits per stream and command. A reconnect loop can run for days and
// a broken script can print megabytes; the journal must stay readable.
const (
	maxLineBytes = 1024 // longer lines are cut (truncated=true on the record)
	maxLines     = 200  // further lines are counted, not logged
)

// pipeGrace bounds how long we keep reading output after the command exited
// (or was killed). A daemon the command started (pppd from pon) may inherit
// stdout and keep it open forever; without this bound Wait would block on it.
const pipeGrace = time.Second

// CommandResult is what one command run came to.
type CommandResult struct {
	ExitCode int // -1 when it did not start or died from a signal
	Duration time.Duration
	TimedOut bool
	Canceled bool  // the caller's context ended (shutdown), not the timeout
	Err      error // nil on exit 0; otherwise why it failed
}

// Outcome is the `result` field of log records: ok | failed | timeout |
// canceled | error (could not be started).
func (r CommandResult) Outcome() string {
	switch {
	case r.TimedOut:
		return "timeout"
	case r.Canceled:
		return "canceled"
	case r.Err == nil:
		return "ok"
	case r.ExitCode >= 0:
		return "failed"
	default:
		var ee *exec.ExitError
		if errors.As(r.Err, &ee) {
			return "failed" // killed by a signal someone else sent
		}
		return "error"
	}
}

// attrs are the result fields shared by reconnect and hook records. A
// prefixed set (stop_) describes a step inside a record whose duration
// already covers it, so it carries no duration of its own.
func (r CommandResult) attrs(prefix string) []any {
	a := []any{prefix + "result", r.Outcome(), prefix + "exit_code", r.ExitCode}
	if prefix == "" {
		a = append(a, slog.Duration("duration", r.Duration))
	}
	// A non-negative exit code says it all; otherwise the error tells why
	// (not found, killed by which signal).
	if r.Err != nil && r.ExitCode < 0 {
		a = append(a, prefix+"error", r.Err.Error())
	}
	return a
}

// cmdOption changes how runCommand starts a command.
type cmdOption int

// ownSession starts the command in a new session (setsid) instead of only a
// new process group: what it leaves running (pppd from pon) belongs to no
// session of the daemon's.
const ownSession cmdOption = 1

// runCommand runs argv (no shell) with os.Environ()+env, in its own process
// group, for at most timeout, logging its output line by line through log
// (which carries the caller's fields: event, uplink, iface, ...). It and
// CaptureCommand run every program uplinkd starts for the administrator:
// hooks, reconnect and publish commands, HA stop commands, the DHCP
// service's restart. uplinkd-helper, which needs its stdin and stdout, goes
// through StartProcess; the iptables backend runs iptables-restore itself,
// from a thread in the firewall's namespace.
func runCommand(ctx context.Context, log *slog.Logger, argv, env []string, timeout time.Duration, opts ...cmdOption) CommandResult {
	stdout := &lineLogger{log: log, stream: "stdout"}
	stderr := &lineLogger{log: log, stream: "stderr"}
	res := execute(ctx, log, argv, env, timeout, stdout, stderr, opts...)
	stdout.flush()
	stderr.flush()
	return res
}

// execute starts argv on the starter thread and waits for it, with
// runCommand's rules (process group, Pdeathsig, the timeout kills the
// group); its output goes to stdout and stderr.
func execute(ctx context.Context, log *slog.Logger, argv, env []string, timeout time.Duration, stdout, stderr io.Writer, opts ...cmdOption) CommandResult {
	start := time.Now()
	if len(argv) == 0 {
		return CommandResult{ExitCode: -1, Err: errors.New("empty command")}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	// Own process group, so a timeout can kill the command together with
	// everything it forked (a shell script's `sleep`, pppd's children).
	// Pdeathsig: if the daemon dies, even by SIGKILL, the kernel kills the
	// command too (see starter.go for why one thread starts them all). A
	// pppd that `pon` starts detaches (a grandchild) and is not affected.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if slices.Contains(opts, ownSession) {
		// A session leader leads its process group too: the kill below
		// still reaches everything it forked.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = pipeGrace
	cmd.Stdout, cmd.Stderr = stdout, stderr // stdin stays /dev/null

	if err := StartProcess(cmd); err != nil {
		return CommandResult{ExitCode: -1, Duration: time.Since(start), Err: err}
	}
	err := cmd.Wait()

	res := CommandResult{ExitCode: -1, Duration: time.Since(start), Err: err}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case err == nil:
	case res.ExitCode == 0:
		// Exit 0 with an error: either the command left a child holding its
		// output open (a daemon it started; we just stopped listening) or
		// it finished just as the deadline passed. Both are success.
		if errors.Is(err, exec.ErrWaitDelay) {
			log.Debug("command exited; a child still held its output, stopped reading")
		}
		res.Err = nil
	case res.ExitCode > 0:
		// It exited by itself (maybe just as the deadline passed): its own
		// exit status is the truth, not the context.
	case parent.Err() != nil:
		// Killed because the caller gave up (shutdown), not our timer.
		res.Canceled = true
	case ctx.Err() != nil:
		res.TimedOut = true
	}
	return res
}

// RunCommand is runCommand for the programs started outside this package
// (the publishers' commands): the same rules (the package doc), in a
// process group of its own.
func RunCommand(ctx context.Context, log *slog.Logger, argv, env []string, timeout time.Duration) CommandResult {
	return runCommand(ctx, log, argv, env, timeout)
}

// maxCaptured bounds the output CaptureCommand hands back.
const maxCaptured = 4096

// CaptureCommand runs argv with RunCommand's rules but hands its output
// back (stdout and stderr as they came, the first 4 KiB) instead of
// logging it, for a caller that puts a failure's message in its own error
// (the DHCP supervisor's `systemctl restart`, an HA stop command). log,
// which may be nil, gets only the command's own trouble.
func CaptureCommand(ctx context.Context, log *slog.Logger, argv, env []string, timeout time.Duration) (CommandResult, []byte) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := &CappedBuffer{Max: maxCaptured}
	res := execute(ctx, log, argv, env, timeout, out, out)
	return res, out.Bytes()
}

// CappedBuffer keeps the first Max bytes written to it and drops the rest,
// so a runaway program cannot grow the daemon. It claims every write whole
// (an error would make exec stop copying and the command block on a full
// pipe), and it may be written from two goroutines (exec copies stdout and
// stderr separately). Used here and by internal/helper.
type CappedBuffer struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *CappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.Max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Bytes is what was kept.
func (c *CappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

// lineLogger is an io.Writer that logs each complete line as one record.
// exec copies each stream from its own goroutine; the mutex keeps flush (run
// after Wait) ordered with the last Write.
type lineLogger struct {
	log    *slog.Logger
	stream string

	mu        sync.Mutex
	buf       []byte
	truncated bool // the current line was longer than maxLineBytes
	lines     int
	dropped   int
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		if room := maxLineBytes - len(w.buf); len(chunk) > room {
			chunk, w.truncated = chunk[:room], true
		}
		w.buf = append(w.buf, chunk...)
		if i >= 0 {
			w.emitLocked()
		}
	}
	// Always claim the whole write: an error would make exec stop copying
	// and the command would block on a full pipe.
	return n, nil
}

func (w *lineLogger) emitLocked() {
	if w.lines >= maxLines {
		w.dropped++
	} else {
		w.lines++
		line := string(bytes.TrimSuffix(w.buf, []byte{'\r'}))
		if w.truncated {
			w.log.Info("command output", "stream", w.stream, "line", line, "truncated", true)
		} else {
			w.log.Info("command output", "stream", w.stream, "line", line)
		}
	}
	w.buf, w.truncated = w.buf[:0], false
}

// flush logs a last line without a newline and how many lines were dropped.
func (w *lineLogger) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 || w.truncated {
		w.emitLocked()
	}
	if w.dropped > 0 {
		w.log.Warn("command output truncated", "stream", w.stream, "logged_lines", w.lines, "dropped_lines", w.dropped)
		w.dropped = 0
	}
}
