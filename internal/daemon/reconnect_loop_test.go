package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// reconnectOf is ppp2's reconnect state as `uplinkd status` reports it now.
func reconnectOf(t *testing.T, l *loop) control.Reconnect {
	t.Helper()
	st, err := ctlHandler{l.d}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range st.Uplinks {
		if u.Name == "ppp2" && u.Reconnect != nil {
			return *u.Reconnect
		}
	}
	return control.Reconnect{}
}

// standInPPPD prepares dir so that `cd dir && ./pppd call PEER` runs a
// process whose /proc cmdline is that of the pppd pon starts; it writes its
// pid to dir/pppd.pid and exits once dir/gone exists.
func standInPPPD(t *testing.T, dir string) {
	t.Helper()
	if err := os.Symlink("/bin/sh", filepath.Join(dir, "pppd")); err != nil {
		t.Fatal(err)
	}
	body := "echo $$ > " + filepath.Join(dir, "pppd.pid") + "\nwhile [ ! -e " + filepath.Join(dir, "gone") + " ]; do sleep 0.05; done\n"
	if err := os.WriteFile(filepath.Join(dir, "call"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(filepath.Join(dir, "gone"), nil, 0o644) })
}

func ppp2Link(o *policy.Observed) {
	o.Links["ppp2"] = policy.Link{Index: 5, Name: "ppp2", Up: true, Carrier: true, PointToPoint: true}
	o.Addrs["ppp2"] = []policy.Addr{{Prefix: netip.MustParsePrefix("100.64.2.2/32"), Peer: netip.MustParseAddr("100.64.2.1")}}
}

// TestLoopRedialAfterSessionDrop is issue 23 on the loop: pon starts a
// pppd (a real process standing in for it), ppp2 comes up with its
// address, the ISP drops the session (ppp2 goes), the pppd exits a moment
// later: the redial comes within the backoff of that exit, not
// dial_timeout after the first pon. The status shows each reconnect state.
func TestLoopRedialAfterSessionDrop(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	standInPPPD(t, dir)
	peer := fmt.Sprintf("uplinkd-looptest-%d", os.Getpid())
	trace := newTrace(t)
	pon := script(t, dir, "pon", "echo pon >> "+trace.path+"\ncd "+dir+" && rm -f pppd.pid gone && (./pppd call "+peer+" </dev/null >/dev/null 2>&1 &)")
	const backoff = time.Second
	cfg := fakeConfig("", "") + `
[[uplink]]
name = "ppp2"
kind = "ppp"
table = 202
rule_priority = 400
  [uplink.reconnect]
  peer = "` + peer + `"
  backoff = "1s"
  max_backoff = "4s"
  dial_timeout = "30s"
  command = ["` + pon + `"]
`
	l := startLoop(t, loopOpts{config: cfg, obs: twoPPP()})
	// ppp2 does not exist: the first pass dialled.
	pid := 0
	waitUntil(t, "pon's pppd", func() bool {
		pid, _ = strconv.Atoi(strings.TrimSpace(readOr(filepath.Join(dir, "pppd.pid"))))
		return pid > 0
	})
	waitUntil(t, "status: waiting for pon's pppd", func() bool {
		rc := reconnectOf(t, l)
		return rc.State == "pppd" && rc.PID == pid
	})

	// The session comes up: ppp2 with its address.
	l.k.edit(ppp2Link)
	l.send(linkEvent(l, "ppp2"))
	waitUntil(t, "status: reconnect idle once ppp2 is up", func() bool { return reconnectOf(t, l).State == "idle" })
	l.clk.Advance(5 * time.Second)

	// The ISP drops it: ppp2 goes, its pppd lives on for a moment.
	ev := linkEvent(l, "ppp2")
	l.k.edit(func(o *policy.Observed) {
		delete(o.Links, "ppp2")
		delete(o.Addrs, "ppp2")
		kernelDrop(o, "ppp2")
	})
	l.send(ev)
	waitUntil(t, "status: the attempt after the drop waits for the live pppd", func() bool {
		rc := reconnectOf(t, l)
		return rc.State == "pppd" && rc.PID == pid && !rc.Until.IsZero()
	})
	if got := trace.lines(); len(got) != 1 {
		t.Fatalf("dialled while the pppd lived: %q", got)
	}
	l.clk.Advance(700 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "gone"), nil, 0o644); err != nil { // pppd exits
		t.Fatal(err)
	}
	var rc control.Reconnect
	waitUntil(t, "status: backing off after the pppd exited", func() bool {
		rc = reconnectOf(t, l)
		return rc.State == "backoff"
	})
	in := rc.Until.Sub(l.clk.Now())
	if limit := backoff * 6 / 5; in > limit {
		t.Fatalf("redial due in %v after pppd exited, want within the backoff (%v)", in, limit)
	}
	l.clk.Advance(in)
	waitUntil(t, "the redial", func() bool { return len(trace.lines()) == 2 })
	l.stop()
}

func readOr(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestLoopReloadDuringDial (issue 17.4): reloads that change
// [uplink.reconnect] while a dial runs start no second dial: the reloaded
// reconnector takes the running attempt over, and the next dial follows
// its result (the dial window), not the reload.
func TestLoopReloadDuringDial(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	trace, gate := filepath.Join(dir, "trace"), filepath.Join(dir, "gate")
	// Each dial records how many dials run at its start, then waits for
	// the gate (at most 20 s).
	dial := script(t, dir, "dial", fmt.Sprintf(`mkdir %[1]s/run.$$
echo "start $(ls -d %[1]s/run.* | wc -l)" >> %[2]s
i=0; while [ ! -e %[3]s ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done
rmdir %[1]s/run.$$`, dir, trace, gate))
	t.Cleanup(func() { os.WriteFile(gate, nil, 0o644) })
	cfg := func(backoff int) string {
		return fakeConfig("", "") + fmt.Sprintf(`
[[uplink]]
name = "ppp2"
kind = "ppp"
table = 202
rule_priority = 400
  [uplink.reconnect]
  peer = "uplinkd-looptest-none-%d"
  backoff = "%ds"
  dial_timeout = "30s"
  command = ["%s"]
`, os.Getpid(), backoff, dial)
	}
	l := startLoop(t, loopOpts{config: cfg(1), obs: twoPPP()})
	waitUntil(t, "the first dial", func() bool { return len(strings.Fields(readOr(trace))) == 2 })
	for i := range 4 {
		l.writeConfig(cfg(i + 2))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.d.Reload(ctx)
		cancel()
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		l.send(watcher.Event{Kind: watcher.KindResync})
		waitUntil(t, "the reloaded reconnector to take the dial over", func() bool { return reconnectOf(t, l).State == "takeover" })
	}
	if got := strings.TrimSpace(readOr(trace)); got != "start 1" {
		t.Fatalf("dials during 4 reloads: %q, want the first alone", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The dial exited 0: the newest reconnector waits for its window.
	var rc control.Reconnect
	waitUntil(t, "the newest reconnector to schedule after the dial", func() bool {
		rc = reconnectOf(t, l)
		return rc.State == "dialling" && !rc.Until.IsZero()
	})
	if in := rc.Until.Sub(l.clk.Now()); in < 29*time.Second {
		t.Fatalf("next dial in %v, want the dial window (30s)", in)
	}
	l.clk.Advance(30 * time.Second)
	waitUntil(t, "the second dial", func() bool { return strings.Count(readOr(trace), "start") == 2 })
	if got := strings.TrimSpace(readOr(trace)); got != "start 1\nstart 1" {
		t.Fatalf("dials %q: want two, each alone", got)
	}
	l.stop()
}
