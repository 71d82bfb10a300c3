package ha

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/fsnotify/fsnotify"
)

// TrackFile writes keepalived's track_file: one integer and a newline.
// keepalived re-reads the file when inotify reports it modified, so the value
// is written to a temporary file in the same directory, synced and renamed
// over the old one: keepalived never reads a half-written number. The file
// is written only when the value changes (and at the first Write), and
// again when another process changed it (Watch, Restore).
type TrackFile struct {
	path    string
	last    int
	written bool
	// held is what the file should hold, as the text written, for Watch's
	// goroutine: set before the rename, so that the rename's own event
	// finds the file as expected.
	held atomic.Pointer[string]
}

// NewTrackFile returns a writer for path; nothing is written yet.
func NewTrackFile(path string) *TrackFile { return &TrackFile{path: path} }

// Path is the file's path.
func (t *TrackFile) Path() string { return t.path }

// Write makes the file hold v; changed reports whether it was written.
func (t *TrackFile) Write(v int) (changed bool, err error) {
	if t.written && t.last == v {
		return false, nil
	}
	text := strconv.Itoa(v) + "\n"
	prev := t.held.Swap(&text)
	if err := writeAtomic(t.path, []byte(text)); err != nil {
		t.held.Store(prev)
		return false, err
	}
	t.last, t.written = v, true
	return true, nil
}

// Restore writes the last value again when the file no longer holds it;
// found is what it held instead ("" when it was missing or unreadable).
// keepalived's `init_file` is the usual culprit: at its start it checks that
// the file is missing, then opens it for writing, so a first Write that lands
// between the two is overwritten with the init value, and the box would stay
// at that value (FAULT with -254) until the health changes.
func (t *TrackFile) Restore() (found string, restored bool, err error) {
	if !t.written {
		return "", false, nil
	}
	want := strconv.Itoa(t.last) + "\n"
	b, _ := os.ReadFile(t.path)
	if string(b) == want {
		return "", false, nil
	}
	if err := writeAtomic(t.path, []byte(want)); err != nil {
		return strings.TrimSpace(string(b)), false, err
	}
	return strings.TrimSpace(string(b)), true, nil
}

// Watch calls changed whenever the file stops holding what Write last wrote
// (another process wrote, replaced or removed it), until ctx ends; changed
// runs on Watch's goroutine and must not block. It watches the directory
// (the file is replaced by a rename, which a watch on the file would lose).
// Watch returns once the watch is set up; the goroutine it starts ends with
// ctx.
func (t *TrackFile) Watch(ctx context.Context, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("track file watch: %w", err)
	}
	if err := w.Add(filepath.Dir(t.path)); err != nil {
		w.Close()
		return fmt.Errorf("track file watch %s: %w", filepath.Dir(t.path), err)
	}
	name := filepath.Base(t.path)
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Base(ev.Name) != name || ev.Op == fsnotify.Chmod {
					continue
				}
				held := t.held.Load()
				if b, err := os.ReadFile(t.path); held != nil && (err != nil || string(b) != *held) {
					changed()
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					changed() // an event may be lost: let Restore look
				}
			}
		}
	}()
	return nil
}

// Last returns the value last written, and whether there was one.
func (t *TrackFile) Last() (int, bool) { return t.last, t.written }

// Read returns the value in the file at path (tests, `uplinkd check`).
func Read(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	v, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, fmt.Errorf("track file %s: %w", path, err)
	}
	return v, nil
}

// writeAtomic is temp file + fsync + rename + fsync of the directory, so the
// file holds either the old or the new value, also after a power cut.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("track file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	// keepalived may run its VRRP process as another user only with
	// script_user; it reads as root by default. 0644: the value is no secret.
	if err = f.Chmod(0o644); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("track file %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("track file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		_ = d.Close()
		if derr != nil && !errors.Is(derr, os.ErrInvalid) {
			return fmt.Errorf("track file %s: sync directory: %w", path, derr)
		}
	}
	return nil
}
