package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
)

// RunStop runs an exclusive uplink's stop command (e.g. poff PEER) with argv
// only, no shell, its environment extended by env (KEY=value), as every
// program uplinkd runs is (hooks.CaptureCommand): killed with its process
// group after timeout or when ctx ends, and with the daemon if it dies.
func RunStop(ctx context.Context, argv, env []string, timeout time.Duration) error {
	if len(argv) == 0 {
		return errors.New("no stop command")
	}
	res, out := hooks.CaptureCommand(ctx, nil, argv, env, timeout)
	err := res.Err
	switch {
	case err == nil:
		return nil
	case res.TimedOut:
		err = context.DeadlineExceeded
	case res.Canceled:
		err = context.Canceled
	}
	return fmt.Errorf("%s: %w: %s", argv[0], err, trim(out))
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
