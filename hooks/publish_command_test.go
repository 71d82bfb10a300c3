package hooks

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestCommandPublisher(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	pwned := filepath.Join(dir, "pwned")
	cmd := script(t, dir, "pub", `echo "$UPLINKD_EVENT|$UPLINKD_UPLINK|$UPLINKD_IFACE|$UPLINKD_NEW_IP|$UPLINKD_OLD_IP|$UPLINKD_PUBLISHER|$1" >> `+trace+`
exit "${EXIT:-0}"`)
	tests := []struct {
		name    string
		exit    string
		timeout time.Duration
		want    PublishOutcome
		reply   string
	}{
		{"exit 0", "0", 0, PublishOK, "exit 0"},
		{"exit 1 retried", "1", 0, PublishRetry, "exit 1"},
		{"exit 255 retried", "255", 0, PublishRetry, "exit 255"},
		{"EX_USAGE permanent", "64", 0, PublishPermanent, "exit 64"},
		{"EX_CONFIG permanent", "78", 0, PublishPermanent, "exit 78"},
		{"exit 79 retried", "79", 0, PublishRetry, "exit 79"},
		{"timeout retried", "sleep", 200 * time.Millisecond, PublishRetry, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(trace)
			argv := []string{cmd, "$(touch " + pwned + ")"}
			if tt.exit == "sleep" {
				argv = []string{script(t, dir, "hang", "exec sleep 60")}
			}
			t.Setenv("EXIT", tt.exit)
			p, err := NewPublisher(PublishSpec{Uplink: "dsl", Iface: "ppp0", Name: "ssh", Kind: PublishCommand, Command: argv, Timeout: tt.timeout}, PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), PublishRequest{Addr: addrB, Previous: addrA})
			if res.Outcome != tt.want || res.Reply != tt.reply || (res.Err == nil) != (tt.want == PublishOK) {
				t.Fatalf("got %v %q %v", res.Outcome, res.Reply, res.Err)
			}
			if tt.exit == "sleep" {
				return
			}
			want := []string{"publish|dsl|ppp0|198.51.100.11|198.51.100.10|ssh|$(touch " + pwned + ")"}
			if got := lines(t, trace); !slices.Equal(got, want) {
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
	script(t, bin, "ssh", `for a in "$@"; do printf '%s\n' "$a"; done > `+argvFile+`
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
		want     PublishOutcome
		wantArgv []string // nil: ssh must not run
	}{
		{"defaults", []string{"me@static.example.net"}, nil, "198.51.100.11", PublishOK,
			sshArgs("/etc/uplinkd/ssh/id_ed25519", "/etc/uplinkd/ssh/known_hosts", "me@static.example.net", "html/server/current_ip")},
		{"key and file from env and argv", []string{"me@static.example.net", "www/ip.txt"},
			map[string]string{"UPLINKD_SSH_KEY": "/root/.ssh/pub_key", "UPLINKD_SSH_KNOWN_HOSTS": "/root/.ssh/known"}, "2001:db8::1", PublishOK,
			sshArgs("/root/.ssh/pub_key", "/root/.ssh/known", "me@static.example.net", "www/ip.txt")},
		{"server unreachable is retried", []string{"me@static.example.net"}, map[string]string{"FAKE_SSH_EXIT": "255"}, "198.51.100.11", PublishRetry,
			sshArgs("/etc/uplinkd/ssh/id_ed25519", "/etc/uplinkd/ssh/known_hosts", "me@static.example.net", "html/server/current_ip")},
		{"no server", nil, nil, "198.51.100.11", PublishPermanent, nil},
		{"option as server", []string{"-oProxyCommand=touch /tmp/x"}, nil, "198.51.100.11", PublishPermanent, nil},
		{"shell syntax in the remote file", []string{"me@h", "ip; rm -rf ~"}, nil, "198.51.100.11", PublishPermanent, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(argvFile)
			os.Remove(stdinFile)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			p, err := NewPublisher(PublishSpec{Uplink: "dsl", Iface: "ppp0", Name: "static-server", Kind: PublishCommand,
				Command: append([]string{scriptPath}, tt.args...)}, PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), PublishRequest{Addr: mustAddr(tt.addr)})
			if res.Outcome != tt.want {
				t.Fatalf("got %v %q %v", res.Outcome, res.Reply, res.Err)
			}
			got := lines(t, argvFile)
			if !slices.Equal(got, tt.wantArgv) {
				t.Fatalf("ssh argv\n%q\nwant\n%q", got, tt.wantArgv)
			}
			if tt.wantArgv != nil && readFile(t, stdinFile) != tt.addr+"\n" {
				t.Fatalf("ssh stdin %q", readFile(t, stdinFile))
			}
		})
	}
}
