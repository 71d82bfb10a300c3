package remote

import (
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uplinkd/uplinkd/internal/testutil"
	"github.com/uplinkd/uplinkd/publish"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

var (
	addrA = netip.MustParseAddr("198.51.100.10")
	addrB = netip.MustParseAddr("198.51.100.11")
	addrC = netip.MustParseAddr("198.51.100.12")
)

// noLeaks checks that everything a test started has ended; hooks' process
// starter thread lives for the whole process by design.
func noLeaks(t *testing.T) {
	t.Helper()
	goleak.VerifyNone(t, goleak.IgnoreTopFunction("github.com/uplinkd/uplinkd/hooks.processStarter"),
		goleak.IgnoreCurrent())
}

// waitIdle waits until no publish of m runs (see publish's own tests).
func waitIdle(t *testing.T, m *publish.Manager) {
	t.Helper()
	testutil.WaitFor(t, "no publish running", 20*time.Second, func() bool {
		for _, st := range m.Status() {
			if st.Result == "running" {
				return false
			}
		}
		return true
	})
}

// waitAttempts waits until every attempt of m has returned, its result
// reported (publish.Manager.Wait).
func waitAttempts(t *testing.T, m *publish.Manager) {
	t.Helper()
	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a publish attempt still runs")
	}
}
