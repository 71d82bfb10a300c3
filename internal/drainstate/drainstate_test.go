package drainstate

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "state"))
	set, err := Load(path)
	if err != nil || len(set) != 0 {
		t.Fatalf("missing file: %v, %v; want an empty set", set, err)
	}
	since := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	want := Set{"wan2": {Name: "wan2", Since: since, UID: 0, PID: 42}, "lte": {Name: "lte", Since: since, UID: 1000, PID: 7}}
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %v, want %v", got, want)
	}
	if names := got.Names(); !reflect.DeepEqual(names, []string{"lte", "wan2"}) {
		t.Errorf("Names = %v", names)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	// No temporary file is left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want 1", len(entries))
	}
	if err := Save(path, Set{}); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || len(got) != 0 {
		t.Errorf("after saving an empty set: %v, %v", got, err)
	}
}

func TestCorruptFile(t *testing.T) {
	for name, content := range map[string]string{
		"not json":      "{drained",
		"truncated":     `{"v":1,"uplinks":[{"name":"wan`,
		"wrong version": `{"v":2,"uplinks":[]}`,
		"unknown field": `{"v":1,"uplinks":[],"x":1}`,
		"no name":       `{"v":1,"uplinks":[{"since":"2026-01-01T00:00:00Z"}]}`,
		"duplicate":     `{"v":1,"uplinks":[{"name":"a"},{"name":"a"}]}`,
		"trailing":      `{"v":1,"uplinks":[]} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := Path(t.TempDir())
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			// Read reports and leaves the file alone.
			set, err := Read(path)
			var ce *CorruptError
			if !errors.As(err, &ce) || len(set) != 0 {
				t.Fatalf("Read = %v, %v; want empty and a CorruptError", set, err)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("Read moved the file: %v", err)
			}
			set, err = Load(path)
			if !errors.As(err, &ce) || len(set) != 0 {
				t.Fatalf("Load = %v, %v; want empty and a CorruptError", set, err)
			}
			if ce.Moved != path+".bad" {
				t.Errorf("moved to %q", ce.Moved)
			}
			if b, err := os.ReadFile(path + ".bad"); err != nil || string(b) != content {
				t.Errorf(".bad holds %q, %v; want the old content", b, err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the corrupt file is still there: %v", err)
			}
			// The next load finds nothing and is fine.
			if set, err := Load(path); err != nil || len(set) != 0 {
				t.Errorf("second Load = %v, %v", set, err)
			}
		})
	}
}
