package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
)

// restartTimeout bounds one restart (systemctl's job or the command).
const restartTimeout = time.Minute

// supervisor keeps an external DHCP server serving across LAN link flaps.
// Servers such as isc-dhcp-server bind to the interface when they start
// and exit (or stay deaf) when it is missing, so when the LAN link comes
// back after being down the unit is restarted. When uplinkd first learns
// that the link is up, a unit is started if it is not running (StartUnit is
// a no-op for a running unit; a command is not run then, as it may not be
// idempotent).
//
// Restarts are rate-limited to one per MinInterval: a link flapping faster
// gets one more restart when the interval has passed. The caller's
// LinkChanged never waits: the restart runs on the supervisor's goroutine.
type supervisor struct {
	svc   Service
	iface string
	log   *slog.Logger
	// restart is the action (replaced in tests); start is true for the
	// first "up" (start if not running) and false for a restart.
	restart func(ctx context.Context, start bool) error
	// idle, if set (tests), is called each time run is about to wait, with
	// the number of link wake-ups handled so far and whether an action is
	// due (waiting for MinInterval): a test waits for this state instead
	// of sleeping.
	idle func(wakes int, due bool)

	mu          sync.Mutex
	restarts    int
	lastRestart time.Time
	lastErr     string
	lastErrAt   time.Time
}

func newSupervisor(svc Service, iface string, log *slog.Logger) *supervisor {
	s := &supervisor{svc: svc, iface: iface, log: log}
	if svc.Unit != "" {
		s.restart = s.restartUnit
	} else {
		s.restart = s.runCommand
	}
	return s
}

func (s *supervisor) status() (int, time.Time, string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts, s.lastRestart, s.lastErr, s.lastErrAt
}

// run waits for link changes until ctx ends.
func (s *supervisor) run(ctx context.Context, linkc <-chan struct{}, linkUp *atomic.Int32, wentDown *atomic.Bool) error {
	var (
		last    int32 // 0 unknown, 1 up, 2 down
		pending bool  // a restart is due
		start   bool  // the due action is "start if not running"
		timer   = time.NewTimer(time.Hour)
		lastRun time.Time
		wakes   int
	)
	timer.Stop()
	defer timer.Stop()
	for {
		if s.idle != nil {
			s.idle(wakes, pending && last == 1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-linkc:
			wakes++
			flapped := wentDown.Swap(false)
			up := linkUp.Load()
			switch {
			case up == 1 && (last == 2 || flapped):
				pending, start = true, false
			case up == 1 && last == 0 && s.svc.Unit != "":
				pending, start = true, true
			}
			last = up
		case <-timer.C:
		}
		if !pending || last != 1 {
			continue
		}
		if wait := s.svc.MinInterval - time.Since(lastRun); !lastRun.IsZero() && wait > 0 {
			timer.Reset(wait)
			continue
		}
		pending, lastRun = false, time.Now()
		s.do(ctx, start)
	}
}

// do runs one restart; the action bounds itself (restartTimeout), so a
// restart that hangs is reported as a timeout rather than as cancelled.
func (s *supervisor) do(ctx context.Context, start bool) {
	what := s.svc.Unit
	if what == "" {
		what = strings.Join(s.svc.Command, " ")
	}
	err := s.restart(ctx, start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr, s.lastErrAt = err.Error(), time.Now()
		s.log.Error("dhcp: restarting the DHCP service failed", "event", "dhcp_service_restart_failed", "iface", s.iface, "service", what, "reason", err.Error())
		return
	}
	s.restarts++
	s.lastRestart = time.Now()
	s.log.Info("dhcp: DHCP service restarted after the LAN link came back", "event", "dhcp_service_restarted", "iface", s.iface, "service", what, "start_only", start)
}

// restartUnit restarts (or starts) the unit with systemctl, which waits
// for the job and fails when it does. As root it talks to systemd over its
// own socket, so no D-Bus daemon is needed (a minimal Debian has none);
// as another user it goes through the system bus and polkit. systemctl,
// not a D-Bus library, keeps godbus out of the daemon's binary: about
// 0.4 MB of its idle memory (docs/performance.md, "Idle RSS"). It is found
// on PATH, as an admin's shell would, and run as every program uplinkd
// starts is (hooks.CaptureCommand: its own process group, killed with the
// daemon and on the timeout).
func (s *supervisor) restartUnit(ctx context.Context, start bool) error {
	verb := "restart"
	if start {
		verb = "start"
	}
	res, out := hooks.CaptureCommand(ctx, s.log, []string{"systemctl", verb, "--", s.svc.Unit}, nil, restartTimeout)
	return commandError(verb+" "+s.svc.Unit, res, out)
}

// commandError is nil for a command that succeeded, else what went wrong
// with its output (systemctl's "Job for ... failed").
func commandError(what string, res hooks.CommandResult, out []byte) error {
	msg := strings.TrimSpace(string(out))
	switch {
	case res.Err == nil:
		return nil
	case res.TimedOut, res.Canceled:
		return fmt.Errorf("%s: %s after %s: %s", what, res.Outcome(), res.Duration.Round(time.Millisecond), msg)
	}
	return fmt.Errorf("%s: %w: %s", what, res.Err, msg)
}

// runCommand runs the configured argv (no shell) with the interface in the
// environment.
func (s *supervisor) runCommand(ctx context.Context, _ bool) error {
	if len(s.svc.Command) == 0 {
		return errors.New("no command")
	}
	env := []string{"UPLINKD_EVENT=lan-up", "UPLINKD_IFACE=" + s.iface}
	res, out := hooks.CaptureCommand(ctx, s.log, s.svc.Command, env, restartTimeout)
	return commandError(s.svc.Command[0], res, out)
}
