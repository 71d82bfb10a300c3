package publish

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecretFileRefusals (issue 17.2, 17.8): real files of every kind a
// password_file or key_file might name. None may block (a FIFO without a
// writer blocked open(2) for ever), and only a regular file owned by root
// or the daemon's user, without group or other access, is read.
func TestSecretFileRefusals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a file to another user")
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, p string)
		want  string // "" = accepted
	}{
		{"regular 0600", func(t *testing.T, p string) { write(t, p, "pw\n", 0o600) }, ""},
		{"regular 0400", func(t *testing.T, p string) { write(t, p, "pw\n", 0o400) }, ""},
		{"fifo without a writer", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"symlink to a good file", func(t *testing.T, p string) {
			write(t, p+".real", "pw\n", 0o600)
			if err := os.Symlink(p+".real", p); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"directory", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"owned by another user, 0600", func(t *testing.T, p string) {
			write(t, p, "pw\n", 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by uid 65534"},
		{"group readable 0640", func(t *testing.T, p string) { write(t, p, "pw\n", 0o640) }, "mode 0640"},
		{"others writable 0602", func(t *testing.T, p string) { write(t, p, "pw\n", 0o602) }, "mode 0602"},
		{"huge (sparse, 1 TiB)", func(t *testing.T, p string) {
			write(t, p, "pw\n", 0o600)
			if err := os.Truncate(p, 1<<40); err != nil {
				t.Fatal(err)
			}
		}, "larger than"},
		{"missing", func(t *testing.T, p string) {}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "secret")
			tt.setup(t, p)
			for _, kind := range []string{"password_file", "key_file"} {
				type out struct {
					b   []byte
					err error
				}
				done := make(chan out, 1)
				go func() { b, err := readSecretFile(kind, p); done <- out{b, err} }()
				var o out
				select {
				case o = <-done:
				case <-time.After(10 * time.Second):
					// Unblock the reader so the test binary can end.
					if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
					t.Fatalf("%s: reading %s blocks", kind, tt.name)
				}
				switch {
				case tt.want == "" && (o.err != nil || string(o.b) != "pw\n"):
					t.Fatalf("%s: got %q, %v; want the file read", kind, o.b, o.err)
				case tt.want != "" && (o.err == nil || !strings.Contains(o.err.Error(), tt.want)):
					t.Fatalf("%s: got %q, %v; want an error about %q", kind, o.b, o.err, tt.want)
				case tt.want != "" && (!strings.Contains(o.err.Error(), p) || !strings.HasPrefix(o.err.Error(), kind)):
					t.Fatalf("%s: the error %q does not name the key and file", kind, o.err)
				}
			}
		})
	}
}

// TestPublisherSecretFIFO: a publisher whose password_file or key_file is a
// FIFO is refused at once when it is built, which is what `uplinkd check`,
// `run` and every reload do (daemon.CheckConfig), and a file swapped for a
// FIFO after that fails the publish at once.
func TestPublisherSecretFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newDynServer(t, nil)
	specs := map[string]Spec{
		"dyndns2 password_file": func() Spec { s := dynSpec(t, srv, t.TempDir(), ""); s.PasswordFile = fifo; return s }(),
		"dyndns2 ca_file":       func() Spec { s := dynSpec(t, srv, t.TempDir(), ""); s.CAFile = fifo; return s }(),
		"rfc2136 key_file": {Uplink: "dsl", Name: "dns", Kind: KindRFC2136, Server: "127.0.0.1:53", Zone: "example.net.",
			Hostname: "gw.example.net.", KeyFile: fifo, TTL: time.Minute, Timeout: time.Second},
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := NewManager([]Spec{spec}, Options{Log: quiet()})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("error %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("building the publisher blocks on a FIFO")
			}
		})
	}
	t.Run("swapped for a FIFO after load", func(t *testing.T) {
		spec := dynSpec(t, srv, t.TempDir(), "")
		p, err := New(spec, PublisherOptions{Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(spec.PasswordFile)
		if err := syscall.Mkfifo(spec.PasswordFile, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan Result, 1)
		go func() { done <- p.Publish(t.Context(), Request{Addr: addrA}) }()
		select {
		case res := <-done:
			if res.Outcome != Permanent || len(srv.got()) != 0 {
				t.Fatalf("got %v %v, %d requests", res.Outcome, res.Err, len(srv.got()))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("publishing blocks on a FIFO")
		}
	})
}

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
