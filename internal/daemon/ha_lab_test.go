package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/ha"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// Two gateways with real keepalived (Debian's) in lab namespaces: each router
// runs keepalived with the track file its uplinkd writes and the shipped
// notify script, which calls the real `uplinkd event --role` against a
// control socket served by this test (control.Serve with haHandler: what the
// daemon's own Handler does with a role). The LAN client's gateway is the
// virtual address.

// haHandler is the control socket's Handler for these tests: role events go
// to Daemon.SetRole, status carries the HA section.
type haHandler struct{ d *Daemon }

func (h haHandler) Status(context.Context) (control.Status, error) {
	return control.Status{V: 1, HA: h.d.HAStatus()}, nil
}
func (h haHandler) Reconnect(context.Context, string) error { return errors.New("not in this test") }
func (h haHandler) Drain(context.Context, control.Drain) error {
	return errors.New("not in this test")
}
func (h haHandler) Reload(context.Context) ([]string, error) {
	return nil, errors.New("not in this test")
}
func (h haHandler) Event(ctx context.Context, ev control.Event) error {
	if ev.Role == "" {
		return nil
	}
	return h.d.SetRole(ctx, string(ev.Role))
}

// haOpts varies the pair.
type haOpts struct {
	// kaWeight is keepalived's weight for the track file: 1 (priority
	// follows the value) or 0 (any non-zero value is FAULT).
	kaWeight     int
	preemptDelay int
	exclusive    bool // each router also has dsl0, one account for both
	// binary runs `uplinkd run` as a process (no control socket: role
	// events are not delivered) and has keepalived track it.
	binary bool
	// alive adds a keepalived vrrp_script that checks the uplinkd binary
	// runs (pgrep on its command line), weight 0: FAULT when it does not.
	// keepalived's track_process, the choice on a real gateway, cannot be
	// used here: it needs the proc connector, which exists only in the
	// initial network namespace ("Failed to set/clear process event listen"
	// inside a lab namespace).
	alive bool
}

type haRouter struct {
	name   string // "A" or "B"
	lab    *lab.Lab
	dir    string
	track  string
	conf   string
	run    *running  // in-process daemon
	proc   *exec.Cmd // uplinkd binary (opts.binary)
	ka     *exec.Cmd
	prefix []netip.Prefix // its uplinks' customer subnets
}

type haPair struct {
	t       testing.TB
	p       *lab.Pair
	r       [2]*haRouter
	acct    *account
	server  string // inet echo server "addr:port": answers with the client's address
	opts    haOpts
	uplinkd string
}

func haPairSpec(exclusive bool) lab.PairSpec {
	var s lab.PairSpec
	for i := range s.Uplinks {
		s.Uplinks[i] = []lab.UplinkSpec{{Name: "ppp0", Kind: "ppp"}, {Name: "ppp1", Kind: "ppp"}}
		if exclusive {
			s.Uplinks[i] = append(s.Uplinks[i], lab.UplinkSpec{Name: "dsl0", Kind: "ppp"})
		}
	}
	return s
}

// -127 per line: one line lost lowers the priority below the peer's (a
// fail-over after preempt_delay), both lost sum to -254, which keepalived
// takes as FAULT: the address moves at once.
const haUplinkConfig = `
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[ha]
track_file = %q
lost_uplink_weight = -127

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300
`

const haExclusiveConfig = `
[[uplink]]
name = "dsl0"
kind = "ppp"
table = 202
rule_priority = 400
tier = 2
  [uplink.ha]
  mode = "exclusive"
  [uplink.reconnect]
  command = [%q, "dial", %q]
  stop_command = [%q, "hangup", %q]
  backoff = "500ms"
  max_backoff = "1s"
  timeout = "5s"
`

const keepalivedConf = `
global_defs {
	router_id uplinkd_lab_%[1]s
	script_user root
	vrrp_garp_master_repeat 2
}
track_file uplinkd_health {
	file "%[2]s"
	weight %[3]d
	init_file -254
}
%[4]s
vrrp_instance LAN {
	state BACKUP
	interface lan0
	virtual_router_id 51
	priority %[5]d
	advert_int 1
	preempt_delay %[6]d
	virtual_ipaddress {
		10.0.0.1/24 dev lan0
	}
	track_file {
		uplinkd_health
	}
	%[7]s
	notify "%[8]s"
}
`

func newHAPair(t testing.TB, opts haOpts) *haPair {
	t.Helper()
	if reason := lab.Unsupported(); reason != "" {
		t.Skip("lab: " + reason)
	}
	kaBin, err := exec.LookPath("keepalived")
	if err != nil {
		if kaBin, err = exec.LookPath("/usr/sbin/keepalived"); err != nil {
			t.Skip("keepalived not installed (scripts/deps.sh installs it)")
		}
	}
	p, err := lab.NewPair(haPairSpec(opts.exclusive))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("pair close: %v", err)
		}
	})
	hp := &haPair{t: t, p: p, opts: opts, uplinkd: uplinkdBinary(t)}
	notify, err := filepath.Abs("../../packaging/keepalived/uplinkd-notify")
	if err != nil {
		t.Fatal(err)
	}
	hp.startServer()
	if opts.exclusive {
		hp.acct = newAccount(t, p.Routers[:], hp.role)
	}
	for i, l := range p.Routers {
		r := &haRouter{name: string(rune('A' + i)), lab: l, dir: t.TempDir()}
		hp.r[i] = r
		r.track = filepath.Join(r.dir, "ha-track")
		for _, u := range l.Uplinks() {
			if u.Name != "dsl0" {
				r.prefix = append(r.prefix, lab.CustomerPrefix(l.UplinkIndex(u.Name)))
			}
		}
		// Each router's daemon gets a control socket and a state
		// directory of its own: the defaults are on the host's file
		// system, shared by both (and the host's own).
		text := fmt.Sprintf("[daemon]\ncontrol_socket = %q\nstate_dir = %q\n", filepath.Join(r.dir, "daemon.sock"), filepath.Join(r.dir, "state")) +
			fmt.Sprintf(haUplinkConfig, r.track)
		if opts.exclusive {
			// The lab dialled every uplink at build time; the account
			// starts free, and only the MASTER may take it.
			if _, err := l.DropLink("dsl0"); err != nil {
				t.Fatal(err)
			}
			text += fmt.Sprintf(haExclusiveConfig, hp.acct.script, r.name, hp.acct.script, r.name)
		}
		r.conf = filepath.Join(r.dir, "uplinkd.toml")
		if err := os.WriteFile(r.conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range hp.r {
		sock := filepath.Join(r.dir, "ctl.sock")
		if opts.binary {
			r.proc = hp.startBinary(r)
		} else {
			r.run = start(t, r.lab, r.conf)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- control.Serve(ctx, control.Options{Path: sock, Group: -1}, haHandler{r.run.d}) }()
			t.Cleanup(func() { cancel(); <-done })
		}
		alive, aliveRef := "", ""
		if opts.alive {
			script := filepath.Join(r.dir, "uplinkd-alive")
			if err := os.WriteFile(script, []byte("#!/bin/sh\nexec pgrep -f -x '"+hp.uplinkd+" run "+r.conf+"' >/dev/null\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			alive = fmt.Sprintf("vrrp_script uplinkd_alive {\n\tscript %q\n\tinterval 1\n\tfall 1\n\trise 1\n\tweight 0\n}\n", script)
			aliveRef = "track_script {\n\t\tuplinkd_alive\n\t}"
		}
		conf := fmt.Sprintf(keepalivedConf, r.name, r.track, opts.kaWeight, alive, 110-10*i, opts.preemptDelay,
			aliveRef, notify+" --uplinkd "+hp.uplinkd+" --socket "+sock)
		kaConf := filepath.Join(r.dir, "keepalived.conf")
		if err := os.WriteFile(kaConf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		r.ka, err = r.lab.Start(r.lab.Router, kaBin, "-n", "-l", "-D", "-P", "-f", kaConf,
			"-p", filepath.Join(r.dir, "keepalived.pid"), "-r", filepath.Join(r.dir, "vrrp.pid"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("keepalived %s:\n%s", r.name, lab.Output(r.ka))
			}
		})
	}
	return hp
}

// startBinary runs `uplinkd run CONF` in the router's namespace.
func (hp *haPair) startBinary(r *haRouter) *exec.Cmd {
	hp.t.Helper()
	cmd, err := r.lab.Start(r.lab.Router, hp.uplinkd, "run", r.conf)
	if err != nil {
		hp.t.Fatal(err)
	}
	hp.t.Cleanup(func() {
		if hp.t.Failed() {
			hp.t.Logf("uplinkd %s:\n%s", r.name, lab.Output(cmd))
		}
	})
	// Stopped before the router's directory is removed (cleanups run last
	// registered first; the lab, which would stop it, closes after): a
	// running uplinkd writes its track file back when it is removed.
	hp.t.Cleanup(func() {
		if r.lab.Exited(cmd) {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = r.lab.Wait(cmd); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

// startServer listens in the inet namespace and answers every connection
// with the address it came from: the LAN client learns which gateway's
// uplink its connection left through.
func (hp *haPair) startServer() {
	ln, err := hp.p.Routers[0].ListenIn(hp.p.Inet, "tcp", lab.InetHosts[2].String()+":0")
	if err != nil {
		hp.t.Fatal(err)
	}
	hp.t.Cleanup(func() { ln.Close() })
	hp.server = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			c.Close()
		}
	}()
}

// source opens one new connection from the LAN client through the virtual
// gateway and returns the source address the inet server saw.
func (hp *haPair) source(timeout time.Duration) (netip.Addr, error) {
	c, err := hp.p.Routers[0].DialIn(hp.p.LAN, "tcp", "", hp.server, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(strings.TrimSpace(line))
}

// owner is the router whose uplinks a source address belongs to, or -1.
func (hp *haPair) owner(a netip.Addr) int {
	for i, r := range hp.r {
		for _, p := range r.prefix {
			if p.Contains(a) {
				return i
			}
		}
	}
	return -1
}

// waitThrough waits until the client's new connections leave through router
// i's uplinks and returns when the first one did.
func (hp *haPair) waitThrough(i int, within time.Duration) time.Time {
	hp.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		a, err := hp.source(300 * time.Millisecond)
		if err == nil && hp.owner(a) == i {
			return time.Now()
		}
		last = fmt.Sprintf("%v %v", a, err)
		time.Sleep(20 * time.Millisecond)
	}
	hp.t.Fatalf("the client's connections do not leave through router %s within %v (last: %s)\n%s", hp.r[i].name, within, last, hp.state())
	return time.Time{}
}

// hasVIP reports whether router i holds the virtual address.
func (hp *haPair) hasVIP(i int) bool {
	out, err := hp.r[i].lab.Exec(hp.r[i].lab.Router, "ip", "-4", "addr", "show", "dev", "lan0")
	return err == nil && strings.Contains(out, "inet "+lab.PairVIP.String()+"/")
}

func (hp *haPair) role(i int) string {
	if hp.r[i].run == nil {
		return "?"
	}
	role, _, _ := hp.r[i].run.d.HAState()
	return role
}

func (hp *haPair) state() string {
	var b strings.Builder
	for i, r := range hp.r {
		v, err := ha.Read(r.track)
		fmt.Fprintf(&b, "router %s: vip %v role %s track %d (%v)\n", r.name, hp.hasVIP(i), hp.role(i), v, err)
	}
	return b.String()
}

// eventually polls cond every 20 ms for up to within.
func (hp *haPair) eventually(what string, within time.Duration, cond func() bool) time.Time {
	hp.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			hp.t.Fatalf("timed out (%v) waiting for: %s\n%s", within, what, hp.state())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now()
}

// settle waits for the initial election: A (priority 110) is MASTER, B is
// BACKUP and both daemons know it.
func (hp *haPair) settle() {
	hp.t.Helper()
	hp.eventually("A holds the virtual address", waitLong, func() bool { return hp.hasVIP(0) && !hp.hasVIP(1) })
	if !hp.opts.binary {
		hp.eventually("roles reported: A master, B backup", waitLong, func() bool {
			return hp.role(0) == "master" && hp.role(1) == "backup"
		})
	}
	hp.waitThrough(0, waitLong)
}

// statusRole checks `uplinkd status --json` (the real CLI) against router
// i's control socket: the ha section carries the role and since when.
func (hp *haPair) statusRole(i int, want string) {
	hp.t.Helper()
	sock := filepath.Join(hp.r[i].dir, "ctl.sock")
	out, err := exec.Command(hp.uplinkd, "status", "--json", "--socket", sock).CombinedOutput()
	if err != nil {
		hp.t.Fatalf("uplinkd status: %v\n%s", err, out)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		hp.t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if st.HA == nil || string(st.HA.Role) != want || st.HA.Since.IsZero() {
		hp.t.Errorf("router %s status ha = %+v, want role %s with since (%s)", hp.r[i].name, st.HA, want, out)
	}
}

func (hp *haPair) setCarrier(i int, up bool) time.Time {
	hp.t.Helper()
	var at time.Time
	for _, u := range []string{"ppp0", "ppp1"} {
		var err error
		if at, err = hp.r[i].lab.SetCarrier(u, up); err != nil {
			hp.t.Fatal(err)
		}
	}
	return at
}

func TestHAFailover(t *testing.T) {
	for _, w := range []int{1, 0} {
		t.Run(fmt.Sprintf("keepalived weight %d", w), func(t *testing.T) {
			const preempt = 3
			hp := newHAPair(t, haOpts{kaWeight: w, preemptDelay: preempt})
			hp.settle()
			if v, err := ha.Read(hp.r[0].track); err != nil || v != 0 {
				t.Fatalf("A's track file = %d, %v; want 0 with every uplink up", v, err)
			}
			hp.statusRole(0, "master")
			hp.statusRole(1, "backup")

			// Both of the master's lines lose carrier: its track file says
			// -254 (FAULT), B takes the address, and the client's new
			// connections leave through B's uplinks.
			lost := hp.setCarrier(0, false)
			moved := hp.waitThrough(1, waitLong)
			t.Logf("A's uplinks lost -> client's first connection through B: %v", moved.Sub(lost))
			if v, err := ha.Read(hp.r[0].track); err != nil || v != -254 {
				t.Errorf("A's track file = %d, %v; want -254 with both lines lost", v, err)
			}
			hp.eventually("roles: A fault, B master", waitLong, func() bool {
				return hp.role(0) == "fault" && hp.role(1) == "master" && hp.hasVIP(1) && !hp.hasVIP(0)
			})

			// Restored: A leaves FAULT, and takes the address back only
			// after the preemption delay.
			restored := hp.setCarrier(0, true)
			hp.eventually("A's track file back to 0", waitLong, func() bool {
				v, err := ha.Read(hp.r[0].track)
				return err == nil && v == 0
			})
			back := hp.waitThrough(0, waitLong)
			t.Logf("A's uplinks restored -> client's first connection through A: %v (preempt_delay %ds)", back.Sub(restored), preempt)
			if back.Sub(restored) < preempt*time.Second {
				t.Errorf("fail-back after %v, before the preemption delay of %ds", back.Sub(restored), preempt)
			}
			hp.eventually("roles: A master, B backup", waitLong, func() bool {
				return hp.role(0) == "master" && hp.role(1) == "backup"
			})
		})
	}
}

// TestHAExclusive: one account for both gateways (dsl0, mode exclusive) is
// dialled only by the MASTER; when the role moves, the old master hangs up
// and the new one dials within the pass after its role event.
func TestHAExclusive(t *testing.T) {
	hp := newHAPair(t, haOpts{kaWeight: 1, preemptDelay: 3, exclusive: true})
	hp.settle()
	hp.eventually("A (master) holds the dsl0 session", waitLong, func() bool { return hp.acct.session() == 0 })
	if v, err := ha.Read(hp.r[1].track); err != nil || v != 0 {
		t.Errorf("B's track file = %d, %v; want 0: an exclusive uplink a BACKUP has not dialled counts as available", v, err)
	}

	hp.setCarrier(0, false)
	hp.eventually("B (new master) holds the dsl0 session, A hung up", waitLong, func() bool {
		return hp.role(1) == "master" && hp.acct.session() == 1 && !hp.r[0].lab.UplinkAddr("dsl0").IsValid()
	})
	hp.setCarrier(0, true)
	hp.eventually("A master again and holding the session", 20*time.Second, func() bool {
		return hp.role(0) == "master" && hp.acct.session() == 0 && !hp.r[1].lab.UplinkAddr("dsl0").IsValid()
	})

	hp.acct.mu.Lock()
	defer hp.acct.mu.Unlock()
	if len(hp.acct.dials) < 3 {
		t.Errorf("dials %+v: want A, B, A", hp.acct.dials)
	}
	for _, d := range hp.acct.dials {
		if d.role != "master" {
			t.Errorf("router %s dialled the shared account as %s: only the MASTER may (dials %+v)", hp.r[d.router].name, d.role, hp.acct.dials)
		}
	}
	t.Logf("dials %+v, refused %d", hp.acct.dials, hp.acct.refused)
}

// TestHADaemonStops: the master's uplinkd goes away while keepalived keeps
// running. Killed (SIGKILL), it cannot touch its track file, which still says
// 0: a keepalived check on the uplinkd process puts the instance into FAULT
// (a vrrp_script here; track_process on a real gateway, see haOpts.alive).
// Stopped cleanly (SIGTERM), uplinkd writes -254 into the file itself, which
// is FAULT without any track_process.
func TestHADaemonStops(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		alive bool
		track int // A's track file afterwards
	}{
		{"kill -9 with a process check", syscall.SIGKILL, true, 0},
		{"clean stop, track file only", syscall.SIGTERM, false, ha.StoppedWeight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hp := newHAPair(t, haOpts{kaWeight: 1, preemptDelay: 3, binary: true, alive: tc.alive})
			hp.settle()
			a := hp.r[0]
			if err := a.proc.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			at := time.Now()
			if err := a.lab.Wait(a.proc); tc.sig == syscall.SIGTERM && err != nil {
				t.Errorf("uplinkd after SIGTERM: %v", err)
			}
			moved := hp.waitThrough(1, waitLong)
			t.Logf("A's uplinkd %v -> client's first connection through B: %v", tc.sig, moved.Sub(at))
			hp.eventually("B holds the virtual address", waitLong, func() bool { return hp.hasVIP(1) && !hp.hasVIP(0) })
			if v, err := ha.Read(a.track); err != nil || v != tc.track {
				t.Errorf("A's track file = %d, %v; want %d", v, err, tc.track)
			}
		})
	}
}
