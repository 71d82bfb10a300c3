package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// inMountNamespace runs a shell script as root in a private mount namespace
// (unshare -m), so it can put tmpfs over /etc/ppp, /run or /var/lib and run
// real Debian scripts against them without touching the host's files. The
// namespace and its mounts vanish with the process. Only the mount namespace
// is new: nothing here touches any network state.
func inMountNamespace(t *testing.T, env []string, script string, args ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare missing (util-linux, scripts/deps.sh): %v", err)
	}
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-euc", script, "sh"}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a mount namespace: %v\n%s", err, out)
	}
	return string(out)
}

// TestDebianPPPScriptsRunOurs runs Debian's own /etc/ppp/ip-up and ip-down
// (from the ppp package) the way pppd does, with an empty environment, in a
// mount namespace whose /etc/ppp holds them and our scripts, and whose
// /usr/local/sbin (first on the PATH ip-up sets) holds a fake uplinkd.
func TestDebianPPPScriptsRunOurs(t *testing.T) {
	for _, f := range []string{"/etc/ppp/ip-up", "/etc/ppp/ip-down"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: install the ppp package (scripts/deps.sh): %v", f, err)
		}
	}
	for _, tc := range []struct {
		name  string
		local string // /etc/ppp/ip-up.local and ip-down.local, "" for none
		want  func(state string) []string
	}{
		{
			name: "run-parts of ip-up.d",
			want: func(state string) []string {
				return []string{"event", "--iface=ppp0", "--state=" + state, "--local=198.51.100.7", "--remote=203.0.113.1"}
			},
		},
		{
			// What docs/install.md says to do when ip-up.local exists.
			name:  "ip-up.local calling our script",
			local: "#!/bin/sh\nexec /etc/ppp/$(basename \"$0\" .local).d/uplinkd \"$@\"\n",
			want: func(state string) []string {
				return []string{"event", "--iface=ppp0", "--state=" + state, "--local=198.51.100.7", "--remote=203.0.113.1"}
			},
		},
		{
			// The pitfall docs/install.md warns about: Debian skips ip-up.d.
			name:  "ip-up.local of its own",
			local: "#!/bin/sh\nexit 0\n",
			want:  func(string) []string { return nil },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, state := range []string{"up", "down"} {
				fake, calls := fakeUplinkd(t, fakeOK)
				stage := t.TempDir()
				for _, f := range []string{"ip-up", "ip-down"} {
					copyFile(t, filepath.Join("/etc/ppp", f), filepath.Join(stage, f), 0o755)
				}
				if tc.local != "" {
					for _, f := range []string{"ip-up.local", "ip-down.local"} {
						if err := os.WriteFile(filepath.Join(stage, f), []byte(tc.local), 0o755); err != nil {
							t.Fatal(err)
						}
					}
				}
				script, err := filepath.Abs(filepath.Join("ppp", "ip-"+state+".d", "uplinkd"))
				if err != nil {
					t.Fatal(err)
				}
				inMountNamespace(t, nil, `
					stage=$1 script=$2 fake=$3 state=$4
					mount -t tmpfs uplinkd-test /etc/ppp
					cp -a "$stage"/. /etc/ppp/
					mkdir /etc/ppp/ip-$state.d
					cp "$script" /etc/ppp/ip-$state.d/uplinkd
					mount -t tmpfs uplinkd-test /usr/local/sbin
					cp "$fake"/uplinkd /usr/local/sbin/uplinkd
					# pppd runs ip-up with an empty environment and these arguments.
					env -i /etc/ppp/ip-$state ppp0 eth0 0 198.51.100.7 203.0.113.1 ""
				`, stage, script, fake, state)
				if got, want := calls(), tc.want(state); !slices.Equal(got, want) {
					t.Errorf("%s: uplinkd argv = %q, want %q", state, got, want)
				}
			}
		})
	}
}

// TestMaintainerScripts runs the package's postinst, prerm and postrm with
// dpkg's arguments against fake deb-systemd-helper, deb-systemd-invoke and
// systemctl that log their arguments, in a mount namespace where
// /run/systemd/system exists (systemd is "running") and /var/lib/uplinkd
// is a scratch copy.
func TestMaintainerScripts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		script     string
		args       []string
		wasEnabled string
		want       []string
		stateGone  bool
	}{
		{
			name: "first install: enabled, not started", script: "postinst", args: []string{"configure", ""},
			wasEnabled: "yes",
			want: []string{
				"deb-systemd-helper unmask uplinkd.service",
				"deb-systemd-helper --quiet was-enabled uplinkd.service",
				"deb-systemd-helper enable uplinkd.service",
				"systemctl --system daemon-reload",
			},
		},
		{
			name: "upgrade: restarted if running", script: "postinst", args: []string{"configure", "0.2.0"},
			wasEnabled: "yes",
			want: []string{
				"deb-systemd-helper unmask uplinkd.service",
				"deb-systemd-helper --quiet was-enabled uplinkd.service",
				"deb-systemd-helper enable uplinkd.service",
				"systemctl --system daemon-reload",
				"deb-systemd-invoke try-restart uplinkd.service",
			},
		},
		{
			name: "upgrade after the admin disabled it: stays disabled", script: "postinst",
			args: []string{"configure", "0.2.0"}, wasEnabled: "no",
			want: []string{
				"deb-systemd-helper unmask uplinkd.service",
				"deb-systemd-helper --quiet was-enabled uplinkd.service",
				"deb-systemd-helper update-state uplinkd.service",
				"systemctl --system daemon-reload",
				"deb-systemd-invoke try-restart uplinkd.service",
			},
		},
		{
			name: "remove: stopped", script: "prerm", args: []string{"remove"},
			want: []string{"deb-systemd-invoke stop uplinkd.service"},
		},
		{
			name: "upgrade: not stopped by prerm", script: "prerm", args: []string{"upgrade", "0.3.0"},
		},
		{
			name: "remove: state kept, unit masked", script: "postrm", args: []string{"remove"},
			want: []string{"systemctl --system daemon-reload", "deb-systemd-helper mask uplinkd.service"},
		},
		{
			name: "purge: state removed", script: "postrm", args: []string{"purge"},
			want:      []string{"deb-systemd-helper purge uplinkd.service", "deb-systemd-helper unmask uplinkd.service"},
			stateGone: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakes := t.TempDir()
			log := filepath.Join(t.TempDir(), "log")
			for _, tool := range []string{"systemctl", "deb-systemd-helper", "deb-systemd-invoke"} {
				body := "#!/bin/sh\necho \"${0##*/} $*\" >> '" + log + "'\n" +
					"case \"$*\" in *was-enabled*) [ \"$FAKE_WAS_ENABLED\" = yes ] ;; esac\n"
				if err := os.WriteFile(filepath.Join(fakes, tool), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// Only the fakes and rm: the host's own deb-systemd-helper and
			// systemctl must not be found.
			if err := os.Symlink("/bin/rm", filepath.Join(fakes, "rm")); err != nil {
				t.Fatal(err)
			}
			script, err := filepath.Abs(filepath.Join("scripts", tc.script))
			if err != nil {
				t.Fatal(err)
			}
			out := inMountNamespace(t, []string{"PATH=/usr/bin:/bin"}, `
				fakes=$1 wasenabled=$2 script=$3; shift 3
				mount -t tmpfs uplinkd-test /run
				mkdir -p /run/systemd/system
				mount -t tmpfs uplinkd-test /var/lib
				mkdir /var/lib/uplinkd && echo state > /var/lib/uplinkd/state
				PATH=$fakes FAKE_WAS_ENABLED=$wasenabled /bin/sh "$script" "$@"
				if [ -e /var/lib/uplinkd ]; then echo state-kept; else echo state-gone; fi
			`, append([]string{fakes, tc.wasEnabled, script}, tc.args...)...)
			data, err := os.ReadFile(log)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(data) == 0 {
				got = nil
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s %q ran\n  %q\nwant\n  %q", tc.script, tc.args, got, tc.want)
			}
			if gone := strings.Contains(out, "state-gone"); gone != tc.stateGone {
				t.Errorf("/var/lib/uplinkd removed = %v, want %v (%s)", gone, tc.stateGone, out)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}
