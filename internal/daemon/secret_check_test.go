package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckConfigSecretFIFO (issue 17.2): `uplinkd check` (CheckConfig,
// also run at start and on every reload) refuses a password_file that is a
// FIFO at once instead of blocking in open(2) for ever.
func TestCheckConfigSecretFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "dyn.secret")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "uplinkd.toml")
	cfgText := fakeConfig("", "") + `
[[uplink]]
name = "ppp2"
kind = "ppp"
table = 202
rule_priority = 400
  [[uplink.publish]]
  kind = "dyndns2"
  server = "https://dyn.example.net/"
  hostname = "home.example.net"
  username = "gw"
  password_file = "` + fifo + `"
`
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- CheckConfig(cfg) }()
	select {
	case err := <-done:
		if !IsConfigError(err) || !strings.Contains(err.Error(), "password_file "+fifo+": not a regular file") {
			t.Fatalf("CheckConfig: %v", err)
		}
	case <-time.After(10 * time.Second):
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close() // let the blocked open return
		}
		t.Fatal("CheckConfig blocks on a FIFO password_file")
	}
}
