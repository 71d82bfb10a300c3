package daemon

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// recorder is a component that writes what the supervisor asks of it.
func recorder(name string, log *[]string, startErr error) component {
	return funcs{
		onStart: func(context.Context) error {
			*log = append(*log, "start "+name)
			return startErr
		},
		onStop:   func() { *log = append(*log, "stop "+name) },
		onReload: func(*policy.Config) { *log = append(*log, "reload "+name) },
		onPass:   func(SyncResult) { *log = append(*log, "pass "+name) },
	}
}

func TestSupervisorOrder(t *testing.T) {
	var log []string
	var s supervisor
	if err := s.start(context.Background(), recorder("a", &log, nil), recorder("b", &log, nil), quiet{}); err != nil {
		t.Fatal(err)
	}
	s.reload(&policy.Config{})
	s.afterPass(SyncResult{})
	s.stop()
	s.stop() // a second stop does nothing
	want := []string{"start a", "start b", "reload a", "reload b", "pass a", "pass b", "stop b", "stop a"}
	if !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}

func TestSupervisorStartFailure(t *testing.T) {
	var log []string
	var s supervisor
	errBoom := errors.New("boom")
	err := s.start(context.Background(), recorder("a", &log, nil), recorder("b", &log, errBoom), recorder("c", &log, nil))
	if !errors.Is(err, errBoom) {
		t.Fatalf("start = %v, want %v", err, errBoom)
	}
	s.stop()
	// What started is stopped, once; what failed or never started is not.
	want := []string{"start a", "start b", "stop a"}
	if !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}
