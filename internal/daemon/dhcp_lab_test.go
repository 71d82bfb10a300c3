package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// udhcpcScript is busybox udhcpc's event script: it configures the lease
// like a real client and appends each event to $DHCP_EVENTS.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig) ip -4 addr flush dev "$interface" ;;
bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
esac
echo "$1 ip=$ip router=$router dns=$dns domain=$domain lease=$lease" >> "$DHCP_EVENTS"
`

// TestLabDHCPEmbedded: the daemon, configured with [lan.dhcp] mode
// embedded, serves a real DHCP client (busybox udhcpc) in the LAN
// namespace: the lease carries the configured options, is written to the
// state dir and shows in the status; after the LAN link bounces the server
// binds again and serves a second client.
func TestLabDHCPEmbedded(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox (udhcpc); scripts/deps.sh installs it")
	}
	l := dualLab(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	cfg := fmt.Sprintf("[daemon]\nstate_dir = %q\n", state) + strings.Replace(labConfig, `networks  = ["10.0.0.0/24"]`, `networks  = ["10.0.0.0/24"]
  [lan.dhcp]
  mode   = "embedded"
  range  = ["10.0.0.100", "10.0.0.110"]
  lease  = "10m"
  dns    = ["10.0.0.1"]
  domain = "lan.example"
`, 1)
	r := start(t, l, writeConfig(t, cfg))

	client := func(name, mac string) string {
		t.Helper()
		mustExec(t, l, l.LAN, "ip", "link", "add", name, "link", lab.ClientIface, "address", mac, "type", "macvlan", "mode", "bridge")
		mustExec(t, l, l.LAN, "ip", "link", "set", name, "up")
		events := filepath.Join(dir, name+".events")
		cmd, err := l.StartWith(l.LAN, lab.StartOptions{Env: append(os.Environ(), "DHCP_EVENTS="+events)},
			"busybox", "udhcpc", "-f", "-q", "-n", "-i", name, "-s", script, "-t", "10", "-T", "1", "-A", "1")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(cmd); err != nil {
			data, _ := os.ReadFile(events)
			t.Fatalf("udhcpc on %s: %v\nevents:\n%s\noutput:\n%s", name, err, data, lab.Output(cmd))
		}
		data, _ := os.ReadFile(events)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "bound ") {
				return line
			}
		}
		t.Fatalf("udhcpc on %s: no lease; events:\n%s", name, data)
		return ""
	}
	bound := client("mv1", "02:00:00:00:01:01")
	for _, want := range []string{"router=10.0.0.1", "dns=10.0.0.1", "domain=lan.example", "lease=600"} {
		if !strings.Contains(bound, want) {
			t.Errorf("lease %q: want %s", bound, want)
		}
	}
	ip := strings.TrimPrefix(strings.Fields(bound)[1], "ip=")
	if !strings.HasPrefix(ip, "10.0.0.1") {
		t.Errorf("leased address %s not from the range", ip)
	}
	if data, err := os.ReadFile(filepath.Join(state, "dhcp-leases.json")); err != nil || !strings.Contains(string(data), ip) {
		t.Errorf("lease file: %v %s", err, data)
	}
	st := r.statusJSON()
	if st.DHCP == nil || st.DHCP.Mode != "embedded" || st.DHCP.Interface != "lan0" || !st.DHCP.Listening ||
		len(st.DHCP.Leases) != 1 || st.DHCP.Leases[0].IP.String() != ip {
		t.Errorf("status dhcp: %+v", st.DHCP)
	}
	binds := st.DHCP.Binds

	// The LAN link goes down and comes back: the daemon tells the server,
	// which binds again.
	mustExec(t, l, l.Router, "ip", "link", "set", "lan0", "down")
	r.waitSync()
	mustExec(t, l, l.Router, "ip", "link", "set", "lan0", "up")
	r.eventually("the DHCP socket bound again", func() bool {
		d := r.statusJSON().DHCP
		return d != nil && d.Listening && d.Binds > binds
	})
	time.Sleep(100 * time.Millisecond)
	if b := client("mv2", "02:00:00:00:01:02"); strings.Contains(b, "ip="+ip+" ") {
		t.Errorf("second client got the first one's address: %q", b)
	}
}
