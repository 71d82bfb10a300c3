package publish

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/helper"
)

// TestHelperPublisherFailures: what the daemon makes of a helper that is
// missing, crashes or answers nonsense — a retry, never a permanent
// verdict, since nothing says the config is wrong. The helper's real
// answers are publish/remote's tests (TestDynDNS2Manager,
// TestRFC2136KnotManager), through a built uplinkd-helper.
func TestHelperPublisherFailures(t *testing.T) {
	spec := Spec{Uplink: "dsl", Name: "dyn", Kind: KindDynDNS2, Timeout: time.Second}
	tests := []struct {
		name, script, reason string
	}{
		{"missing", "", "start " + helper.Name},
		{"crash", `[ "$1" = publish-check ] && exit 0; kill -SEGV $$`, "signal"},
		{"nonsense", `[ "$1" = publish-check ] && exit 0; echo '{"outcome":"maybe"}'`, `unknown outcome "maybe"`},
		{"not JSON", `[ "$1" = publish-check ] && exit 0; echo hello`, "reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), helper.Name)
			if tt.script != "" {
				if err := os.WriteFile(path, []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			old := helper.Override
			helper.Override = func() (string, error) { return path, nil }
			defer func() { helper.Override = old }()
			p := &helperPublisher{spec: spec}
			if tt.script != "" {
				var err error
				if p, err = newHelperPublisher(spec, PublisherOptions{}); err != nil {
					t.Fatal(err)
				}
			} else if _, err := newHelperPublisher(spec, PublisherOptions{}); err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("New without a helper: %v", err)
			}
			res := p.Publish(context.Background(), Request{Addr: addrA})
			if res.Outcome != Retry || res.Err == nil || !strings.Contains(res.Err.Error(), tt.reason) {
				t.Fatalf("got %v %v, want retry with %q", res.Outcome, res.Err, tt.reason)
			}
		})
	}
}
