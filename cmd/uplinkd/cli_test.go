package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// TestCheckPredictsRun: for every file `run` refuses, `check` exits
// non-zero with the same lines, and run refuses it with EX_CONFIG before it
// touches anything (so calling run here is safe). Empty files and files
// without [[uplink]] were accepted by check (exit 0) while run refused them.
//
// It also pins `check --condition`, the unit's ExecCondition=: systemd skips
// the unit (not failed) when it exits 1..254 and otherwise runs `run`, which
// fails the unit with 78. So only a missing file or a clean one without an
// uplink is skipped; every broken file reaches run and fails the unit.
func TestCheckPredictsRun(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	daemon := "[daemon]\ncontrol_socket = \"" + sock + "\"\n"
	for _, tc := range []struct {
		name, path string
		stderr     string // in both outputs
		skipped    bool   // check --condition exits 1: the unit is skipped, not failed
	}{
		{"empty file", write("empty.toml", ""), "no [[uplink]]", true},
		{"comments only", write("comments.toml", "# nothing yet\n\n"), "no [[uplink]]", true},
		{"daemon section only", write("daemon.toml", daemon), "no [[uplink]]", true},
		{"allow_no_uplinks false", write("false.toml", daemon+"allow_no_uplinks = false\n"), "allow_no_uplinks = true", true},
		{"lan without uplinks", write("lan.toml", daemon+"\n[lan]\ninterface = \"eth1\"\nnetworks = [\"10.0.0.0/24\"]\n"), "[lan] without any [[uplink]]", false},
		{"no uplinks and a bad key", write("nokey.toml", daemon+"colour = \"blue\"\n"), "nokey.toml:3:1:", false},
		{"syntax error", write("syntax.toml", "[[uplink]\nname = \"x\"\n"), "syntax.toml:1:", false},
		{"unknown key", write("key.toml", goodConfig+"colour = \"blue\"\n"), "key.toml:5:1:", false},
		{"missing file", filepath.Join(dir, "missing.toml"), "no such file", true},
		{"a directory", dir, "uplinkd", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cout, cerr, rout, rerr bytes.Buffer
			ccode := run([]string{"check", tc.path}, &cout, &cerr)
			rcode := run([]string{"run", "--log-format", "text", tc.path}, &rout, &rerr)
			if ccode == 0 {
				t.Errorf("check exit 0 (stdout %q), but run refuses with %d:\n%s", cout.String(), rcode, rerr.String())
			}
			if rcode != exitConfig {
				t.Errorf("run exit %d, want %d; stderr:\n%s", rcode, exitConfig, rerr.String())
			}
			if cerr.String() != rerr.String() {
				t.Errorf("check and run say different things:\n--- check\n%s--- run\n%s", cerr.String(), rerr.String())
			}
			if !strings.Contains(cerr.String(), tc.stderr) {
				t.Errorf("check stderr %q, want %q in it", cerr.String(), tc.stderr)
			}
			if strings.Contains(cerr.String(), "warning: no [[uplink]]") {
				t.Errorf("what run refuses is printed as a warning:\n%s", cerr.String())
			}
			var qout, qerr bytes.Buffer
			qcode := run([]string{"check", "--condition", "--config", tc.path}, &qout, &qerr)
			want := exitOK // run starts, refuses the file with 78: the unit fails
			if tc.skipped {
				want = exitFailure
			}
			if qcode != want {
				t.Errorf("check --condition exit %d, want %d (skipped %v); stdout %q stderr %q", qcode, want, tc.skipped, qout.String(), qerr.String())
			}
			if tc.skipped && !strings.Contains(qout.String(), "uplinkd is not started") {
				t.Errorf("check --condition skips without saying why: %q", qout.String())
			}
		})
	}
	// And what run accepts, check accepts, and the condition lets it run.
	for _, text := range []string{goodConfig, daemon + "allow_no_uplinks = true\n"} {
		var out, errb bytes.Buffer
		path := write("ok.toml", text)
		if code := run([]string{"check", "--strict", path}, &out, &errb); code != 0 {
			t.Errorf("check of %q: exit %d: %s", text, code, errb.String())
		}
		if code := run([]string{"check", "--condition", path}, &out, &errb); code != exitOK {
			t.Errorf("check --condition of %q: exit %d: %s", text, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--condition", "--strict", filepath.Join(dir, "x.toml")}, &out, &errb); code != exitUsage {
		t.Errorf("check --condition --strict: exit %d, want %d (usage)", code, exitUsage)
	}
}

// TestClientCommandsFindTheSocket: every client command takes --config
// and uses its [daemon] control_socket; --socket wins over it; a --config
// given that cannot be read is an error; without --config a missing
// default config means the default socket.
func TestClientCommandsFindTheSocket(t *testing.T) {
	h := &ctlHandler{events: make(chan control.Event, 16)}
	sock := serveControl(t, h)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "custom.toml")
	// A file the daemon would refuse (an unknown key) still names its
	// socket: an admin editing it can still ask for the status.
	text := "[daemon]\ncontrol_socket = \"" + sock + "\"\nbogus = 1\n\n[[uplink]]\nname = \"dsl\"\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	noSocket := filepath.Join(dir, "nosock.toml")
	os.WriteFile(noSocket, []byte("[daemon]\ncontrol_socket = \"-\"\n"), 0o600)
	relative := filepath.Join(dir, "relative.toml")
	os.WriteFile(relative, []byte("[daemon]\ncontrol_socket = \"run/x.sock\"\n"), 0o600)
	broken := filepath.Join(dir, "broken.toml")
	os.WriteFile(broken, []byte("[daemon\ncontrol_socket = 1\n"), 0o600)
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(dir, "other.sock")

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"status via --config", []string{"status", "--config", cfg}, 0, "dsl     ppp0   failed", ""},
		{"status --json via --config", []string{"status", "--json", "--config", cfg}, 0, `"name": "dsl"`, ""},
		{"reload via --config", []string{"reload", "--config", cfg}, 0, "config reloaded", ""},
		{"reconnect via --config", []string{"reconnect", "--config", cfg, "dsl"}, 0, "reconnect of dsl requested", ""},
		{"event via --config", []string{"event", "--config", cfg, "--iface", "ppp0", "--state", "up"}, 0, "", ""},
		{"--socket wins", []string{"status", "--config", cfg, "--socket", elsewhere}, exitNotRunning, "", "no socket at " + elsewhere + ";"},
		{"--socket without a config", []string{"status", "--config", filepath.Join(dir, "none.toml"), "--socket", sock}, 0, "dsl", ""},
		{"--config missing", []string{"status", "--config", filepath.Join(dir, "none.toml")}, exitUsage, "", "uplinkd status: --config " + filepath.Join(dir, "none.toml") + ": no such file or directory (or name the socket with --socket)\n"},
		{"--config is a FIFO", []string{"reload", "--config", fifo}, exitUsage, "", fifo + ": not a regular file"},
		{"--config with a syntax error", []string{"status", "--config", broken}, exitUsage, "", broken + ":1:"},
		{"--config with a relative socket", []string{"status", "--config", relative}, exitUsage, "", "is not an absolute path"},
		{"control_socket = -", []string{"status", "--config", noSocket}, exitNotRunning, "", "the daemon runs without a control socket"},
		{"not running, socket from the config", []string{"status", "--config", writeConfig(t, "[daemon]\ncontrol_socket = \""+elsewhere+"\"\n")}, exitNotRunning, "",
			"uplinkd is not running: no socket at " + elsewhere + " (control_socket of "},
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
			if tc.stderr == "" && errb.Len() > 0 || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q, want %q", errb.String(), tc.stderr)
			}
			if strings.Count(errb.String(), "\n") > 1 {
				t.Errorf("more than one line on stderr:\n%s", errb.String())
			}
		})
	}
}

// TestFindSocketDefault: without --config, a missing default config means
// the default socket, and the message says so when nothing answers there.
func TestFindSocketDefault(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "uplinkd.toml")
	got, err := findSocket(missing, false, "", false)
	if err != nil || got.path != "/run/uplinkd/uplinkd.sock" || !strings.Contains(got.fallback, "no such file") {
		t.Fatalf("findSocket = %+v, %v; want the default socket with the reason", got, err)
	}
	if _, err := findSocket(missing, true, "", false); err == nil {
		t.Error("an explicit --config that is missing is accepted")
	}
	code, msg := explain(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}, got)
	if code != exitNotRunning || !strings.Contains(msg, "(the default socket: "+missing+": no such file or directory)") {
		t.Errorf("explain = %d %q", code, msg)
	}
}

// TestExplainDeadline: a deadline that ran out before any answer is
// "did not answer in time" only where a socket exists; with none it is
// "not running" (a busy box can spend event's 90 ms before the first
// connect: TestControlCommands failed so in a stress-test run).
func TestExplainDeadline(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "present.sock")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"no socket", filepath.Join(dir, "missing.sock"), "uplinkd is not running: no socket at "},
		{"socket there", present, "did not answer in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, err := range []error{context.DeadlineExceeded, fmt.Errorf("dial: %w", context.DeadlineExceeded)} {
				code, msg := explain(err, socketTarget{path: tc.path, from: "--socket"})
				if code != exitNotRunning || !strings.Contains(msg, tc.want) {
					t.Errorf("explain(%v) = %d %q, want exit %d and %q", err, code, msg, exitNotRunning, tc.want)
				}
			}
		})
	}
}

// TestGarbageOnTheSocket: something that is not uplinkd on the socket (an
// HTTP server, a daemon that closes at once) gives one line and exit 5;
// nothing that listens gives exit 3.
func TestGarbageOnTheSocket(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, reply string
	}{
		{"http", "HTTP/1.0 400 Bad Request\r\n\r\n"},
		{"closes without a word", ""},
		{"other protocol version", `{"v":7,"ok":true}` + "\n"},
		{"json of another shape", `[1,2,3]` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".sock")
			answerEvery(t, path, tc.reply)
			for _, args := range [][]string{{"status"}, {"reload"}, {"reconnect", "dsl"}} {
				var out, errb bytes.Buffer
				code := run(append(args, "--socket", path), &out, &errb)
				if code != exitProtocol || strings.Count(errb.String(), "\n") != 1 ||
					!strings.Contains(errb.String(), path+" answered, but not as uplinkd does") {
					t.Errorf("%s: exit %d, stderr %q; want %d and one line", args[0], code, errb.String(), exitProtocol)
				}
			}
		})
	}
	// A socket file nothing listens on (a daemon killed with -9).
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--socket", stale}, &out, &errb); code != exitNotRunning ||
		!strings.Contains(errb.String(), "nothing listens on "+stale+" (a stale socket); start it with: systemctl start uplinkd") {
		t.Errorf("stale socket: exit %d, stderr %q", code, errb.String())
	}
}

// TestRoleEventAnswers: an `event --role` the daemon could not read (its
// request deadline passed while a loaded client was still writing) or had no
// slot for was not delivered, and says so with exit 3; an event the daemon
// read and refused is that refusal, exit 1.
func TestRoleEventAnswers(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, reply string
		code        int
		prefix      string
	}{
		{"unread", `{"v":1,"ok":false,"error":"request not complete within 500ms","unread":true}` + "\n", exitNotRunning, "uplinkd event: role master NOT delivered: request not complete within 500ms\n"},
		{"refused", `{"v":1,"ok":false,"error":"no such role"}` + "\n", exitFailure, "uplinkd event: no such role\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".sock")
			answerEvery(t, path, tc.reply)
			var out, errb bytes.Buffer
			code := run([]string{"event", "--socket", path, "--role", "master"}, &out, &errb)
			if code != tc.code || errb.String() != tc.prefix {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), tc.code, tc.prefix)
			}
		})
	}
}

// answerEvery listens on path until the test ends and answers every
// connection with reply, whatever it sent, then closes it.
func answerEvery(t *testing.T, path, reply string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(reply))
			c.Close()
		}
	}()
}

// TestDelegatedEventWaits: a delegation event waits for a slow daemon
// (delegatedDeadline) where an interface event gives up within its 90 ms
// and is dropped with a warning.
func TestDelegatedEventWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				time.Sleep(300 * time.Millisecond) // the slow daemon under test, not a wait of the test
				c.Write([]byte(`{"v":1,"ok":true}` + "\n"))
			}()
		}
	}()
	var out, errb bytes.Buffer
	if code := run([]string{"event", "--socket", path, "--iface", "ppp0", "--delegated", "2001:db8:10::/56"}, &out, &errb); code != exitOK || errb.Len() != 0 {
		t.Errorf("delegation event: exit %d, stderr %q; want 0 and nothing", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"event", "--socket", path, "--iface", "ppp0", "--state", "down"}, &out, &errb); code != exitOK || !strings.Contains(errb.String(), "warning: event dropped") {
		t.Errorf("interface event: exit %d, stderr %q; want 0 and the dropped warning", code, errb.String())
	}
}
