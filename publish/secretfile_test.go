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
				go func() { b, err := ReadSecretFile(kind, p); done <- out{b, err} }()
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

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
