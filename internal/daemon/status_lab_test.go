package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// everythingConfig is the lab with every reporting feature on: ppp0 probed
// towards two inet hosts, a [[service]] with two checked backends, the
// embedded DHCP server, a command publisher on ppp1, [ha] and the metrics
// endpoint on loopback.
const everythingConfig = `
[daemon]
state_dir = %[1]q
metrics_listen = %[4]q

[ha]
track_file = %[2]q

[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]
  [lan.dhcp]
  mode  = "embedded"
  range = ["10.0.0.100", "10.0.0.110"]
  lease = "10m"

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
  [uplink.check]
  targets  = ["192.0.2.1", "192.0.2.2"]
  interval = "200ms"
  timeout  = "150ms"
  down = 3
  up = 3

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300
  [[uplink.publish]]
  kind = "command"
  command = [%[3]q]
  settle = "100ms"
  min_interval = "100ms"

[[service]]
name = "web"
uplinks = ["ppp0"]
port = 80
backends = ["10.0.0.3:8080", "10.0.0.4:8080"]
check = { interval = "250ms", timeout = "250ms", down = 2, up = 2 }
`

// TestLabStatusTellsTheTruth starts the real daemon with every feature
// configured and checks each section of `uplinkd status --json`, the text
// table and the metrics against what the lab did: a backend killed, a probe
// target dropped, a lease taken by a real DHCP client, a publish done, a
// keepalived role event.
func TestLabStatusTellsTheTruth(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox (udhcpc); scripts/deps.sh installs it")
	}
	l := dualLab(t)
	dir := t.TempDir()
	published := filepath.Join(dir, "published")
	pub := filepath.Join(dir, "publish")
	if err := os.WriteFile(pub, []byte("#!/bin/sh\necho \"$UPLINKD_NEW_IP\" >> "+published+"\necho done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	udhcpc := filepath.Join(dir, "udhcpc.script")
	if err := os.WriteFile(udhcpc, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	backends := []netip.Addr{netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")}
	if err := l.AddLANAddrs(backends...); err != nil {
		t.Fatal(err)
	}
	newBackend(t, l, "10.0.0.3:8080", "b3")
	b4 := newBackend(t, l, "10.0.0.4:8080", "b4")
	track := filepath.Join(dir, "track")
	// metrics_listen names the address; the test opens the listener (on
	// the host's loopback, which the test does not change), so no other
	// process can take the port between picking and binding it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := writeConfig(t, fmt.Sprintf(everythingConfig, filepath.Join(dir, "state"), track, pub, ln.Addr().String()))
	r := startWith(t, l, cfgPath, ln)
	addr := r.d.x.metricsAddr
	if addr == nil {
		t.Fatal("metrics_listen: not listening")
	}

	// Polled through the real control socket; the final checks use the CLI.
	status := func() control.Status {
		t.Helper()
		resp, err := r.call(control.Request{Cmd: control.CmdStatus})
		if err != nil || resp.Status == nil {
			t.Fatalf("status: %v", err)
		}
		return *resp.Status
	}
	waitStatus := func(what string, cond func(control.Status) bool) control.Status {
		t.Helper()
		var st control.Status
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if st = status(); cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; status:\n%s", what, control.FormatStatus(st, time.Now()))
			}
		}
	}
	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// metric returns the value of the sample named exactly series ("" and
	// false when absent).
	metric := func(body, series string) (string, bool) {
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
				return v, true
			}
		}
		return "", false
	}
	waitMetrics := func(what string, want map[string]string) string {
		t.Helper()
		var body string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			body = scrape()
			ok := true
			for series, v := range want {
				got, present := metric(body, series)
				if v == "absent" && present || v != "absent" && got != v {
					ok = false
				}
			}
			if ok {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s in the metrics %v:\n%s", what, want, body)
			}
		}
	}
	uplink := func(st control.Status, name string) control.Uplink {
		for _, u := range st.Uplinks {
			if u.Name == name {
				return u
			}
		}
		t.Fatalf("no uplink %s in the status", name)
		return control.Uplink{}
	}
	backend := func(st control.Status, a string) *control.ServiceBackend {
		for _, s := range st.Services {
			for i, b := range s.Backends {
				if s.Name == "web" && b.Address.String() == a {
					return &s.Backends[i]
				}
			}
		}
		return nil
	}

	// 1. Probes: both targets answer, so every round shows 0 loss, an RTT
	// and a jitter (two answers). ppp1 has no check: no loss at all.
	st := waitStatus("ppp0's first probe round", func(st control.Status) bool {
		u := uplink(st, "ppp0")
		return u.Loss != nil && *u.Loss == 0 && u.RTTms != nil && u.JitterMs != nil
	})
	if u := uplink(st, "ppp1"); u.Loss != nil || u.RTTms != nil || u.JitterMs != nil {
		t.Errorf("ppp1 has no check but shows loss %v rtt %v jitter %v", fp(u.Loss), fp(u.RTTms), fp(u.JitterMs))
	}
	waitMetrics("ppp0's probe figures", map[string]string{
		`uplinkd_uplink_loss_ratio{uplink="ppp0"}`:       "0",
		`uplinkd_uplink_state{uplink="ppp0",state="up"}`: "1",
		`uplinkd_uplink_loss_ratio{uplink="ppp1"}`:       "absent",
	})
	if body := scrape(); !strings.Contains(body, `uplinkd_uplink_jitter_seconds{uplink="ppp0"} `) ||
		!strings.Contains(body, `uplinkd_uplink_rtt_seconds{uplink="ppp0"} `) {
		t.Errorf("no rtt or jitter series for ppp0:\n%s", body)
	}

	// 2. Services: both backends healthy, no error.
	waitStatus("both web backends healthy", func(st control.Status) bool {
		b3, b4 := backend(st, "10.0.0.3:8080"), backend(st, "10.0.0.4:8080")
		return len(st.Services) == 1 && st.Services[0].Checked && b3 != nil && b3.Healthy && b3.LastError == "" &&
			b4 != nil && b4.Healthy && b4.LastError == ""
	})
	waitMetrics("healthy backends", map[string]string{
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.3:8080"}`: "1",
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.4:8080"}`: "1",
	})

	// 3. A publish: the command publisher of ppp1 runs for its address.
	ppp1Addr := l.UplinkAddr("ppp1")
	st = waitStatus("ppp1's address published", func(st control.Status) bool {
		return len(st.Publishers) == 1 && st.Publishers[0].Result == "ok" && st.Publishers[0].Address == ppp1Addr
	})
	if p := st.Publishers[0]; p.Uplink != "ppp1" || p.Name != "command-1" || p.Kind != "command" || p.PublishedAt.IsZero() ||
		p.LastAttempt.IsZero() || p.Pending.IsValid() || p.Reason != "" {
		t.Errorf("publisher: %+v", p)
	}
	if data, _ := os.ReadFile(published); strings.TrimSpace(string(data)) != ppp1Addr.String() {
		t.Errorf("the publish command ran with %q, want %s once", data, ppp1Addr)
	}
	waitMetrics("the publish", map[string]string{
		`uplinkd_publisher_last_result{uplink="ppp1",publisher="command-1",result="ok"}`:    "1",
		`uplinkd_publisher_last_result{uplink="ppp1",publisher="command-1",result="none"}`:  "0",
		`uplinkd_publisher_attempts_total{uplink="ppp1",publisher="command-1",result="ok"}`: "1",
	})

	// 4. A lease taken by a real DHCP client (busybox udhcpc in the LAN).
	st = waitStatus("the DHCP server listening", func(st control.Status) bool { return st.DHCP != nil && st.DHCP.Listening })
	if d := st.DHCP; d.Mode != "embedded" || d.Interface != "lan0" || d.InUse != 0 || d.Free != 11 || len(d.Leases) != 0 {
		t.Errorf("dhcp before any client: %+v", d)
	}
	mustExec(t, l, l.LAN, "ip", "link", "add", "mv1", "link", lab.ClientIface, "address", "02:00:00:00:01:01", "type", "macvlan", "mode", "bridge")
	mustExec(t, l, l.LAN, "ip", "link", "set", "mv1", "up")
	events := filepath.Join(dir, "dhcp.events")
	cmd, err := l.StartWith(l.LAN, lab.StartOptions{Env: append(os.Environ(), "DHCP_EVENTS="+events)},
		"busybox", "udhcpc", "-f", "-q", "-n", "-i", "mv1", "-s", udhcpc, "-t", "10", "-T", "1", "-A", "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(cmd); err != nil {
		data, _ := os.ReadFile(events)
		t.Fatalf("udhcpc: %v\nevents:\n%s\noutput:\n%s", err, data, lab.Output(cmd))
	}
	var leased string
	data, _ := os.ReadFile(events)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "bound ip="); ok {
			leased = strings.Fields(rest)[0]
		}
	}
	if leased == "" {
		t.Fatalf("udhcpc: no lease; events:\n%s", data)
	}
	st = waitStatus("the lease in the status", func(st control.Status) bool { return st.DHCP != nil && st.DHCP.InUse == 1 })
	if d := st.DHCP; d.Free != 10 || len(d.Leases) != 1 || d.Leases[0].IP.String() != leased ||
		d.Leases[0].MAC != "02:00:00:00:01:01" || d.Leases[0].State != "bound" {
		t.Errorf("dhcp after the lease of %s: %+v", leased, d)
	}
	waitMetrics("the lease", map[string]string{
		`uplinkd_dhcp_up{mode="embedded"}`: "1",
		`uplinkd_dhcp_listening`:           "1",
		`uplinkd_dhcp_leases_in_use`:       "1",
		`uplinkd_dhcp_leases_free`:         "10",
		`uplinkd_dhcp_addresses_resting`:   "0",
	})
	if _, ok := metric(scrape(), "uplinkd_dhcp_dropped_packets_total"); !ok {
		t.Error("no uplinkd_dhcp_dropped_packets_total")
	}

	// 5. HA: unknown until keepalived's first notify, then master.
	if st.HA == nil || st.HA.Role != control.RoleUnknown {
		t.Errorf("ha before any role event: %+v", st.HA)
	}
	for len(r.syncs) > 0 {
		<-r.syncs
	}
	if _, err := r.call(control.Request{Cmd: control.CmdEvent, Event: &control.Event{Role: control.RoleMaster}}); err != nil {
		t.Fatalf("role event: %v", err)
	}
	r.waitSync() // the role event's pass, so that it is not counted below
	st = waitStatus("role master", func(st control.Status) bool { return st.HA != nil && st.HA.Role == control.RoleMaster })
	if st.HA.Since.IsZero() {
		t.Errorf("ha: %+v", st.HA)
	}
	waitMetrics("role master", map[string]string{`uplinkd_ha_role{role="master"}`: "1", `uplinkd_ha_role{role="unknown"}`: "0"})

	// 6. A probe target stops answering on ppp0's path (the ISP drops it):
	// the next rounds show half the probes lost, and no jitter (one answer
	// a round), with no pass in between: nothing else happened, and the
	// verdict stays up (one answer a round is enough).
	passes := status().Daemon.Passes
	mustExec(t, l, l.ISP("ppp0"), "ip", "route", "add", "blackhole", "192.0.2.2/32")
	st = waitStatus("half of ppp0's probes lost", func(st control.Status) bool {
		u := uplink(st, "ppp0")
		return u.Loss != nil && *u.Loss == 0.5
	})
	if u := uplink(st, "ppp0"); u.State != control.StateUp || u.RTTms == nil || u.JitterMs != nil {
		t.Errorf("ppp0 with one target lost: state %s rtt %v jitter %v", u.State, fp(u.RTTms), fp(u.JitterMs))
	}
	if st.Daemon.Passes != passes {
		var what []string
		for len(r.syncs) > 0 {
			s := <-r.syncs
			what = append(what, fmt.Sprintf("pass at %s: %d changes, err %v", s.Start.Format("15:04:05.000"), len(s.Changes), s.Err))
		}
		t.Errorf("passes %d → %d while the loss changed (%s): the loss must show without one", passes, st.Daemon.Passes, strings.Join(what, "; "))
	}
	waitMetrics("half of ppp0's probes lost", map[string]string{
		`uplinkd_uplink_loss_ratio{uplink="ppp0"}`:     "0.5",
		`uplinkd_uplink_jitter_seconds{uplink="ppp0"}`: "absent",
	})

	// 7. A backend dies: out of the set, with since and the check's error.
	killed := time.Now()
	b4.stop()
	st = waitStatus("10.0.0.4:8080 unhealthy", func(st control.Status) bool {
		b := backend(st, "10.0.0.4:8080")
		return b != nil && !b.Healthy
	})
	// The error is the check's own: the closed port refuses.
	deadErr := backend(st, "10.0.0.4:8080").LastError
	if b := backend(st, "10.0.0.4:8080"); b.Since.Before(killed) || !strings.Contains(b.LastError, "connection refused") {
		t.Errorf("dead backend: since %v (killed at %v), last error %q", b.Since, killed, b.LastError)
	}
	if b := backend(st, "10.0.0.3:8080"); !b.Healthy || b.LastError != "" {
		t.Errorf("live backend: %+v", b)
	}
	waitMetrics("the dead backend", map[string]string{
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.4:8080"}`: "0",
		`uplinkd_service_backend_healthy{service="web",backend="10.0.0.3:8080"}`: "1",
	})

	// The CLI: `status --json` and the table show the same.
	js := r.statusJSON()
	if u := uplink(js, "ppp0"); u.Loss == nil || *u.Loss != 0.5 || js.HA == nil || js.HA.Role != control.RoleMaster ||
		len(js.Services) != 1 || len(js.Publishers) != 1 || js.DHCP == nil || js.DHCP.InUse != 1 {
		t.Errorf("status --json: %+v", js)
	}
	if b := backend(js, "10.0.0.4:8080"); b == nil || b.Healthy || b.LastError == "" || b.Since.IsZero() {
		t.Errorf("status --json backend: %+v", b)
	}
	out, err := exec.Command(uplinkdBinary(t), "status", "--socket", r.socket).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("uplinkd status: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	table := string(out)
	t.Logf("uplinkd status:\n%s", table)
	for _, want := range []string{
		"ha role master",
		"dhcp: embedded on lan0, listening; leases 1 in use, 10 free",
		"  " + leased + " ",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q", want)
		}
	}
	for _, row := range []struct{ prefix, contains []string }{
		{[]string{"ppp0", "ppp0", "up"}, []string{"50%", "ms"}},
		{[]string{"ppp1", "ppp1", "up"}, []string{"-"}},
		{[]string{"web", "10.0.0.4:8080", "down"}, []string{deadErr}},
		{[]string{"web", "10.0.0.3:8080", "up"}, nil},
		{[]string{"command-1", "ppp1", "command", ppp1Addr.String()}, []string{"ok"}},
	} {
		if !tableHasRow(table, row.prefix, row.contains) {
			t.Errorf("the table has no row %q with %q", row.prefix, row.contains)
		}
	}
}

// tableHasRow reports whether a line of table starts with the fields
// prefix and contains every one of contains.
func tableHasRow(table string, prefix, contains []string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < len(prefix) {
			continue
		}
		match := true
		for i, p := range prefix {
			if f[i] != p {
				match = false
			}
		}
		for _, c := range contains {
			if !strings.Contains(line, c) {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}
