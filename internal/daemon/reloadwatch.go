package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/policy"
)

// reloadDebounce coalesces the burst of events one save makes (an editor's
// write, chmod and rename; a `cp` in several writes) into one reload.
const reloadDebounce = 200 * time.Millisecond

// watchConfig reloads when the config file changes. It watches the file's
// directory, not the file: editors and config managers replace the file by
// renaming a new one over it, which a watch on the old inode would never
// see. A deleted file is not a config: it is logged and ignored, and the
// running config stays. The file is read on this goroutine and handed to
// the loop like a SIGHUP's.
func (d *Daemon) watchConfigFile(ctx context.Context) error {
	if d.opts.WatchConfig {
		d.watchConfig(ctx)
	}
	return nil
}

func (d *Daemon) watchConfig(ctx context.Context) {
	path := d.opts.ConfigPath
	if path == "" {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Warn("config file watch unavailable; reload with SIGHUP or uplinkd reload", "event", "config-watch", "reason", err.Error())
		return
	}
	dir, name := filepath.Dir(path), filepath.Base(path)
	if err := w.Add(dir); err != nil {
		w.Close()
		d.log.Warn("config file watch unavailable; reload with SIGHUP or uplinkd reload", "event", "config-watch", "path", dir, "reason", err.Error())
		return
	}
	d.wg.Go(func() {
		defer w.Close()
		var fire <-chan time.Time
		var t *time.Timer
		defer func() {
			if t != nil {
				t.Stop()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				// An overflow lost events: reload to be sure.
				d.log.Warn("config file watch", "event", "config-watch", "reason", err.Error())
				if errors.Is(err, fsnotify.ErrEventOverflow) && fire == nil {
					t = time.NewTimer(reloadDebounce)
					fire = t.C
				}
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Base(ev.Name) != name || ev.Op == fsnotify.Chmod {
					continue
				}
				if t != nil {
					t.Stop()
				}
				t = time.NewTimer(reloadDebounce)
				fire = t.C
			case <-fire:
				fire, t = nil, nil
				if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
					d.log.Warn("config file removed; keeping the running config", "event", "config-reload", "path", path, "reason", "file deleted")
					continue
				}
				d.log.Info("config file changed; reloading", "event", "config-reload", "path", path)
				cfg, err := LoadConfig(path)
				select {
				case d.reload <- reloadReq{cfg: cfg, err: err}:
				case <-ctx.Done():
					return
				}
			}
		}
	})
}

// reloadingState tells systemd a reload started; READY=1 ends it.
// MONOTONIC_USEC is what systemd 253+ requires with RELOADING=1; older
// ones (Debian 12 has 252) ignore it.
func reloadingState() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// flushOnExit removes everything uplinkd owns (what `uplinkd flush` does)
// when Run stops cleanly with Options.FlushOnExit. By default a stop leaves
// routing and NAT in place, so a restart or upgrade does not cut the LAN
// off.
func (d *Daemon) flushOnExit() {
	if !d.opts.FlushOnExit || !d.x.cleanStop {
		return
	}
	obs, err := d.kernel.Snapshot()
	if err == nil {
		err = d.kernel.Apply(policy.FlushChanges(obs), obs)
	}
	if err != nil {
		d.log.Error("flush on exit: routing state left in place", "event", "flush", "reason", err.Error())
	}
	if err := d.fw.Flush(); err != nil {
		d.log.Error("flush on exit: firewall state left in place", "event", "flush", "reason", err.Error())
	}
	d.log.Info("owned routing and firewall state removed", "event", "flush", "reason", "--flush-on-exit")
}
