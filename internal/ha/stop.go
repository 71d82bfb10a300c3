package ha

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// RunStop runs an exclusive uplink's stop command (e.g. poff PEER) with argv
// only, no shell, its environment extended by env (KEY=value). It is killed,
// with its process group, after timeout or when ctx ends.
func RunStop(ctx context.Context, argv, env []string, timeout time.Duration) error {
	if len(argv) == 0 {
		return errors.New("no stop command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%s: %w: %s", argv[0], err, trim(out))
	}
	return nil
}

// trim keeps a command's output short enough for one log record.
func trim(b []byte) string {
	const maxLen = 256
	if len(b) > maxLen {
		b = b[:maxLen]
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b)
}
