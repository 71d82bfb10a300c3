package daemon

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/drainstate"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// txPackets is how many packets the router has sent out of dev.
func txPackets(t *testing.T, l *lab.Lab, dev string) int {
	t.Helper()
	out := mustExec(t, l, l.Router, "cat", "/sys/class/net/"+dev+"/statistics/tx_packets")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("tx_packets of %s: %q", dev, out)
	}
	return n
}

// pingVia pings an inet host from the LAN client and checks by the
// router's packet counters that the echo requests left through dev and
// not through other.
func pingVia(t *testing.T, l *lab.Lab, dev, other string) {
	t.Helper()
	const n = 5
	before, otherBefore := txPackets(t, l, dev), txPackets(t, l, other)
	mustExec(t, l, l.LAN, "ping", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "2", "192.0.2.1")
	if got := txPackets(t, l, dev) - before; got < n {
		t.Errorf("%d packets left through %s during %d pings, want at least %d", got, dev, n, n)
	}
	if got := txPackets(t, l, other) - otherBefore; got >= n {
		t.Errorf("%d packets left through %s during %d pings via %s", got, other, n, dev)
	}
}

// uplinkdCLI runs the real command line against the daemon's socket.
func uplinkdCLI(t *testing.T, socket string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(uplinkdBinary(t), append(append([]string{}, args...), "--socket", socket)...).CombinedOutput()
	return string(out), err
}

// scrapeMetric waits until the daemon's metrics show series with value
// want (the metrics follow the pass that changed them).
func scrapeMetric(t *testing.T, addr net.Addr, series, want string) {
	t.Helper()
	var body string
	for deadline := time.Now().Add(waitLong); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
		if strings.Contains(body, series+" "+want+"\n") {
			return
		}
	}
	t.Fatalf("metrics never showed %s %s:\n%s", series, want, body)
}

func drainUplink(st control.Status, name string) control.Uplink {
	for _, u := range st.Uplinks {
		if u.Name == name {
			return u
		}
	}
	return control.Uplink{}
}

// TestLabDrain drains the uplink that carries the default route of the
// running daemon with the real CLI: the default route moves to the other
// uplink, a LAN host's ping and new connections leave through it while a
// connection opened before goes on through the drained one; status, the
// metrics and the log say drained and who asked. A restart keeps the drain;
// undrain puts the uplink back.
func TestLabDrain(t *testing.T) {
	l := dualLab(t)
	srv := newInetServer(t, l, "192.0.2.1:8080")
	stateDir := filepath.Join(t.TempDir(), "state")
	// ppp0 in tier 1 carries the default; ppp1 in tier 2 stands by.
	// The metrics listener is opened by the test (as in
	// TestLabStatusTellsTheTruth), and the config names its address.
	start := func() *running {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf("[daemon]\nstate_dir = %q\nmetrics_listen = %q\n", stateDir, ln.Addr().String()) + tieredConfig("nftables")
		return startWith(t, l, writeConfig(t, cfg), ln)
	}
	r := start()
	a0, a1 := l.UplinkAddr("ppp0").String(), l.UplinkAddr("ppp1").String()
	r.eventually("default via ppp0", r.has("default dev ppp0 proto 157", "route", "show", "default", "table", "157"))
	pingVia(t, l, "ppp0", "ppp1")
	old := lanDial(t, l, "192.0.2.1:8080")
	defer old.Close()
	if got := srv.lastPeer(); got != a0 {
		t.Fatalf("before the drain the server saw %s, want ppp0's %s", got, a0)
	}

	// Draining the only uplink of the default would leave none... but
	// ppp1 stands by, so ppp0 may go. ppp1 then carries it alone and is
	// refused without --force.
	if out, err := uplinkdCLI(t, r.socket, "drain", "ppp0"); err != nil || !strings.Contains(out, "ppp0 drained") {
		t.Fatalf("uplinkd drain ppp0: %v\n%s", err, out)
	}
	r.eventually("default via ppp1", r.has("default dev ppp1 proto 157", "route", "show", "default", "table", "157"))
	pingVia(t, l, "ppp1", "ppp0")
	lanDial(t, l, "192.0.2.1:8080").Close()
	if got := srv.lastPeer(); got != a1 {
		t.Errorf("a new connection after the drain came from %s, want ppp1's %s", got, a1)
	}
	echo(t, old) // the connection opened before goes on, through ppp0
	for _, keep := range []string{"from " + a0 + " lookup 200", "fwmark 0x10000/0xff0000 lookup 200"} {
		if !strings.Contains(r.ip("rule"), keep) {
			t.Errorf("rule %q gone after the drain:\n%s", keep, r.ip("rule"))
		}
	}
	if !strings.Contains(r.ip("route", "show", "table", "200"), "default dev ppp0") {
		t.Errorf("ppp0's table lost its default route:\n%s", r.ip("route", "show", "table", "200"))
	}
	st := r.statusJSON()
	if u := drainUplink(st, "ppp0"); !u.Drained || u.Default || u.State != control.StateUp {
		t.Errorf("status of ppp0 after the drain: %+v", u)
	}
	if u := drainUplink(st, "ppp1"); u.Drained || !u.Default {
		t.Errorf("status of ppp1 after the drain: %+v", u)
	}
	if out, err := uplinkdCLI(t, r.socket, "status"); err != nil || !strings.Contains(out, "drained") {
		t.Errorf("uplinkd status does not show the drain: %v\n%s", err, out)
	}
	scrapeMetric(t, r.d.x.metricsAddr, `uplinkd_uplink_drained{uplink="ppp0"}`, "1")
	scrapeMetric(t, r.d.x.metricsAddr, `uplinkd_uplink_drained{uplink="ppp1"}`, "0")
	recs := r.logs.records(map[string]any{"event": "drain", "uplink": "ppp0", "uid": float64(0), "msg": "uplink drained: out of the default route and its balancing"})
	if len(recs) != 1 {
		t.Errorf("%d drain records with uid 0, want 1", len(recs))
	} else if pid, _ := recs[0]["pid"].(float64); pid <= 0 {
		t.Errorf("the drain record names no caller pid: %v", recs[0])
	}

	// ppp1 is the last uplink that is not drained.
	out, err := uplinkdCLI(t, r.socket, "drain", "ppp1")
	if code := exitCode(err); code != exitCodeFailure || !strings.Contains(out, "last uplink") || !strings.Contains(out, "--force") {
		t.Errorf("draining the last uplink: exit %d\n%s", code, out)
	}
	if !strings.Contains(r.ip("route", "show", "default", "table", "157"), "default dev ppp1") {
		t.Error("a refused drain moved the default route")
	}

	// A restart keeps the drain: the new daemon's first pass leaves the
	// default on ppp1.
	r.stop()
	if set, err := drainstate.Load(drainstate.Path(stateDir)); err != nil || len(set) != 1 || set["ppp0"].UID != 0 {
		t.Fatalf("state file after the drain: %v, %v", set, err)
	}
	r = start()
	if route := r.ip("route", "show", "default", "table", "157"); !strings.Contains(route, "default dev ppp1") {
		t.Errorf("after a restart the default route is %q, want ppp1 (ppp0 drained)", route)
	}
	if u := drainUplink(r.statusJSON(), "ppp0"); !u.Drained || u.Default {
		t.Errorf("status of ppp0 after the restart: %+v", u)
	}
	scrapeMetric(t, r.d.x.metricsAddr, `uplinkd_uplink_drained{uplink="ppp0"}`, "1")
	pingVia(t, l, "ppp1", "ppp0")

	if out, err := uplinkdCLI(t, r.socket, "undrain", "ppp0"); err != nil || !strings.Contains(out, "ppp0 undrained") {
		t.Fatalf("uplinkd undrain ppp0: %v\n%s", err, out)
	}
	r.eventually("default via ppp0 again", r.has("default dev ppp0 proto 157", "route", "show", "default", "table", "157"))
	pingVia(t, l, "ppp0", "ppp1")
	if u := drainUplink(r.statusJSON(), "ppp0"); u.Drained || !u.Default {
		t.Errorf("status of ppp0 after the undrain: %+v", u)
	}
	scrapeMetric(t, r.d.x.metricsAddr, `uplinkd_uplink_drained{uplink="ppp0"}`, "0")
	if recs := r.logs.records(map[string]any{"event": "undrain", "uplink": "ppp0", "uid": float64(0)}); len(recs) != 1 {
		t.Errorf("%d undrain records, want 1", len(recs))
	}
}

// exitCodeFailure is the CLI's exit status for a request the daemon
// refused (cmd/uplinkd: exitFailure).
const exitCodeFailure = 1

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestLabPlanReadsDrainState: `uplinkd plan` computes with the drain state
// the daemon keeps, so it shows the default route without the drained
// uplink, and it neither moves a corrupt file nor fails on it.
func TestLabPlanReadsDrainState(t *testing.T) {
	l := dualLab(t)
	stateDir := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf("[daemon]\nstate_dir = %q\n", stateDir)+labConfig)
	if err := drainstate.Save(drainstate.Path(stateDir), drainstate.Set{"ppp1": {}, "gone": {}}); err != nil {
		t.Fatal(err)
	}
	out, err := l.Exec(l.Router, uplinkdBinary(t), "plan", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# drained ppp1",
		"# uplink ppp1=drained(",
		"ip route add default dev ppp0 table 157 proto 157 scope link metric 0",
		`drained uplink "gone" is not in the config`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "nexthop dev ppp1") {
		t.Errorf("plan balances over the drained ppp1:\n%s", out)
	}

	path := drainstate.Path(stateDir)
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = l.Exec(l.Router, uplinkdBinary(t), "plan", "--config", cfg)
	if err != nil || !strings.Contains(out, "unreadable") || !strings.Contains(out, "nexthop dev ppp1") {
		t.Errorf("plan with a corrupt drain file: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "{" {
		t.Errorf("plan changed the corrupt file: %q, %v", b, err)
	}
}
