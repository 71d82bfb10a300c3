// Package statefile reads and writes the small JSON state files the daemon
// keeps in state_dir (drained.json, delegated.json): strict decoding, a
// corrupt file moved aside and reported instead of failing the start, and
// atomic replacement (internal/atomicfile).
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/uplinkd/uplinkd/internal/atomicfile"
)

// CorruptError is a state file that could not be decoded; Load renamed it
// to Moved (empty when even the rename failed). What names the state in
// the message ("drain state").
type CorruptError struct {
	What  string
	Path  string
	Moved string
	Err   error
}

func (e *CorruptError) Error() string {
	if e.Moved == "" {
		return fmt.Sprintf("%s %s is unreadable (%v); treating it as empty", e.What, e.Path, e.Err)
	}
	return fmt.Sprintf("%s %s is unreadable (%v); moved it to %s and treat it as empty", e.What, e.Path, e.Err, e.Moved)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Read decodes the file at path with decode. A missing file is empty();
// one decode refuses is empty() with a *CorruptError, and the file stays
// where it is (for readers that must change nothing, `uplinkd plan`); any
// other error comes with empty() too.
func Read[T any](path, what string, decode func([]byte) (T, error), empty func() T) (T, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty(), nil
	}
	if err != nil {
		return empty(), fmt.Errorf("%s: %w", what, err)
	}
	v, err := decode(data)
	if err != nil {
		return empty(), &CorruptError{What: what, Path: path, Err: err}
	}
	return v, nil
}

// Load is Read that renames a corrupt file to path+".bad".
func Load[T any](path, what string, decode func([]byte) (T, error), empty func() T) (T, error) {
	v, err := Read(path, what, decode, empty)
	var ce *CorruptError
	if errors.As(err, &ce) {
		if rerr := os.Rename(path, path+".bad"); rerr == nil {
			ce.Moved = path + ".bad"
		}
	}
	return v, err
}

// DecodeJSON decodes data into v strictly: no unknown field, nothing after
// the object.
func DecodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// Save replaces the file at path with v as indented JSON, atomically,
// creating its directory when needed. The files name no secret: mode
// 0644.
func Save(path, what string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return nil
}
