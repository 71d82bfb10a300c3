package ha

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// TrackFile writes keepalived's track_file: one integer and a newline.
// keepalived re-reads the file when inotify reports it modified, so the value
// is written to a temporary file in the same directory, synced and renamed
// over the old one: keepalived never reads a half-written number. The file
// is written only when the value changes (and at the first Write).
type TrackFile struct {
	path    string
	last    int
	written bool
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
	if err := writeAtomic(t.path, []byte(strconv.Itoa(v)+"\n")); err != nil {
		return false, err
	}
	t.last, t.written = v, true
	return true, nil
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
