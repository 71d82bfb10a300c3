package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// statusJSON runs the real `uplinkd status --json` against the daemon's
// socket.
func (r *running) statusJSON() control.Status {
	r.t.Helper()
	out, err := exec.Command(uplinkdBinary(r.t), "status", "--json", "--socket", r.socket).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.t.Fatalf("uplinkd status --json: %v\n%s", err, ee.Stderr)
		}
		r.t.Fatalf("uplinkd status --json: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		r.t.Fatalf("status --json output: %v\n%s", err, out)
	}
	return st
}

func (r *running) call(req control.Request) (control.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return control.Call(ctx, r.socket, req)
}

// TestLabControlSocket drives the in-process daemon through its control
// socket: the CLI's status of both uplinks, a reconnect that runs the
// uplink's command once, a good and a bad reload, an interface event that
// brings a pass, a role event refused (no [ha]); and a second daemon on the same
// socket stops before it touches the kernel.
func TestLabControlSocket(t *testing.T) {
	l := dualLab(t)
	dir := t.TempDir()
	attempts := filepath.Join(dir, "attempts")
	script := filepath.Join(dir, "pon")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$UPLINKD_UPLINK $UPLINKD_ATTEMPT\" >> "+attempts+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(labConfig, "table = 201\nrule_priority = 300\n", fmt.Sprintf(
		"table = 201\nrule_priority = 300\n  [uplink.reconnect]\n  command = [%q]\n  backoff = \"300ms\"\n", script), 1)
	cfgPath := writeConfig(t, cfgText)
	r := start(t, l, cfgPath)
	a0, a1 := l.UplinkAddr("ppp0"), l.UplinkAddr("ppp1")
	r.eventually("both uplinks' rules", func() bool {
		return r.has("from "+a0.String()+" lookup 200", "rule")() && r.has("from "+a1.String()+" lookup 201", "rule")()
	})

	// Status through the real CLI.
	var st control.Status
	deadline := time.Now().Add(5 * time.Second)
	for {
		st = r.statusJSON()
		if len(st.Uplinks) == 2 && st.Uplinks[0].State == control.StateUp && st.Uplinks[1].State == control.StateUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplinks not up in the status: %+v", st.Uplinks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.V != 1 || st.Daemon.PID != os.Getpid() || st.Daemon.Config != cfgPath || st.Daemon.Passes == 0 || st.Daemon.LastPass.IsZero() {
		t.Errorf("daemon section: %+v", st.Daemon)
	}
	for i, want := range []struct {
		name  string
		table int
		addr  string
	}{{"ppp0", 200, a0.String()}, {"ppp1", 201, a1.String()}} {
		u := st.Uplinks[i]
		if u.Name != want.name || u.Interface != want.name || u.Kind != "ppp" || u.Table != want.table ||
			u.Address.String() != want.addr || !u.Default || u.Tier != 1 || u.Weight != 1 || u.Since.IsZero() {
			t.Errorf("uplink %d: %+v, want %+v", i, u, want)
		}
		if u.Gateway != l.ISPAddr(want.name) {
			t.Errorf("uplink %s: gateway/peer %s, want %s", u.Name, u.Gateway, l.ISPAddr(want.name))
		}
		if u.LastEvent == nil || u.LastEvent.Name != "link-up" {
			t.Errorf("uplink %s: last event %+v, want link-up", u.Name, u.LastEvent)
		}
	}

	// Reconnect: one attempt, counted, and no backoff cycle for a link
	// that works.
	if _, err := r.call(control.Request{Cmd: control.CmdReconnect, Uplink: "ppp1"}); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	// The attempt's record has no retry_in when no next attempt was
	// scheduled; otherwise the cycle must end (its record is written once
	// the next attempt's timer is stopped) before the attempts are counted.
	finished := func() []map[string]any {
		return r.logs.records(map[string]any{"msg": "reconnect attempt finished", "uplink": "ppp1"})
	}
	r.eventually("the reconnect attempt finished", func() bool { return len(finished()) > 0 })
	if _, retry := finished()[0]["retry_in"]; retry {
		r.eventually("the reconnect cycle ended", func() bool {
			return len(r.logs.records(map[string]any{"msg": "uplink back, reconnect cycle ends", "uplink": "ppp1"})) > 0
		})
	}
	if data, _ := os.ReadFile(attempts); strings.TrimSpace(string(data)) != "ppp1 1" {
		t.Errorf("reconnect attempts: %q, want one for ppp1", data)
	}
	r.eventually("reconnect in the status", func() bool {
		u := r.statusJSON().Uplinks[1]
		return u.Reconnects == 1 && u.LastEvent != nil && u.LastEvent.Name == "reconnect"
	})
	if _, err := r.call(control.Request{Cmd: control.CmdReconnect, Uplink: "ppp0"}); err == nil ||
		!strings.Contains(err.Error(), "no [uplink.reconnect]") {
		t.Errorf("reconnect of an uplink without a command: %v", err)
	}
	if _, err := r.call(control.Request{Cmd: control.CmdReconnect, Uplink: "nope"}); err == nil ||
		!strings.Contains(err.Error(), `no uplink named "nope"`) {
		t.Errorf("reconnect of an unknown uplink: %v", err)
	}

	// Event: a resync pass.
	for len(r.syncs) > 0 {
		<-r.syncs
	}
	if _, err := r.call(control.Request{Cmd: control.CmdEvent, Event: &control.Event{Iface: "ppp0", State: control.LinkUp}}); err != nil {
		t.Fatalf("event: %v", err)
	}
	r.waitSync()
	// Without [ha] a role event is refused, with the reason.
	if _, err := r.call(control.Request{Cmd: control.CmdEvent, Event: &control.Event{Role: control.RoleMaster}}); err == nil ||
		!strings.Contains(err.Error(), ErrHAOff.Error()) {
		t.Errorf("role event: %v, want %v", err, ErrHAOff)
	}

	// Reload: a good file is applied, a bad one reported and not applied.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(cfgText, "rule_priority = 300", "rule_priority = 310", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.call(control.Request{Cmd: control.CmdReload}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	r.eventually("the reloaded rule priority", r.has("310:\tfrom "+a1.String()+" lookup 201", "rule"))
	if err := os.WriteFile(cfgPath, []byte(cfgText+"\n[[uplink]]\nname = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := r.call(control.Request{Cmd: control.CmdReload})
	var re *control.RemoteError
	if !errors.As(err, &re) || len(resp.Problems) == 0 || !strings.Contains(resp.Problems[0], cfgPath+":") {
		t.Errorf("reload of a bad file: %v, problems %q", err, resp.Problems)
	}
	if !r.has("310:\tfrom "+a1.String()+" lookup 201", "rule")() {
		t.Error("a bad reload changed the kernel")
	}

	// A second daemon on the same socket fails in Open.
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if d2, err := Open(Options{ConfigPath: cfgPath, NetNS: ns, ControlSocket: r.socket, StateDir: t.TempDir()}); err == nil {
		d2.kernel.Close()
		d2.fw.Close()
		t.Fatal("a second daemon opened on the same control socket")
	} else if !strings.Contains(err.Error(), "another uplinkd answers") {
		t.Errorf("second daemon: %v", err)
	}
	if _, err := r.call(control.Request{Cmd: control.CmdStatus}); err != nil {
		t.Errorf("the first daemon's socket after the second's attempt: %v", err)
	}
}

// TestLabFlushOnExit: a clean stop leaves routing and NAT in place by
// default; with FlushOnExit everything owned goes.
func TestLabFlushOnExit(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprint("flush=", flush), func(t *testing.T) {
			l := dualLab(t)
			cfg := writeConfig(t, labConfig)
			ns, err := l.NsHandle(l.Router)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			syncs := make(chan SyncResult, 64)
			d, err := Open(Options{ConfigPath: cfg, NetNS: ns, ControlSocket: "-", FlushOnExit: flush, StateDir: t.TempDir(),
				OnSync: func(s SyncResult) {
					select {
					case syncs <- s:
					default:
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			a0 := l.UplinkAddr("ppp0").String()
			ip := func(args ...string) string {
				out, _ := l.Exec(l.Router, append([]string{"ip"}, args...)...)
				return out
			}
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(ip("rule"), "from "+a0+" lookup 200"); time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					cancel()
					t.Fatal("no rule for ppp0")
				}
			}
			nft := func() string { out, _ := l.Exec(l.Router, "nft", "list", "tables"); return out }
			if !strings.Contains(nft(), "table ip uplinkd") {
				t.Fatalf("no nftables table while running: %q", nft())
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			rules, routes, tables := ip("rule"), ip("route", "show", "table", "200"), nft()
			if flush {
				if strings.Contains(rules, "lookup 200") || strings.Contains(routes, "default") || strings.Contains(tables, "uplinkd") {
					t.Errorf("owned state left after --flush-on-exit:\n%s\n%s\n%s", rules, routes, tables)
				}
				return
			}
			if !strings.Contains(rules, "from "+a0+" lookup 200") || !strings.Contains(routes, "default") || !strings.Contains(tables, "table ip uplinkd") {
				t.Errorf("a plain stop removed state:\n%s\n%s\n%s", rules, routes, tables)
			}
		})
	}
}
