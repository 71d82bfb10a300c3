package dhcpd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// The lab tests run the server in the router namespace of a lab, on lan0
// (10.0.0.1/24), and real busybox udhcpc clients in the lab's LAN namespace,
// one per macvlan interface on eth0 with a MAC of its own, so that many
// clients share the LAN segment as separate hosts would. Their script
// (clientScript) configures the address, as a real client does (RENEWING
// is unicast from the leased address), and appends each event to a file.

func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

// clientScript is udhcpc's event script: $1 is deconfig, bound, renew,
// leasefail or nak; the lease is in the environment.
const clientScript = `#!/bin/sh
case "$1" in
deconfig) ip -4 addr flush dev "$interface" ;;
bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
esac
echo "$1 ip=$ip mask=$mask router=$router hostname=$hostname lease=$lease serverid=$serverid" >> "$DHCP_EVENTS"
`

type dhcpLab struct {
	*lab.Lab
	t      *testing.T
	dir    string
	script string
	nsfd   int
	n      int
}

func needClient(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox (udhcpc); scripts/deps.sh installs it")
	}
}

func newDHCPLab(t *testing.T) *dhcpLab {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test")
	}
	needClient(t)
	// The directory before the lab: cleanups run last-in first-out, so the
	// lab's Close stops the clients (dhclient and its script write here)
	// before the directory is removed.
	dir := t.TempDir()
	l := lab.NewT(t, lab.Spec{})
	script := filepath.Join(dir, "udhcpc.script")
	if err := os.WriteFile(script, []byte(clientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// Several hosts' interfaces share one namespace here: each must answer
	// ARP only for its own addresses, as separate hosts would.
	for k, v := range map[string]string{
		"net.ipv4.conf.all.arp_ignore":   "1",
		"net.ipv4.conf.all.arp_announce": "2",
	} {
		if err := l.Sysctl(l.LAN, k, v); err != nil {
			t.Fatal(err)
		}
	}
	h, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &dhcpLab{Lab: l, t: t, dir: dir, script: script, nsfd: int(h)}
}

func (d *dhcpLab) exec(ns string, argv ...string) {
	d.t.Helper()
	if out, err := d.Exec(ns, argv...); err != nil {
		d.t.Fatalf("%v: %s", err, out)
	}
}

// host adds a LAN host: a macvlan interface with the given MAC in the LAN
// namespace, optionally with a static address.
func (d *dhcpLab) host(name string, mac net.HardwareAddr, static string) {
	d.t.Helper()
	d.exec(d.LAN, "ip", "link", "add", name, "link", lab.ClientIface, "address", mac.String(), "type", "macvlan", "mode", "bridge")
	if static != "" {
		d.exec(d.LAN, "ip", "addr", "add", static+"/24", "dev", name)
	}
	d.exec(d.LAN, "ip", "link", "set", name, "up")
}

// client is one udhcpc process on its own macvlan interface.
type client struct {
	name, events string
	cmd          *exec.Cmd
}

// client starts udhcpc on a new interface with MAC mac; extra are more
// udhcpc arguments.
func (d *dhcpLab) client(mac net.HardwareAddr, extra ...string) *client {
	d.t.Helper()
	d.n++
	c := &client{name: fmt.Sprintf("mv%d", d.n)}
	c.events = filepath.Join(d.dir, c.name+".events")
	d.host(c.name, mac, "")
	argv := append([]string{"busybox", "udhcpc", "-f", "-i", c.name, "-s", d.script, "-t", "20", "-T", "1", "-A", "1"}, extra...)
	cmd, err := d.StartWith(d.LAN, lab.StartOptions{Env: append(os.Environ(), "DHCP_EVENTS="+c.events)}, argv...)
	if err != nil {
		d.t.Fatal(err)
	}
	c.cmd = cmd
	return c
}

// lines returns the client's events, one per line.
func (c *client) lines() []string {
	b, _ := os.ReadFile(c.events)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// field returns the value of key in an event line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// waitEvent waits for the n-th (1-based) event of kind ev and returns it.
func (d *dhcpLab) waitEvent(c *client, ev string, n int, within time.Duration) string {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		seen := 0
		for _, l := range c.lines() {
			if strings.HasPrefix(l, ev+" ") {
				if seen++; seen == n {
					return l
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("%s: no %s event #%d within %s; events:\n%s\nclient output:\n%s", c.name, ev, n, within,
		strings.Join(c.lines(), "\n"), lab.Output(c.cmd))
	return ""
}

// count returns how many events of kind ev the client has had.
func (c *client) count(ev string) int {
	n := 0
	for _, l := range c.lines() {
		if strings.HasPrefix(l, ev+" ") {
			n++
		}
	}
	return n
}

// renewNow makes udhcpc renew at once (SIGUSR1: a unicast REQUEST from its
// address, the RENEWING state) instead of at T1, and returns the event.
// busybox raises short leases to at least 32 s, so waiting for T1 costs 16 s.
func (d *dhcpLab) renewNow(c *client) string {
	d.t.Helper()
	n := c.count("renew")
	if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		d.t.Fatal(err)
	}
	return d.waitEvent(c, "renew", n+1, 10*time.Second)
}

// waitReachable waits until the client's interface reaches dst again.
func (d *dhcpLab) waitReachable(c *client, dst string) {
	d.t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		_, err := d.Exec(d.LAN, "ping", "-c1", "-W5", "-I", c.name, dst)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s does not reach %s: %v", c.name, dst, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *dhcpLab) spec(first, last string) Spec {
	return Spec{
		Mode: ModeEmbedded, Interface: lab.LANIface,
		Range: [2]netip.Addr{addr(first), addr(last)},
		Lease: time.Hour,
		DNS:   []netip.Addr{lab.LANRouterAddr},
		NetNS: d.nsfd,
	}
}

// running is a server started by start; stop ends it and waits for Run.
type running struct {
	*Server
	stop func()
}

func (d *dhcpLab) start(spec Spec) *running {
	d.t.Helper()
	return d.startWith(spec, slog.New(slog.NewTextHandler(testWriter{d.t}, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
}

// startWith is start with a logger of the test's and a function that may
// change the server before it runs.
func (d *dhcpLab) startWith(spec Spec, log *slog.Logger, prepare func(*Server)) *running {
	d.t.Helper()
	s, err := New(spec, log)
	if err != nil {
		d.t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	r := &running{Server: s}
	var stopped bool
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				d.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			d.t.Fatal("Run did not return 10s after its context ended")
		}
	}
	d.t.Cleanup(r.stop)
	// Listening before a client asks: otherwise the first DISCOVERs are
	// lost and the test only measures the client's retry interval.
	deadline := time.Now().Add(waitLong)
	for !s.Status().Listening {
		if time.Now().After(deadline) {
			d.t.Fatalf("server not listening: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func mac(i byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0xdc, 0x00, 0x00, 0x00, i} }

// A known MAC gets its fixed address and hostname; other clients get
// distinct pool addresses with the configured options; the lease file
// holds them.
func TestLabFixedAndPoolAddresses(t *testing.T) {
	d := newDHCPLab(t)
	spec := d.spec("10.0.0.100", "10.0.0.119")
	known := mac(0x42)
	spec.Hosts = []Host{{Name: "node-2", MAC: known, IP: addr("10.0.0.20")}}
	spec.StateDir = filepath.Join(d.dir, "state")
	s := d.start(spec)

	kc := d.client(known)
	others := []*client{d.client(mac(1)), d.client(mac(2)), d.client(mac(3))}

	l := d.waitEvent(kc, "bound", 1, 20*time.Second)
	if field(l, "ip") != "10.0.0.20" || field(l, "hostname") != "node-2" {
		t.Errorf("known host: %s", l)
	}
	if field(l, "router") != "10.0.0.1" || field(l, "mask") != "24" || field(l, "serverid") != "10.0.0.1" || field(l, "lease") != "3600" {
		t.Errorf("options: %s", l)
	}
	seen := map[string]string{"10.0.0.20": kc.name}
	for _, c := range others {
		l := d.waitEvent(c, "bound", 1, 20*time.Second)
		ip := field(l, "ip")
		if a := addr(ip); a.Compare(addr("10.0.0.100")) < 0 || a.Compare(addr("10.0.0.119")) > 0 {
			t.Errorf("%s got %s, outside the pool", c.name, ip)
		}
		if field(l, "hostname") != "" {
			t.Errorf("%s got hostname %q", c.name, field(l, "hostname"))
		}
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both got %s", c.name, other, ip)
		}
		seen[ip] = c.name
	}
	st := s.Status()
	if st.InUse != 4 || st.StaticHosts != 1 || st.Free != 17 {
		t.Errorf("status in use %d, static %d, free %d; want 4, 1, 17", st.InUse, st.StaticHosts, st.Free)
	}
	recs, err := store{dir: spec.StateDir}.load()
	if err != nil || len(recs) != 4 {
		t.Errorf("lease file: %d records, %v", len(recs), err)
	}
}

// Renewal: with a short lease the client renews at T1 by unicast (RENEWING)
// and keeps its address; a renewal on demand does too.
func TestLabRenewal(t *testing.T) {
	d := newDHCPLab(t)
	spec := d.spec("10.0.0.100", "10.0.0.119")
	spec.Lease = 4 * time.Second
	s := d.start(spec)
	c := d.client(mac(1))
	ip := field(d.waitEvent(c, "bound", 1, 20*time.Second), "ip")
	if got := field(d.waitEvent(c, "renew", 1, 25*time.Second), "ip"); got != ip {
		t.Fatalf("renewal at T1: %s, want %s", got, ip)
	}
	if got := field(d.renewNow(c), "ip"); got != ip {
		t.Fatalf("renewal on demand: %s, want %s", got, ip)
	}
	st := s.Status()
	if st.Counters["request_renewing"] != 2 || st.Counters["nak"] != 0 {
		t.Errorf("counters %v: want 2 RENEWING requests and no NAK", st.Counters)
	}
}

// Leases survive a restart: the client renews its address with the new
// server, and a new client does not get the first client's address.
func TestLabLeasesSurviveRestart(t *testing.T) {
	d := newDHCPLab(t)
	spec := d.spec("10.0.0.100", "10.0.0.101")
	spec.StateDir = filepath.Join(d.dir, "state")
	s1 := d.start(spec)
	c1 := d.client(mac(1))
	ip := field(d.waitEvent(c1, "bound", 1, 20*time.Second), "ip")
	s1.stop()

	s2 := d.start(spec)
	if st := s2.Status(); st.InUse != 1 || len(st.Leases) != 1 || st.Leases[0].IP != addr(ip) {
		t.Fatalf("restarted server does not know the lease: %+v", st)
	}
	if renew := d.renewNow(c1); field(renew, "ip") != ip {
		t.Fatalf("after restart: %s, want %s", renew, ip)
	}
	c2 := d.client(mac(2))
	other := field(d.waitEvent(c2, "bound", 1, 20*time.Second), "ip")
	if other == ip {
		t.Fatalf("second client got the first client's address %s", ip)
	}
	if n := s2.Status().Counters["request_renewing"]; n < 1 {
		t.Errorf("restarted server saw %d RENEWING requests", n)
	}
}

// The LAN link flaps: the server binds again and clients still renew.
func TestLabLinkFlap(t *testing.T) {
	d := newDHCPLab(t)
	spec := d.spec("10.0.0.100", "10.0.0.119")
	spec.Lease = 4 * time.Second
	s := d.start(spec)
	c := d.client(mac(1))
	ip := field(d.waitEvent(c, "bound", 1, 20*time.Second), "ip")

	d.exec(d.Router, "ip", "link", "set", lab.LANIface, "down")
	s.LinkChanged(false)
	time.Sleep(500 * time.Millisecond)
	d.exec(d.Router, "ip", "link", "set", lab.LANIface, "up")
	s.LinkChanged(true)
	// The kernel reports carrier back asynchronously (up to a second);
	// renewing before that would only test that the client retries.
	d.waitReachable(c, lab.LANRouterAddr.String())
	for i := range 2 {
		if got := field(d.renewNow(c), "ip"); got != ip {
			t.Fatalf("renewal %d after the flap: %s, want %s", i+1, got, ip)
		}
	}
	if st := s.Status(); st.Binds != 2 || st.Counters["request_renewing"] != 2 {
		t.Errorf("binds %d, RENEWING requests %d; want 2 and 2 (counters %v)", st.Binds, st.Counters["request_renewing"], st.Counters)
	}
}

// The server's interface is deleted and created again (a new ifindex): the
// old socket hears nothing any more, so only re-binding on LinkChanged(true)
// keeps the clients renewing.
func TestLabInterfaceRecreated(t *testing.T) {
	d := newDHCPLab(t)
	// The server runs on srv0, a macvlan on lan0 that can be deleted
	// without tearing down the lab's LAN link.
	mk := func() {
		d.exec(d.Router, "ip", "link", "add", "srv0", "link", lab.LANIface, "address", "02:dc:00:00:01:01", "type", "macvlan", "mode", "bridge")
		d.exec(d.Router, "ip", "addr", "add", "10.0.0.5/24", "dev", "srv0")
		d.exec(d.Router, "ip", "link", "set", "srv0", "up")
	}
	mk()
	spec := d.spec("10.0.0.100", "10.0.0.119")
	spec.Interface = "srv0"
	spec.Lease = 4 * time.Second
	s := d.start(spec) // ServerIP unset: read from srv0 (10.0.0.5)
	c := d.client(mac(1))
	l := d.waitEvent(c, "bound", 1, 20*time.Second)
	ip := field(l, "ip")
	if field(l, "serverid") != "10.0.0.5" || field(l, "router") != "10.0.0.5" {
		t.Fatalf("server address not taken from the interface: %s", l)
	}

	d.exec(d.Router, "ip", "link", "del", "srv0")
	s.LinkChanged(false)
	mk()
	s.LinkChanged(true)
	if got := field(d.renewNow(c), "ip"); got != ip {
		t.Fatalf("renewal after the interface came back: %s, want %s", got, ip)
	}
	if st := s.Status(); st.Binds != 2 {
		t.Errorf("binds = %d, want 2", st.Binds)
	}
}

// More clients than addresses: every address goes to one client only, and
// the clients left over get nothing.
func TestLabNoAddressTwice(t *testing.T) {
	d := newDHCPLab(t)
	s := d.start(d.spec("10.0.0.100", "10.0.0.103"))
	var cs []*client
	for i := range 6 {
		cs = append(cs, d.client(mac(byte(10+i))))
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Status().InUse < 4 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// The two left over try and fail: each DISCOVER without an address to
	// offer counts (they retry every second); four of them mean the
	// server has refused them again and again, not just once in passing.
	for deadline := time.Now().Add(waitLong); s.Status().Counters["pool_exhausted"] < 4; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the clients left over were not refused: %+v", s.Status())
		}
	}
	owner := map[string]string{}
	bound := 0
	for _, c := range cs {
		for _, l := range c.lines() {
			if strings.HasPrefix(l, "bound ") {
				ip := field(l, "ip")
				if o, dup := owner[ip]; dup && o != c.name {
					t.Errorf("%s given to %s and %s", ip, o, c.name)
				}
				owner[ip] = c.name
				bound++
				break
			}
		}
	}
	if bound != 4 {
		t.Errorf("%d clients bound, want 4 (the pool size)", bound)
	}
	if st := s.Status(); st.InUse != 4 || st.Free != 0 || st.Counters["pool_exhausted"] == 0 {
		t.Errorf("status %+v", st)
	}
}

// An address of the pool already used by a host is skipped, whether that
// host answers ping or only ARP.
func TestLabConflictCheck(t *testing.T) {
	for _, tt := range []struct {
		name       string
		ignorePing bool
	}{{"host answers ping", false}, {"host ignores ping", true}} {
		t.Run(tt.name, func(t *testing.T) {
			d := newDHCPLab(t)
			d.host("squat0", net.HardwareAddr{0x02, 0xdc, 0, 0, 0x0f, 0x01}, "10.0.0.100")
			if tt.ignorePing {
				if err := d.Sysctl(d.LAN, "net.ipv4.icmp_echo_ignore_all", "1"); err != nil {
					t.Fatal(err)
				}
			}
			spec := d.spec("10.0.0.100", "10.0.0.103")
			spec.ConflictCheck = true
			s := d.start(spec)
			c := d.client(mac(1))
			if ip := field(d.waitEvent(c, "bound", 1, 20*time.Second), "ip"); ip == "10.0.0.100" {
				t.Fatal("client got the address another host uses")
			}
			st := s.Status()
			if st.Counters["conflict"] != 1 || st.Bad != 1 {
				t.Errorf("conflicts %d, bad %d; want 1, 1", st.Counters["conflict"], st.Bad)
			}
		})
	}
}

// DECLINE: without the server's own check, the client finds the offered
// address in use (udhcpc -a: ARP check), declines it and gets another.
func TestLabDecline(t *testing.T) {
	d := newDHCPLab(t)
	d.host("squat0", net.HardwareAddr{0x02, 0xdc, 0, 0, 0x0f, 0x01}, "10.0.0.100")
	s := d.start(d.spec("10.0.0.100", "10.0.0.103"))
	c := d.client(mac(1), "-a500")
	if ip := field(d.waitEvent(c, "bound", 1, 30*time.Second), "ip"); ip == "10.0.0.100" {
		t.Fatal("client bound the address another host uses")
	}
	st := s.Status()
	if st.Counters["decline"] != 1 || st.Bad != 1 {
		t.Errorf("declines %d, bad %d; want 1, 1", st.Counters["decline"], st.Bad)
	}
}

// dhclientScript is ISC dhclient's event script ($reason: PREINIT, BOUND,
// RENEW, REBIND, REBOOT, EXPIRE...); it logs in the udhcpc events' format.
const dhclientScript = `#!/bin/sh
case "$reason" in
BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
  echo "$reason ip=$new_ip_address router=$new_routers hostname=$new_host_name lease=$new_dhcp_lease_time" >> "$DHCP_EVENTS" ;;
esac
`

// A second real client: ISC dhclient (no client identifier, its own
// timers) gets the fixed address and hostname of its MAC and renews it.
func TestLabDhclient(t *testing.T) {
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Skip("needs dhclient (isc-dhcp-client)")
	}
	d := newDHCPLab(t)
	script := filepath.Join(d.dir, "dhclient.script")
	if err := os.WriteFile(script, []byte(dhclientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := d.spec("10.0.0.100", "10.0.0.119")
	spec.Lease = 4 * time.Second
	known := mac(0x43)
	spec.Hosts = []Host{{Name: "node-3", MAC: known, IP: addr("10.0.0.30")}}
	s := d.start(spec)
	for i, m := range []net.HardwareAddr{known, mac(7)} {
		name := fmt.Sprintf("dc%d", i)
		d.host(name, m, "")
		c := &client{name: name, events: filepath.Join(d.dir, name+".events")}
		// dhclient clears the script's environment; -e passes a variable.
		cmd, err := d.Start(d.LAN, "dhclient", "-d", "-4", "-e", "DHCP_EVENTS="+c.events, "-sf", script, "-lf", filepath.Join(d.dir, name+".leases"),
			"-pf", filepath.Join(d.dir, name+".pid"), name)
		if err != nil {
			t.Fatal(err)
		}
		c.cmd = cmd
		l := d.waitEvent(c, "BOUND", 1, 20*time.Second)
		ip := field(l, "ip")
		if i == 0 && (ip != "10.0.0.30" || field(l, "hostname") != "node-3") {
			t.Errorf("known host: %s", l)
		}
		if i == 1 && (ip < "10.0.0.100" || ip > "10.0.0.119" || field(l, "hostname") != "") {
			t.Errorf("pool host: %s", l)
		}
		if r := d.waitEvent(c, "RENEW", 1, 20*time.Second); field(r, "ip") != ip {
			t.Errorf("renewed %s, want %s", r, ip)
		}
	}
	if st := s.Status(); st.Counters["request_renewing"] < 2 || st.Counters["nak"] != 0 {
		t.Errorf("counters %v", st.Counters)
	}
}

// The LAN address changes without a link flap: after Rebind the server
// answers from, and hands out, the new address.
func TestLabAddressChanged(t *testing.T) {
	d := newDHCPLab(t)
	spec := d.spec("10.0.0.100", "10.0.0.119") // ServerIP unset: read from lan0
	s := d.start(spec)
	c := d.client(mac(1))
	if l := d.waitEvent(c, "bound", 1, 20*time.Second); field(l, "serverid") != "10.0.0.1" {
		t.Fatalf("before: %s", l)
	}
	d.exec(d.Router, "ip", "addr", "del", "10.0.0.1/24", "dev", lab.LANIface)
	d.exec(d.Router, "ip", "addr", "add", "10.0.0.6/24", "dev", lab.LANIface)
	s.Rebind()
	c2 := d.client(mac(2))
	if l := d.waitEvent(c2, "bound", 1, 20*time.Second); field(l, "serverid") != "10.0.0.6" || field(l, "router") != "10.0.0.6" {
		t.Fatalf("after the change: %s", l)
	}
	if st := s.Status(); st.Binds != 2 {
		t.Errorf("binds %d, want 2", st.Binds)
	}
}

// Malformed packets on port 67 are dropped and counted; the server keeps
// serving.
func TestLabMalformedDropped(t *testing.T) {
	d := newDHCPLab(t)
	s := d.start(d.spec("10.0.0.100", "10.0.0.119"))
	var conn net.Conn
	if err := d.Do(d.LAN, func() (err error) {
		conn, err = net.Dial("udp4", "10.0.0.1:67")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good := msg(t, 1, hw(9)) // a DISCOVER
	junk := [][]byte{{}, {0xff}, good[:100], good[:239], append(append([]byte{}, good[:236]...), 1, 2, 3, 4, 5, 6)}
	bad := append([]byte{}, good...)
	bad[0] = 2 // a reply sent to the server
	junk = append(junk, bad)
	for _, j := range junk {
		if _, err := conn.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(waitLong)
	for s.Status().Dropped < uint64(len(junk)-1) { // the empty datagram may not count
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d of %d", s.Status().Dropped, len(junk))
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := d.client(mac(1))
	d.waitEvent(c, "bound", 1, 20*time.Second)
}
