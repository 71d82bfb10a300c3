package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
)

// `check` predicts `run` for the control socket path: the longest path the
// loader accepts is one the daemon can listen on, and one byte more is
// refused by both (issue 17: 92 characters passed check, and run exited 1).
// A real socket, bound by the daemon's own code.
func TestControlSocketPathCheckPredictsRun(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "ul")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, n := range []int{policy.MaxControlSocketPath, policy.MaxControlSocketPath + 1} {
		path := dir + "/" + strings.Repeat("s", n-len(dir)-1)
		if len(path) != n {
			t.Fatalf("built a path of %d bytes, want %d", len(path), n)
		}
		src := fmt.Sprintf("[daemon]\ncontrol_socket = %q\n[[uplink]]\nname = \"ppp0\"\ntable = 200\nrule_priority = 200\n", path)
		_, checkErr := policy.Parse("t.toml", []byte(src), nil)
		sock, runErr := control.Listen(control.Options{Path: path, Group: -1})
		if sock != nil {
			sock.Close()
		}
		os.Remove(path)
		if (checkErr == nil) != (runErr == nil) {
			t.Errorf("%d bytes: check says %v, run says %v", n, checkErr, runErr)
		}
		if want := n <= policy.MaxControlSocketPath; (checkErr == nil) != want {
			t.Errorf("%d bytes: check accepted %v, want %v (%v)", n, checkErr == nil, want, checkErr)
		}
	}
	// The socket's final name is all that is left behind.
	if left, _ := filepath.Glob(dir + "/*"); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
