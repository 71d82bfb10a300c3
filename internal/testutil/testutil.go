// Package testutil holds helpers for the tests of the packages that start
// programs and log what they did (hooks, publish): a JSON log capture, shell
// scripts written for a test, and waiting on a condition with a deadline.
// Only tests import it.
package testutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogCapture collects JSON log records; slog writes each record in one Write.
type LogCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write takes one JSON record.
func (c *LogCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// NewCapture returns a logger at debug level that writes JSON into the
// capture it returns.
func NewCapture() (*slog.Logger, *LogCapture) {
	c := &LogCapture{}
	return slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug})), c
}

// Records returns the captured records, decoded.
func (c *LogCapture) Records(t *testing.T) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(c.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Find returns the records whose msg is msg and whose fields match want.
func (c *LogCapture) Find(t *testing.T, msg string, want map[string]any) []map[string]any {
	t.Helper()
	var out []map[string]any
next:
	for _, r := range c.Records(t) {
		if r["msg"] != msg {
			continue
		}
		for k, v := range want {
			if r[k] != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// Script writes an executable /bin/sh script into dir.
func Script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// ReadFile returns the content of file p, "" when it does not exist.
func ReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// WaitFor polls cond (real time) until it holds or the deadline passes.
func WaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	// Never less than 20 s: a deadline only decides when to give up, and a
	// busy machine must make a test slower, not failing.
	deadline := time.Now().Add(max(timeout, 20*time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Lines returns the non-empty lines of file p.
func Lines(t *testing.T, p string) []string {
	t.Helper()
	s := strings.TrimSpace(ReadFile(t, p))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// String is everything captured, as written.
func (c *LogCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
