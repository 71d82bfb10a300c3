package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// ctlHandler is a daemon with two uplinks as the control socket sees it.
type ctlHandler struct {
	problems []string
	events   chan control.Event
	drains   chan control.Drain // nil: drain requests are not recorded
}

func (h *ctlHandler) Status(context.Context) (control.Status, error) {
	t0 := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	loss, rtt := 0.25, 31.5
	return control.Status{
		Daemon: control.Daemon{Version: "0.3.0", PID: 77, Started: t0, Config: "/etc/uplinkd/uplinkd.toml",
			ConfigLoaded: t0, LastPass: t0.Add(time.Hour), Passes: 9, Repairs: 0},
		Uplinks: []control.Uplink{{
			Name: "dsl", Interface: "ppp0", Kind: "ppp", State: control.StateFailed, Reason: "3 probe rounds failed",
			Address: netip.MustParseAddr("203.0.113.7"), Gateway: netip.MustParseAddr("198.51.100.1"),
			Table: 201, Tier: 1, Weight: 1, Loss: &loss, RTTms: &rtt, Since: t0.Add(50 * time.Minute),
			Reconnects: 2, LastEvent: &control.LastEvent{Name: "probe-down", At: t0.Add(50 * time.Minute)},
		}},
	}, nil
}

func (h *ctlHandler) Reconnect(_ context.Context, name string) error {
	if name != "dsl" {
		return fmt.Errorf("no uplink named %q", name)
	}
	return nil
}

func (h *ctlHandler) Reload(context.Context) ([]string, error) { return h.problems, nil }

func (h *ctlHandler) Drain(_ context.Context, d control.Drain) error {
	if d.Uplink != "dsl" {
		return fmt.Errorf("no uplink named %q", d.Uplink)
	}
	if !d.Undrain && !d.Force {
		return errors.New("dsl is the last uplink that carries the default route: draining it leaves none (use --force to drain it anyway)")
	}
	if h.drains != nil {
		h.drains <- d
	}
	return nil
}

func (h *ctlHandler) Event(_ context.Context, ev control.Event) error {
	if ev.Role != "" {
		return errors.New("ha roles are not supported yet")
	}
	h.events <- ev
	return nil
}

// serveControl runs a control socket with h until the test ends.
func serveControl(t *testing.T, h control.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "uplinkd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, control.Options{Path: path, Group: -1}, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	for range 1000 {
		if _, err := os.Lstat(path); err == nil {
			return path
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("control socket never appeared")
	return ""
}

func TestControlCommands(t *testing.T) {
	h := &ctlHandler{events: make(chan control.Event, 4), drains: make(chan control.Drain, 8)}
	sock := serveControl(t, h)
	bad := &ctlHandler{problems: []string{"/etc/uplinkd/uplinkd.toml:3:1: unknown key \"Table\"", "/etc/uplinkd/uplinkd.toml:9:10: no uplink named \"ppp9\""}}
	badSock := serveControl(t, bad)

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string // substring
		stderr     string // substring; "" = must be empty
		stderrRows int    // lines on stderr, when > 0
	}{
		{"status", []string{"status", "--socket", sock}, 0, "dsl     ppp0   failed", "", 0},
		{"reconnect", []string{"reconnect", "--socket", sock, "dsl"}, 0, "reconnect of dsl requested", "", 0},
		{"reconnect unknown", []string{"reconnect", "--socket", sock, "cable"}, 1, "", `uplinkd reconnect: no uplink named "cable"`, 1},
		{"drain refused", []string{"drain", "--socket", sock, "dsl"}, 1, "", "uplinkd drain: dsl is the last uplink that carries the default route: draining it leaves none (use --force to drain it anyway)", 1},
		{"drain forced", []string{"drain", "--force", "--socket", sock, "dsl"}, 0, "dsl drained", "", 0},
		{"drain flag after name", []string{"drain", "--socket", sock, "dsl", "--force"}, 0, "dsl drained", "", 0},
		{"drain unknown", []string{"drain", "--force", "--socket", sock, "cable"}, 1, "", `uplinkd drain: no uplink named "cable"`, 1},
		{"undrain", []string{"undrain", "--socket", sock, "dsl"}, 0, "dsl undrained", "", 0},
		{"undrain has no --force", []string{"undrain", "--force", "dsl"}, 2, "", "flag provided but not defined: -force", 1},
		{"drain without name", []string{"drain", "--force"}, 2, "", "uplinkd drain: name one uplink: uplinkd drain NAME (see uplinkd help drain)", 1},
		{"undrain two names", []string{"undrain", "a", "b"}, 2, "", "name one uplink", 1},
		{"reload", []string{"reload", "--socket", sock}, 0, "config reloaded", "", 0},
		{"reload bad file", []string{"reload", "--socket", badSock}, 1, "", "uplinkd.toml:9:10: no uplink named \"ppp9\"", 3},
		{"event", []string{"event", "--socket", sock, "--iface", "ppp0", "--state", "up", "--local", "203.0.113.9", "--remote", "198.51.100.1"}, 0, "", "", 0},
		{"role not supported", []string{"event", "--socket", sock, "--role", "master"}, 1, "", "not supported yet", 1},
		{"no daemon: status", []string{"status", "--socket", sock + ".nope"}, exitNotRunning, "", "uplinkd status: uplinkd is not running: no socket at " + sock + ".nope; start it with: systemctl start uplinkd", 1},
		{"no daemon: event", []string{"event", "--socket", sock + ".nope", "--iface", "ppp0", "--state", "down"}, 0, "", "uplinkd event: warning: event dropped: uplinkd is not running", 1},
		{"no daemon: role event", []string{"event", "--socket", sock + ".nope", "--role", "master"}, exitNotRunning, "", "uplinkd event: role master NOT delivered: uplinkd is not running", 1},
		{"bad flag", []string{"status", "--jsn"}, 2, "", "uplinkd status: flag provided but not defined: -jsn (see uplinkd help status)", 1},
		{"extra argument", []string{"reload", "now"}, 2, "", `unexpected argument "now"`, 1},
		{"reconnect without name", []string{"reconnect"}, 2, "", "uplinkd reconnect: name one uplink: uplinkd reconnect NAME (see uplinkd help reconnect)", 1},
		{"event without state", []string{"event", "--iface", "ppp0"}, 2, "", "needs a state", 1},
		{"event bad state", []string{"event", "--iface", "ppp0", "--state", "sideways"}, 2, "", `state "sideways"`, 1},
		{"event bad address", []string{"event", "--iface", "ppp0", "--state", "up", "--local", "ppp"}, 2, "", "--local", 1},
		{"event role and iface", []string{"event", "--iface", "ppp0", "--state", "up", "--role", "backup"}, 2, "", "role alone", 1},
		{"event bad role", []string{"event", "--role", "boss"}, 2, "", `role "boss"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q does not contain %q", out.String(), tc.stdout)
			}
			if tc.stderr == "" && errb.Len() > 0 {
				t.Errorf("unexpected stderr:\n%s", errb.String())
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tc.stderr)
			}
			if tc.stderrRows > 0 {
				if n := strings.Count(errb.String(), "\n"); n != tc.stderrRows {
					t.Errorf("%d lines on stderr, want %d:\n%s", n, tc.stderrRows, errb.String())
				}
			}
		})
	}
	// What reached the daemon, in order: the two forced drains, then the
	// undrain.
	for i, want := range []control.Drain{{Uplink: "dsl", Force: true}, {Uplink: "dsl", Force: true}, {Uplink: "dsl", Undrain: true}} {
		select {
		case d := <-h.drains:
			d.Caller = control.Caller{} // the kernel's word; the control package tests it
			if d != want {
				t.Errorf("drain request %d: %+v, want %+v", i, d, want)
			}
		default:
			t.Errorf("drain request %d never reached the daemon", i)
		}
	}
	select {
	case ev := <-h.events:
		want := control.Event{Iface: "ppp0", State: control.LinkUp, Local: netip.MustParseAddr("203.0.113.9"), Remote: netip.MustParseAddr("198.51.100.1")}
		if ev != want {
			t.Errorf("daemon got %+v, want %+v", ev, want)
		}
	default:
		t.Error("the event never reached the daemon")
	}
}

// TestEventDaemonHangs: a daemon that accepts but never answers (stuck, or
// the socket of a process that is not uplinkd) still lets `event` return,
// with exit 0 and a warning.
func TestEventDaemonHangs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"event", "--socket", path, "--iface", "ppp0", "--state", "up"}, &out, &errb); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if !strings.Contains(errb.String(), "warning: event dropped") || !strings.Contains(errb.String(), "did not answer in time") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("stderr %q, want one warning line", errb.String())
	}
}

func TestStatusJSONGolden(t *testing.T) {
	sock := serveControl(t, &ctlHandler{})
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--json", "--socket", sock}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	path := filepath.Join("testdata", "status.json")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, out.Bytes(), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if out.String() != string(want) {
		t.Errorf("status --json differs from %s:\n%s", path, out.String())
	}
}
