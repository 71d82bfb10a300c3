package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds the loader (Parse, which Load calls on the file's bytes)
// arbitrary files: it must never panic, and whatever it refuses it refuses
// with positions, because `uplinkd check` and a reload print them as
// file:line:column. Seeds: every reference and example config.
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 30s ./policy
func FuzzLoad(f *testing.F) {
	var seeds []string
	for _, glob := range []string{"../contrib/*.toml", "testdata/*/*.toml", "testdata/*.toml"} {
		m, _ := filepath.Glob(glob)
		seeds = append(seeds, m...)
	}
	if len(seeds) == 0 {
		f.Fatal("no seed configs found")
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range adversarialSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.toml", data, testTables)
		checkOutcome(t, data, cfg, err)
	})
}

// checkOutcome asserts what every file gets: a Config, or Problems that
// all carry a position inside the file.
func checkOutcome(t *testing.T, data []byte, cfg *Config, err error) {
	t.Helper()
	if err == nil {
		if cfg == nil {
			t.Fatal("no error and no config")
		}
		for _, w := range cfg.Warnings {
			checkPosition(t, lineCount(data), w)
		}
		return
	}
	if cfg != nil {
		t.Fatalf("a config with an error: %v", err)
	}
	ps, ok := err.(Problems)
	if !ok || len(ps) == 0 {
		t.Fatalf("error is %T, not Problems: %v", err, err)
	}
	lines := lineCount(data)
	for _, p := range ps {
		checkPosition(t, lines, p)
	}
}

func lineCount(data []byte) int { return bytes.Count(data, []byte("\n")) + 1 }

func checkPosition(t *testing.T, lines int, p Problem) {
	t.Helper()
	if p.File != "f.toml" && p.File != "t.toml" || p.Line < 1 || p.Line > lines || p.Col < 1 || p.Msg == "" {
		t.Fatalf("problem without a position in the file (%d lines): %#v", lines, p)
	}
}
