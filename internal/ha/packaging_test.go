package ha

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const notifyScript = "../../packaging/keepalived/uplinkd-notify"

// TestNotifyScript runs the shipped keepalived notify script with a stand-in
// uplinkd that records its argv: keepalived's states map to roles, the role
// travels on argv, and the script exits 0 whatever happens.
func TestNotifyScript(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "argv")
	fake := filepath.Join(dir, "uplinkd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s|' \"$@\" > \""+out+"\"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string // recorded argv; "" when uplinkd must not run
	}{
		{[]string{"--uplinkd", fake, "INSTANCE", "LAN", "MASTER", "110"}, "event|--role|master|"},
		{[]string{"--uplinkd", fake, "--socket", "/run/x.sock", "INSTANCE", "LAN", "BACKUP", "100"}, "event|--role|backup|--socket|/run/x.sock|"},
		{[]string{"--uplinkd", fake, "INSTANCE", "LAN", "FAULT", "0"}, "event|--role|fault|"},
		{[]string{"--uplinkd", fake, "INSTANCE", "LAN", "STOP", "110"}, "event|--role|fault|"},
		{[]string{"--uplinkd", fake, "GROUP", "G", "DELETED"}, "event|--role|fault|"},
		{[]string{"--uplinkd", fake, "INSTANCE", "LAN", "master; rm -rf /"}, ""},
		{[]string{"--uplinkd", fake, "INSTANCE"}, ""},
		{[]string{"--uplinkd"}, ""},
		{[]string{"--uplinkd", filepath.Join(dir, "missing"), "INSTANCE", "LAN", "MASTER"}, ""},
	}
	for _, tt := range tests {
		_ = os.Remove(out)
		cmd := exec.Command(notifyScript, tt.args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v: exit %v (%s); the script must always exit 0", tt.args, err, b)
		}
		got, _ := os.ReadFile(out)
		if string(got) != tt.want {
			t.Errorf("%v: uplinkd ran with %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestKeepalivedExample: the shipped keepalived.conf passes keepalived's own
// configuration test.
func TestKeepalivedExample(t *testing.T) {
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/keepalived"); err != nil {
			t.Skip("keepalived not installed (scripts/deps.sh installs it)")
		}
	}
	out, err := exec.Command(bin, "-t", "-f", "../../packaging/keepalived/keepalived.conf", "-l").CombinedOutput()
	if err != nil || strings.Contains(string(out), "Unknown keyword") {
		t.Errorf("keepalived --config-test: %v\n%s", err, out)
	}
}
