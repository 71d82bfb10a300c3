package packaging_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// recorder is a daemon's control side that records what reaches it.
type recorder struct {
	mu      sync.Mutex
	events  []string
	reloads int
}

func (r *recorder) Status(context.Context) (control.Status, error) { return control.Status{}, nil }
func (r *recorder) Reconnect(context.Context, string) error        { return nil }
func (r *recorder) Drain(context.Context, control.Drain) error     { return nil }
func (r *recorder) Reload(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads++
	return nil, nil
}

func (r *recorder) Event(_ context.Context, ev control.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Role != "" {
		r.events = append(r.events, "role "+string(ev.Role))
	} else {
		r.events = append(r.events, ev.Iface+" "+string(ev.State))
	}
	return nil
}

// TestScriptsAndUnitReachACustomSocket: with [daemon] control_socket set to
// a path of its own in /etc/uplinkd/uplinkd.toml, the hook scripts (ppp,
// ifupdown, networkd-dispatcher, keepalived's notify) and the unit's
// ExecReload reach the daemon there, with the real uplinkd binary. They run
// in a mount namespace whose /etc is an overlay (the host's /etc stays as
// it is) and whose /usr/local/sbin holds the binary. Before the client
// commands read the config, every one of them went to the default socket.
func TestScriptsAndUnitReachACustomSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	dir, err := os.MkdirTemp("", "uplinkd-socket-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "uplinkd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/uplinkd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "custom.sock")
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, control.Options{Path: sock, Group: -1}, rec) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for i := 0; ; i++ {
		if _, err := os.Lstat(sock); err == nil {
			break
		}
		if i > 2000 {
			t.Fatal("control socket never appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	config := "[daemon]\ncontrol_socket = \"" + sock + "\"\n\n[[uplink]]\nname = \"dsl\"\ninterface = \"ppp0\"\n"
	if err := os.WriteFile(filepath.Join(dir, "uplinkd.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	reload := unitSettings(t, "systemd/uplinkd.service")["ExecReload"][0]
	reload = strings.Replace(reload, "/usr/sbin/uplinkd", "/usr/local/sbin/uplinkd", 1)
	scripts, _ := filepath.Abs(".")

	out := inMountNamespace(t, []string{"PATH=/usr/bin:/bin"}, `
		dir=$1 scripts=$2 reload=$3
		mkdir "$dir/scratch" && mount -t tmpfs uplinkd-test "$dir/scratch"
		mkdir "$dir/scratch/upper" "$dir/scratch/work"
		if ! mount -t overlay overlay -o lowerdir=/etc,upperdir="$dir/scratch/upper",workdir="$dir/scratch/work" /etc 2>&1; then
			echo "SKIP: no overlay of /etc here"; exit 0
		fi
		mkdir -p /etc/uplinkd
		cp "$dir/uplinkd.toml" /etc/uplinkd/uplinkd.toml
		mount -t tmpfs uplinkd-test /usr/local/sbin
		cp "$dir/uplinkd" /usr/local/sbin/uplinkd
		PPP_IFACE=ppp0 PPP_LOCAL=198.51.100.7 PPP_REMOTE=203.0.113.1 "$scripts/ppp/ip-up.d/uplinkd"
		PPP_IFACE=ppp0 "$scripts/ppp/ip-down.d/uplinkd"
		IFACE=eth1 ADDRFAM=inet METHOD=static IF_ADDRESS=192.0.2.2/24 "$scripts/ifupdown/if-up.d/uplinkd"
		IFACE=eth1 ADDRFAM=inet METHOD=static "$scripts/ifupdown/if-post-down.d/uplinkd"
		IFACE=wlan0 ADDR=192.0.2.9 "$scripts/networkd-dispatcher/routable.d/uplinkd"
		IFACE=wlan0 "$scripts/networkd-dispatcher/off.d/uplinkd"
		"$scripts/keepalived/uplinkd-notify" --uplinkd /usr/local/sbin/uplinkd INSTANCE LAN MASTER 110
		echo "== reload: $($reload)"
	`, dir, scripts, reload)
	if strings.Contains(out, "SKIP: ") {
		t.Skip(strings.TrimSpace(out))
	}
	if !strings.Contains(out, "== reload: config reloaded") {
		t.Errorf("ExecReload (%s) did not reach the daemon:\n%s", reload, out)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []string{"ppp0 up", "ppp0 down", "eth1 up", "eth1 down", "wlan0 up", "wlan0 down", "role master"}
	// `uplinkd event` gives the daemon 90 ms and then drops the poke with a
	// warning (the hook must not hold up pppd or ifup; the daemon sees the
	// link change on netlink anyway). Under CPU hogs this race-built
	// recorder can miss that budget, so a poke dropped with a warning that
	// names the custom socket counts as having gone there; every other one
	// must have arrived, in order. Going to the default socket fails both
	// ways (no event, and a warning naming /run/uplinkd/uplinkd.sock).
	dropped := strings.Count(out, "event dropped: uplinkd on "+sock+" (control_socket of /etc/uplinkd/uplinkd.toml) did not answer in time")
	if !isSubsequence(rec.events, want) || len(rec.events)+dropped != len(want) {
		t.Errorf("events on the custom socket: %q and %d dropped there, want %q\n%s", rec.events, dropped, want, out)
	}
	if rec.reloads != 1 {
		t.Errorf("%d reloads on the custom socket, want 1", rec.reloads)
	}
}

// isSubsequence reports whether got is want with some elements left out,
// the rest in want's order.
func isSubsequence(got, want []string) bool {
	i := 0
	for _, w := range want {
		if i < len(got) && got[i] == w {
			i++
		}
	}
	return i == len(got)
}
