package daemon

import (
	"strings"
	"testing"
)

// routeGet is the device `ip route get` picks for dst in the router
// namespace (for the uid, when uid is not empty).
func (r *running) routeGet(dst string, extra ...string) string {
	r.t.Helper()
	out := r.ip(append([]string{"route", "get", dst}, extra...)...)
	f := strings.Fields(out)
	for i := range f[:len(f)-1] {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	r.t.Fatalf("no dev in %q", out)
	return ""
}

// pppd's `defaultroute` (seed 004's first peer) leaves `default dev ppp0` in
// main. uplinkd must route around it, not fight it: traffic follows uplinkd's
// choice, the foreign route stays, and flush gives the host its own routing
// back.
func TestLabRoutesAroundPPPDDefaultRoute(t *testing.T) {
	l := dualLab(t)
	// What pppd does with defaultroute (proto boot, scope link).
	mustExec(t, l, l.Router, "ip", "route", "add", "default", "dev", "ppp0")
	cfg := writeConfig(t, tieredConfig("nftables"))
	r := start(t, l, cfg)
	r.eventually("own default via ppp0", r.has("default dev ppp0 proto 157", "route", "show", "table", "157"))
	if got := r.routeGet("192.0.2.1"); got != "ppp0" {
		t.Errorf("host traffic via %s, want ppp0", got)
	}
	if got := r.routeGet("192.0.2.1", "uid", "108", "mark", "1"); got != "ppp1" {
		t.Errorf("uid 108's traffic via %s, want ppp1", got)
	}

	// ppp0 loses its carrier: pppd's route is still in main, but traffic
	// must leave via ppp1 at once.
	if _, err := l.SetCarrier("ppp0", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("own default via ppp1", r.has("default dev ppp1 proto 157", "route", "show", "table", "157"))
	if got := r.routeGet("192.0.2.1"); got != "ppp1" {
		t.Errorf("after ppp0's carrier loss host traffic goes via %s, want ppp1", got)
	}
	mustExec(t, l, l.Router, "ping", "-c1", "-W2", "192.0.2.1")
	if !strings.Contains(r.ip("route", "show", "table", "main"), "default dev ppp0") {
		t.Errorf("pppd's default route in main was touched:\n%s", r.ip("route", "show", "table", "main"))
	}

	// A specific route in main still wins over uplinkd's default.
	mustExec(t, l, l.Router, "ip", "route", "add", "198.51.100.0/24", "dev", "ppp0")
	if got := r.routeGet("198.51.100.7"); got != "ppp0" {
		t.Errorf("a specific route in main lost to the default table: via %s", got)
	}

	if _, err := l.SetCarrier("ppp0", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("own default back on ppp0", r.has("default dev ppp0 proto 157", "route", "show", "table", "157"))
	r.stop()

	// flush: no owned rule or route is left and the host routes by main's
	// own default again.
	mustExec(t, l, l.Router, uplinkdBinary(t), "flush", "--config", cfg)
	if s := r.ip("rule"); strings.Contains(s, "proto 157") || strings.Contains(s, "suppress_prefixlength") {
		t.Errorf("owned rules left after flush:\n%s", s)
	}
	if s := r.ip("route", "show", "table", "all"); strings.Contains(s, "proto 157") {
		t.Errorf("owned routes left after flush:\n%s", s)
	}
	if got := r.routeGet("192.0.2.1"); got != "ppp0" {
		t.Errorf("after flush host traffic via %s, want pppd's ppp0", got)
	}
}
