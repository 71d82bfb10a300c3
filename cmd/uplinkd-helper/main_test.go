package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/internal/helper"
)

// TestRun drives the helper's command line as the daemon does. The
// protocols behind it have their own tests (publish/remote,
// watcher/probe's http method through a built helper).
func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	connect := netip.MustParseAddrPort(u.Host).String()
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string // a prefix; "rtt": a positive number
		stderr string
	}{
		{name: "no subcommand", code: helper.ExitUsage, stderr: "usage"},
		{name: "unknown", args: []string{"frobnicate"}, code: helper.ExitUsage, stderr: "unknown subcommand"},
		{name: "publish with args", args: []string{"publish", "x"}, code: helper.ExitUsage, stderr: "no arguments"},
		{name: "publish bad JSON", args: []string{"publish"}, stdin: "{", code: helper.ExitFailed, stderr: "read request"},
		{name: "check bad spec", args: []string{"publish-check"}, stdin: `{"spec":{"Kind":"dyndns2"}}`, code: helper.ExitFailed,
			stderr: "dyndns2: server must be an http:// or https:// URL"},
		{name: "check command kind", args: []string{"publish-check"}, stdin: `{"spec":{"Kind":"command"}}`, code: helper.ExitFailed,
			stderr: "not one the helper runs"},
		{name: "probe no url", args: []string{"http-probe", "--connect", connect, "--timeout", "5s"}, code: helper.ExitUsage, stderr: "want --connect"},
		{name: "probe bad connect", args: []string{"http-probe", "--connect", "nowhere", "--timeout", "5s", "--", srv.URL}, code: helper.ExitUsage, stderr: "--connect"},
		{name: "probe no timeout", args: []string{"http-probe", "--connect", connect, "--", srv.URL}, code: helper.ExitUsage, stderr: "want --connect"},
		{name: "probe ok", args: []string{"http-probe", "--connect", connect, "--timeout", "5s", "--", srv.URL + "/"}, stdout: "rtt"},
		{name: "probe 503", args: []string{"http-probe", "--connect", connect, "--timeout", "5s", "--", srv.URL + "/broken"}, code: helper.ExitFailed,
			stderr: "HTTP 503"},
		// The URL names another host: the probe still connects where it is told (the daemon resolved it).
		{name: "probe connect overrides host", args: []string{"http-probe", "--connect", connect, "--timeout", "5s", "--", "http://probe.example.test/"}, stdout: "rtt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", code, stderr.String(), tt.code, tt.stderr)
			}
			if tt.stdout == "rtt" {
				ns, err := strconv.ParseInt(strings.TrimSpace(stdout.String()), 10, 64)
				if err != nil || ns <= 0 {
					t.Fatalf("stdout %q, want a positive duration in ns", stdout.String())
				}
			}
		})
	}
}
