package publish

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

func TestCommandPublisher(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	pwned := filepath.Join(dir, "pwned")
	cmd := testutil.Script(t, dir, "pub", `echo "$UPLINKD_EVENT|$UPLINKD_UPLINK|$UPLINKD_IFACE|$UPLINKD_NEW_IP|$UPLINKD_OLD_IP|$UPLINKD_PUBLISHER|$1" >> `+trace+`
exit "${EXIT:-0}"`)
	tests := []struct {
		name    string
		exit    string
		timeout time.Duration
		want    Outcome
		reply   string
	}{
		{"exit 0", "0", 0, OK, "exit 0"},
		{"exit 1 retried", "1", 0, Retry, "exit 1"},
		{"exit 255 retried", "255", 0, Retry, "exit 255"},
		{"EX_USAGE permanent", "64", 0, Permanent, "exit 64"},
		{"EX_CONFIG permanent", "78", 0, Permanent, "exit 78"},
		{"exit 79 retried", "79", 0, Retry, "exit 79"},
		{"timeout retried", "sleep", 200 * time.Millisecond, Retry, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(trace)
			argv := []string{cmd, "$(touch " + pwned + ")"}
			if tt.exit == "sleep" {
				argv = []string{testutil.Script(t, dir, "hang", "exec sleep 60")}
			}
			t.Setenv("EXIT", tt.exit)
			p, err := New(Spec{Uplink: "dsl", Iface: "ppp0", Name: "ssh", Kind: KindCommand, Command: argv, Timeout: tt.timeout}, PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), Request{Addr: addrB, Previous: addrA})
			if res.Outcome != tt.want || res.Reply != tt.reply || (res.Err == nil) != (tt.want == OK) {
				t.Fatalf("got %v %q %v", res.Outcome, res.Reply, res.Err)
			}
			if tt.exit == "sleep" {
				return
			}
			want := []string{"publish|dsl|ppp0|198.51.100.11|198.51.100.10|ssh|$(touch " + pwned + ")"}
			if got := testutil.Lines(t, trace); !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatal("an argument went through a shell")
			}
		})
	}
}

// TestContribPublishSSH runs contrib/hooks/publish-ssh.sh as a command
// publisher with a fake ssh on PATH that records its argv and stdin.
func TestContribPublishSSH(t *testing.T) {
	scriptPath, err := filepath.Abs("../contrib/hooks/publish-ssh.sh")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	argvFile, stdinFile := filepath.Join(bin, "argv"), filepath.Join(bin, "stdin")
	testutil.Script(t, bin, "ssh", `for a in "$@"; do printf '%s\n' "$a"; done > `+argvFile+`
cat > `+stdinFile+`
exit "${FAKE_SSH_EXIT:-0}"`)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	sshArgs := func(key, known, server, file string) []string {
		return []string{"-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known, "--", server,
			"cat > " + file + ".tmp && mv " + file + ".tmp " + file}
	}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		addr     string
		want     Outcome
		wantArgv []string // nil: ssh must not run
	}{
		{"defaults", []string{"me@static.example.net"}, nil, "198.51.100.11", OK,
			sshArgs("/etc/uplinkd/ssh/id_ed25519", "/etc/uplinkd/ssh/known_hosts", "me@static.example.net", "html/server/current_ip")},
		{"key and file from env and argv", []string{"me@static.example.net", "www/ip.txt"},
			map[string]string{"UPLINKD_SSH_KEY": "/root/.ssh/pub_key", "UPLINKD_SSH_KNOWN_HOSTS": "/root/.ssh/known"}, "2001:db8::1", OK,
			sshArgs("/root/.ssh/pub_key", "/root/.ssh/known", "me@static.example.net", "www/ip.txt")},
		{"server unreachable is retried", []string{"me@static.example.net"}, map[string]string{"FAKE_SSH_EXIT": "255"}, "198.51.100.11", Retry,
			sshArgs("/etc/uplinkd/ssh/id_ed25519", "/etc/uplinkd/ssh/known_hosts", "me@static.example.net", "html/server/current_ip")},
		{"no server", nil, nil, "198.51.100.11", Permanent, nil},
		{"option as server", []string{"-oProxyCommand=touch /tmp/x"}, nil, "198.51.100.11", Permanent, nil},
		{"shell syntax in the remote file", []string{"me@h", "ip; rm -rf ~"}, nil, "198.51.100.11", Permanent, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(argvFile)
			os.Remove(stdinFile)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			p, err := New(Spec{Uplink: "dsl", Iface: "ppp0", Name: "static-server", Kind: KindCommand,
				Command: append([]string{scriptPath}, tt.args...)}, PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), Request{Addr: mustAddr(tt.addr)})
			if res.Outcome != tt.want {
				t.Fatalf("got %v %q %v", res.Outcome, res.Reply, res.Err)
			}
			got := testutil.Lines(t, argvFile)
			if !slices.Equal(got, tt.wantArgv) {
				t.Fatalf("ssh argv\n%q\nwant\n%q", got, tt.wantArgv)
			}
			if tt.wantArgv != nil && testutil.ReadFile(t, stdinFile) != tt.addr+"\n" {
				t.Fatalf("ssh stdin %q", testutil.ReadFile(t, stdinFile))
			}
		})
	}
}
