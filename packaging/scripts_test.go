package packaging_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fake behaviours of the stand-in `uplinkd` the scripts find first on PATH.
const (
	fakeOK       = "exit 0"
	fakeFail     = "echo 'uplinkd: no daemon' >&2; exit 3"
	fakeHang     = "exec sleep 60"
	fakeStubborn = "trap '' TERM; sleep 60" // ignores timeout's SIGTERM; needs the -k SIGKILL
)

// fakeUplinkd writes an `uplinkd` into a new directory that records its
// argv (NUL-separated) and then behaves as body says. It returns the
// directory (to put first on PATH) and a function that returns the recorded
// calls' argv, nil when it was not called.
func fakeUplinkd(t *testing.T, body string) (string, func() []string) {
	t.Helper()
	dir := t.TempDir()
	argv := filepath.Join(dir, "argv")
	script := "#!/bin/sh\nprintf '%s\\0' \"$@\" >> '" + argv + "'\nprintf '\\n' >> '" + argv + "'\n" + body + "\n"
	if err := os.WriteFile(filepath.Join(dir, "uplinkd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, func() []string {
		data, err := os.ReadFile(argv)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		calls := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
		if len(calls) != 1 {
			t.Fatalf("uplinkd called %d times, want once: %q", len(calls), data)
		}
		var args []string
		for _, a := range bytes.Split(bytes.TrimSuffix(calls[0], []byte{0}), []byte{0}) {
			args = append(args, string(a))
		}
		return args
	}
}

// runScript runs script (directly, through its #! line) with exactly env
// plus PATH=pathDir:/usr/bin:/bin, and fails the test unless it exits 0.
// The deadline only proves that the script finished; it is not a speed test.
func runScript(t *testing.T, script, pathDir string, env, args []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Env = append([]string{"PATH=" + pathDir + ":/usr/bin:/bin"}, env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within 30 s (it must never block its caller); output:\n%s", script, out)
	}
	if err != nil {
		t.Fatalf("%s: %v (it must always exit 0); output:\n%s", script, err, out)
	}
}

// pppArgs are the arguments Debian's /etc/ppp/ip-up passes on to the
// ip-up.d scripts (run-parts --arg=...): interface, tty, speed, local
// address, remote address, ipparam. With rp-pppoe the tty is the ethernet
// interface.
var pppArgs = []string{"ppp0", "eth0", "0", "198.51.100.7", "203.0.113.1", ""}

// pppEnv is what Debian's /etc/ppp/ip-up exports from those arguments.
var pppEnv = []string{
	"PPP_IFACE=ppp0", "PPP_TTY=eth0", "PPP_SPEED=0", "PPP_LOCAL=198.51.100.7",
	"PPP_REMOTE=203.0.113.1", "PPP_IPPARAM=", "PPP_TTYNAME=eth0",
}

func TestScriptsPassWhatTheirCallerSays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		env    []string
		args   []string
		want   []string // nil: uplinkd must not be called
	}{
		{
			name: "ppp up, Debian's ip-up environment and arguments", script: "ppp/ip-up.d/uplinkd",
			env: pppEnv, args: pppArgs,
			want: []string{"event", "--iface=ppp0", "--state=up", "--local=198.51.100.7", "--remote=203.0.113.1"},
		},
		{
			name: "ppp down, Debian's ip-down environment and arguments", script: "ppp/ip-down.d/uplinkd",
			env: pppEnv, args: pppArgs,
			want: []string{"event", "--iface=ppp0", "--state=down", "--local=198.51.100.7", "--remote=203.0.113.1"},
		},
		{
			name: "ppp up, positional arguments only (ip-up.local calling it)", script: "ppp/ip-up.d/uplinkd",
			args: []string{"ppp1", "eth1", "0", "198.51.100.9", "203.0.113.1", "isp2"},
			want: []string{"event", "--iface=ppp1", "--state=up", "--local=198.51.100.9", "--remote=203.0.113.1"},
		},
		{
			name: "ppp down, positional arguments only", script: "ppp/ip-down.d/uplinkd",
			args: []string{"ppp1", "eth1", "0", "198.51.100.9", "203.0.113.1"},
			want: []string{"event", "--iface=ppp1", "--state=down", "--local=198.51.100.9", "--remote=203.0.113.1"},
		},
		{
			name: "ppp environment wins over arguments", script: "ppp/ip-up.d/uplinkd",
			env:  []string{"PPP_IFACE=ppp2", "PPP_LOCAL=192.0.2.2", "PPP_REMOTE=192.0.2.1"},
			args: pppArgs,
			want: []string{"event", "--iface=ppp2", "--state=up", "--local=192.0.2.2", "--remote=192.0.2.1"},
		},
		{
			name: "ppp interface without addresses", script: "ppp/ip-down.d/uplinkd",
			env:  []string{"PPP_IFACE=ppp0"},
			want: []string{"event", "--iface=ppp0", "--state=down"},
		},
		{name: "ppp without any interface", script: "ppp/ip-up.d/uplinkd"},
		{
			name: "ifupdown static address with prefix", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=eth1", "LOGICAL=eth1", "ADDRFAM=inet", "METHOD=static", "MODE=start",
				"PHASE=post-up", "VERBOSITY=0", "IF_ADDRESS=192.0.2.2/24", "IF_GATEWAY=192.0.2.1"},
			want: []string{"event", "--iface=eth1", "--state=up", "--local=192.0.2.2"},
		},
		{
			name: "ifupdown static address without prefix", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=eth1", "ADDRFAM=inet", "METHOD=static", "MODE=start", "PHASE=post-up",
				"IF_ADDRESS=192.0.2.2", "IF_NETMASK=255.255.255.0"},
			want: []string{"event", "--iface=eth1", "--state=up", "--local=192.0.2.2"},
		},
		{
			name: "ifupdown dhcp", script: "ifupdown/if-up.d/uplinkd",
			env:  []string{"IFACE=wlan0", "ADDRFAM=inet", "METHOD=dhcp", "MODE=start", "PHASE=post-up"},
			want: []string{"event", "--iface=wlan0", "--state=up"},
		},
		{
			name: "ifupdown inet6 stanza: no IPv4 address to pass", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=eth1", "ADDRFAM=inet6", "METHOD=static", "MODE=start", "PHASE=post-up",
				"IF_ADDRESS=2001:db8::2/64"},
			want: []string{"event", "--iface=eth1", "--state=up"},
		},
		{
			name: "ifupdown down", script: "ifupdown/if-post-down.d/uplinkd",
			env: []string{"IFACE=eth1", "ADDRFAM=inet", "METHOD=static", "MODE=stop", "PHASE=post-down",
				"IF_ADDRESS=192.0.2.2/24"},
			want: []string{"event", "--iface=eth1", "--state=down", "--local=192.0.2.2"},
		},
		{
			name: "ifupdown loopback", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=lo", "ADDRFAM=inet", "METHOD=loopback", "MODE=start", "PHASE=post-up"},
		},
		{
			name: "ifupdown -a pseudo interface", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=--all", "LOGICAL=auto", "ADDRFAM=meta", "METHOD=none", "MODE=start", "PHASE=post-up"},
		},
		{
			name: "ifdown -a pseudo interface", script: "ifupdown/if-post-down.d/uplinkd",
			env: []string{"IFACE=--all", "LOGICAL=auto", "ADDRFAM=meta", "METHOD=none", "MODE=stop", "PHASE=post-down"},
		},
		{
			// pppd's ip-up.d script reports ppp0 once it really is up.
			name: "ifupdown ppp stanza names a peer, not an interface", script: "ifupdown/if-up.d/uplinkd",
			env: []string{"IFACE=dsl-provider", "ADDRFAM=inet", "METHOD=ppp", "MODE=start", "PHASE=post-up",
				"IF_PROVIDER=dsl-provider"},
		},
		{
			name: "networkd-dispatcher routable", script: "networkd-dispatcher/routable.d/uplinkd",
			env: []string{"IFACE=wlan0", "STATE=routable", "ADDR=192.0.2.9", "IP_ADDRS=192.0.2.9 192.0.2.10",
				"ESSID=home", "AdministrativeState=configured", "OperationalState=routable"},
			want: []string{"event", "--iface=wlan0", "--state=up", "--local=192.0.2.9"},
		},
		{
			name: "networkd-dispatcher routable without IPv4", script: "networkd-dispatcher/routable.d/uplinkd",
			env:  []string{"IFACE=eth0", "STATE=routable", "IP6_ADDRS=2001:db8::9"},
			want: []string{"event", "--iface=eth0", "--state=up"},
		},
		{
			name: "networkd-dispatcher off", script: "networkd-dispatcher/off.d/uplinkd",
			env:  []string{"IFACE=eth0", "STATE=off", "AdministrativeState=configured", "OperationalState=off"},
			want: []string{"event", "--iface=eth0", "--state=down"},
		},
		{
			name: "networkd-dispatcher no-carrier (same file)", script: "networkd-dispatcher/off.d/uplinkd",
			env:  []string{"IFACE=eth0", "STATE=no-carrier"},
			want: []string{"event", "--iface=eth0", "--state=down"},
		},
		{
			name: "networkd-dispatcher degraded (same file)", script: "networkd-dispatcher/off.d/uplinkd",
			env:  []string{"IFACE=wlan0", "STATE=degraded", "ADDR="},
			want: []string{"event", "--iface=wlan0", "--state=down"},
		},
		{
			name: "networkd-dispatcher loopback", script: "networkd-dispatcher/routable.d/uplinkd",
			env: []string{"IFACE=lo", "STATE=routable"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, calls := fakeUplinkd(t, fakeOK)
			runScript(t, tc.script, dir, tc.env, tc.args)
			if got := calls(); !slices.Equal(got, tc.want) {
				t.Errorf("uplinkd argv = %q, want %q", got, tc.want)
			}
		})
	}
}

// everyScript is each script with an environment that makes it call uplinkd.
var everyScript = []struct {
	script string
	env    func(iface string) []string
}{
	{"ppp/ip-up.d/uplinkd", func(i string) []string { return []string{"PPP_IFACE=" + i, "PPP_LOCAL=" + i} }},
	{"ppp/ip-down.d/uplinkd", func(i string) []string { return []string{"PPP_IFACE=" + i, "PPP_REMOTE=" + i} }},
	{"ifupdown/if-up.d/uplinkd", func(i string) []string {
		return []string{"IFACE=" + i, "ADDRFAM=inet", "METHOD=static", "IF_ADDRESS=" + i}
	}},
	{"ifupdown/if-post-down.d/uplinkd", func(i string) []string {
		return []string{"IFACE=" + i, "ADDRFAM=inet", "METHOD=static", "IF_ADDRESS=" + i}
	}},
	{"networkd-dispatcher/routable.d/uplinkd", func(i string) []string { return []string{"IFACE=" + i, "ADDR=" + i} }},
	{"networkd-dispatcher/off.d/uplinkd", func(i string) []string { return []string{"IFACE=" + i} }},
}

func TestScriptsExitZeroWhateverUplinkdDoes(t *testing.T) {
	for _, s := range everyScript {
		for _, fake := range []struct{ name, body string }{
			{"fails", fakeFail},
			{"hangs", fakeHang},
			{"hangs and ignores SIGTERM", fakeStubborn},
		} {
			t.Run(s.script+"/"+fake.name, func(t *testing.T) {
				t.Parallel()
				dir, calls := fakeUplinkd(t, fake.body)
				runScript(t, s.script, dir, s.env("ppp0"), nil)
				if calls() == nil {
					t.Error("uplinkd was not called")
				}
			})
		}
		t.Run(s.script+"/not installed", func(t *testing.T) {
			// The scripts add /usr/local/sbin, /usr/sbin and /sbin to PATH.
			for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
				if _, err := os.Stat(filepath.Join(d, "uplinkd")); err == nil {
					t.Skipf("a real uplinkd is installed in %s", d)
				}
			}
			runScript(t, s.script, t.TempDir(), s.env("ppp0"), nil)
		})
	}
}

func TestScriptsPassHostileValuesLiterally(t *testing.T) {
	for _, s := range everyScript {
		t.Run(s.script, func(t *testing.T) {
			canary := filepath.Join(t.TempDir(), "pwned")
			for _, hostile := range []string{
				"ppp0; touch " + canary,
				"$(touch " + canary + ")",
				"`touch " + canary + "`",
				"ppp0 --state=down",
				"-x' \"; touch " + canary + " #",
				"*",
			} {
				dir, calls := fakeUplinkd(t, fakeOK)
				runScript(t, s.script, dir, s.env(hostile), nil)
				got := calls()
				if !slices.Contains(got, "--iface="+hostile) {
					t.Errorf("value %q: argv %q does not hold it as one argument", hostile, got)
				}
				if _, err := os.Stat(canary); err == nil {
					t.Fatalf("value %q: the canary file was created, the script ran it", hostile)
				}
			}
		})
	}
}

func TestScriptsAreExecutableAndNamedForRunParts(t *testing.T) {
	// run-parts (ppp, ifupdown) ignores names with dots and non-executables.
	scripts, err := filepath.Glob("*/*.d/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) != 6 {
		t.Fatalf("found %d hook scripts, want 6: %q", len(scripts), scripts)
	}
	for _, s := range scripts {
		fi, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", s, fi.Mode().Perm())
		}
		if strings.ContainsAny(filepath.Base(s), ".") {
			t.Errorf("%s: run-parts skips names with dots", s)
		}
	}
}
