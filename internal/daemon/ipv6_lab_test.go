package daemon

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// ipv6Lab: two ethernet uplinks and a ppp one, all with IPv6 addresses.
func ipv6Lab(t *testing.T) *lab.Lab {
	return lab.NewT(t, lab.Spec{IPv6: true, Uplinks: []lab.UplinkSpec{
		{Name: "eth1", Kind: lab.KindEthernet}, {Name: "eth2", Kind: lab.KindEthernet}, {Name: "ppp0", Kind: lab.KindPPP}}})
}

// ipv6Config: a (eth1, weight 1) and b (eth2, weight 3) with ipv6 on, the
// ISP's link-local router as gateway6, each probed over IPv4 and IPv6; c
// (ppp0, tier 2) with ipv6 off although its link has an IPv6 address.
func ipv6Config(l *lab.Lab) string {
	var b strings.Builder
	b.WriteString("[lan]\ninterface = \"lan0\"\n")
	for i, name := range []string{"eth1", "eth2"} {
		fmt.Fprintf(&b, `
[[uplink]]
name = %q
interface = %q
kind = "ethernet"
table = %d
rule_priority = %d
gateway = %q
weight = %d
ipv6 = true
gateway6 = %q
  [uplink.check]
  targets = [%q, %q]
  interval = "200ms"
  timeout = "150ms"
  down = 3
  up = 3
  hold_down = "0s"
`, string(rune('a'+i)), name, 100+i, 100+i, l.ISPAddr(name), 1+2*i, lab.ISPLinkLocal, lab.InetHosts[0], lab.InetHosts6[0])
	}
	b.WriteString(`
[[uplink]]
name = "c"
interface = "ppp0"
kind = "ppp"
table = 102
rule_priority = 102
tier = 2
`)
	return b.String()
}

func uplinkStatus(t *testing.T, st control.Status, name string) control.Uplink {
	t.Helper()
	for _, u := range st.Uplinks {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("no uplink %s in the status", name)
	return control.Uplink{}
}

// TestLabIPv6: source rules and per-table defaults for the uplinks with
// ipv6 on and nothing for the one without; a weighted IPv6 default; an
// IPv6 blackhole on one uplink moves the IPv6 default and leaves IPv4
// alone; an address change rewrites the rules, the new one first.
func TestLabIPv6(t *testing.T) {
	l := ipv6Lab(t)
	r := start(t, l, writeConfig(t, ipv6Config(l)))
	a6, b6 := l.UplinkAddr6("eth1"), l.UplinkAddr6("eth2")
	r.eventually("weighted IPv6 default", func() bool {
		m := r.ip("-6", "route", "show", "table", "157")
		return strings.Contains(m, "nexthop via fe80::1 dev eth1 weight 1") && strings.Contains(m, "nexthop via fe80::1 dev eth2 weight 3")
	})
	r.eventually("IPv6 source rules", func() bool {
		rules := r.ip("-6", "rule")
		return strings.Contains(rules, "from "+a6.String()+" lookup 100") && strings.Contains(rules, "from "+b6.String()+" lookup 101") &&
			strings.Contains(rules, "lookup main suppress_prefixlength 0")
	})
	r.eventually("per-table IPv6 default", r.has("default via fe80::1 dev eth1 proto 157", "-6", "route", "show", "table", "100"))
	// c has ipv6 off: no IPv6 rule or route of its own, its IPv4 is there.
	if rules := r.ip("-6", "rule"); strings.Contains(rules, "lookup 102") {
		t.Errorf("an IPv6 rule for c, whose ipv6 is off:\n%s", rules)
	}
	if routes := r.ip("-6", "route", "show", "table", "all"); strings.Contains(routes, "table 102") || strings.Contains(routes, "dev ppp0 proto 157") {
		t.Errorf("an IPv6 route for c, whose ipv6 is off:\n%s", routes)
	}
	r.eventually("c's IPv4 rule", r.has("lookup 102", "rule"))
	// Real traffic: the router reaches the IPv6 internet host, from each
	// uplink's address through that uplink.
	for _, src := range []string{a6.String(), b6.String()} {
		mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", "-I", src, lab.InetHosts6[0].String())
	}
	mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", lab.InetHosts6[0].String())

	st := r.statusJSON()
	if v := uplinkStatus(t, st, "a").IPv6; v == nil || v.Address != a6 || !v.Default {
		t.Fatalf("a's IPv6 status = %+v, want address %s and default", v, a6)
	}
	if v := uplinkStatus(t, st, "c").IPv6; v != nil {
		t.Fatalf("c has ipv6 off but an IPv6 status: %+v", v)
	}

	// IPv6 dies upstream of eth1; its IPv4 and its link stay.
	if err := l.Blackhole6("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("IPv6 default via eth2 only", r.has("default via fe80::1 dev eth2 proto 157", "-6", "route", "show", "table", "157"))
	if m := r.ip("route", "show", "table", "157"); !strings.Contains(m, "dev eth1") || !strings.Contains(m, "dev eth2") {
		t.Fatalf("IPv4 default changed with eth1's IPv6:\n%s", m)
	}
	mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", lab.InetHosts6[0].String())
	mustExec(t, l, l.Router, "ping", "-c1", "-W2", "-I", l.UplinkAddr("eth1").String(), lab.InetHosts[0].String())
	var a control.Uplink
	r.eventually("a's status: IPv4 up, IPv6 failed", func() bool {
		a = uplinkStatus(t, r.statusJSON(), "a")
		return a.State == control.StateUp && a.IPv6 != nil && a.IPv6.State == control.StateFailed
	})
	if a.IPv6.Default || !a.Default {
		t.Fatalf("a with failed IPv6: IPv6 default %v, IPv4 default %v; want false, true", a.IPv6.Default, a.Default)
	}
	if err := l.Blackhole6("eth1", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("eth1 back in the IPv6 default", r.has("nexthop via fe80::1 dev eth1 weight 1", "-6", "route", "show", "table", "157"))

	// Renumbering: a new address comes, the old one goes. The new rule
	// is there while the old address still is (make-before-break), and the
	// old rule leaves with its address.
	pfx := lab.CustomerPrefix6(l.UplinkIndex("eth1"))
	n := pfx.Addr().As16()
	n[15] = 0x99
	renum := netip.AddrFrom16(n).String()
	mustExec(t, l, l.Router, "ip", "addr", "add", renum+"/64", "dev", "eth1", "nodad")
	r.eventually("rule for the new address", r.has("from "+renum+" lookup 100", "-6", "rule"))
	if rules := r.ip("-6", "rule"); !strings.Contains(rules, "from "+a6.String()+" lookup 100") {
		t.Fatalf("the old address's rule went before the address:\n%s", rules)
	}
	mustExec(t, l, l.Router, "ip", "addr", "del", a6.String()+"/64", "dev", "eth1")
	r.eventually("old rule gone", r.lacks("from "+a6.String()+" ", "-6", "rule"))
	mustExec(t, l, l.Router, "ping", "-6", "-c1", "-W2", "-I", renum, lab.InetHosts6[0].String())
	// Deprecated (preferred lifetime 0): no rule for it.
	mustExec(t, l, l.Router, "ip", "addr", "change", renum+"/64", "dev", "eth1", "preferred_lft", "0")
	r.eventually("deprecated address loses its rule", r.lacks("from "+renum+" ", "-6", "rule"))
	r.eventually("eth1 out of the IPv6 default", r.lacks("dev eth1", "-6", "route", "show", "table", "157"))
}

// TestLabIPv6Off: an IPv4-only config on a box with IPv6 writes no IPv6
// rule or route at all.
func TestLabIPv6Off(t *testing.T) {
	l := ipv6Lab(t)
	cfg := strings.ReplaceAll(ipv6Config(l), "ipv6 = true", "ipv6 = false")
	cfg = strings.ReplaceAll(cfg, fmt.Sprintf("gateway6 = %q\n", lab.ISPLinkLocal), "")
	cfg = strings.ReplaceAll(cfg, fmt.Sprintf(", %q]", lab.InetHosts6[0]), "]")
	r := start(t, l, writeConfig(t, cfg))
	r.eventually("IPv4 default", r.has("dev eth2", "route", "show", "table", "157"))
	if rules := r.ip("-6", "rule"); strings.Contains(rules, "proto 157") {
		t.Errorf("IPv6 rules of uplinkd with ipv6 off:\n%s", rules)
	}
	if routes := r.ip("-6", "route", "show", "table", "all"); strings.Contains(routes, "proto 157") {
		t.Errorf("IPv6 routes of uplinkd with ipv6 off:\n%s", routes)
	}
	if v := uplinkStatus(t, r.statusJSON(), "a").IPv6; v != nil {
		t.Errorf("IPv6 status with ipv6 off: %+v", v)
	}
}

// TestLabIPv6Health: an IPv6-only outage on one uplink is reported like
// an IPv4 one, from the running daemon: the probe6-down and probe6-up
// hooks run with UPLINKD_FAMILY=ipv6 and the uplink's IPv6 address, the
// journal records say family=ipv6, the uplinkd_uplink_ipv6_* series follow
// (the IPv4 ones stay up), and no reconnect is made for it.
func TestLabIPv6Health(t *testing.T) {
	l := ipv6Lab(t)
	dir := t.TempDir()
	trace := newTrace(t)
	hook := script(t, dir, "hook", `echo "$UPLINKD_EVENT,$UPLINKD_FAMILY,$UPLINKD_NEW_IP" >> `+trace.path)
	redial := script(t, dir, "redial", `echo "reconnect" >> `+trace.path)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Two IPv6 targets: a round has a jitter.
	v6targets := strings.ReplaceAll(ipv6Config(l), fmt.Sprintf("%q]", lab.InetHosts6[0]), fmt.Sprintf("%q, %q]", lab.InetHosts6[0], lab.InetHosts6[1]))
	cfg := fmt.Sprintf("[daemon]\nmetrics_listen = %q\n", ln.Addr()) + strings.Replace(v6targets, `  hold_down = "0s"
`, fmt.Sprintf(`  hold_down = "0s"
  [[uplink.hook]]
  on = ["probe-down", "probe-up", "probe6-down", "probe6-up"]
  command = [%q]
  [uplink.reconnect]
  command = [%q]
  reconnect_after = "1s"
`, hook, redial), 1)
	r := startWith(t, l, writeConfig(t, cfg), ln)
	a6 := l.UplinkAddr6("eth1")
	up6, failed6 := `uplinkd_uplink_ipv6_state{uplink="a",state="up"} 1`, `uplinkd_uplink_ipv6_state{uplink="a",state="failed"} 1`
	up4 := `uplinkd_uplink_state{uplink="a",state="up"} 1`
	r.eventually("IPv4 and IPv6 up in the metrics", func() bool {
		m := scrapeMetrics(t, r)
		return strings.Contains(m, up6) && strings.Contains(m, up4) &&
			strings.Contains(m, `uplinkd_uplink_ipv6_loss_ratio{uplink="a"} 0`+"\n") &&
			strings.Contains(m, `uplinkd_uplink_ipv6_rtt_seconds{uplink="a"} `) &&
			strings.Contains(m, `uplinkd_uplink_ipv6_jitter_seconds{uplink="a"} `)
	})
	if v := uplinkStatus(t, r.statusJSON(), "a").IPv6; v == nil || v.RTTms == nil || v.JitterMs == nil {
		t.Errorf("a's IPv6 status without rtt or jitter: %+v", v)
	}
	if m := scrapeMetrics(t, r); strings.Contains(m, `uplinkd_uplink_ipv6_state{uplink="c"`) {
		t.Errorf("IPv6 series for c, whose ipv6 is off:\n%s", m)
	}
	r.eventually("probe6-up hook", func() bool { return slices.Contains(trace.lines(), "probe6-up,ipv6,"+a6.String()) })

	if err := l.Blackhole6("eth1", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("probe6-down hook", func() bool { return slices.Contains(trace.lines(), "probe6-down,ipv6,"+a6.String()) })
	down := time.Now()
	r.eventually("IPv6 failed, IPv4 up in the metrics", func() bool {
		m := scrapeMetrics(t, r)
		return strings.Contains(m, failed6) && strings.Contains(m, up4) &&
			strings.Contains(m, `uplinkd_uplink_ipv6_loss_ratio{uplink="a"} 1`+"\n")
	})
	recs := r.logs.records(map[string]any{"event": "probe6-down", "uplink": "a", "family": "ipv6", "new_ip": a6.String()})
	if len(recs) != 1 {
		t.Errorf("journal: %d probe6-down records of a, want 1", len(recs))
	}
	// No reconnect for an IPv6-only failure: reconnect_after (1s) passes
	// twice over with IPv6 failed while probe rounds go on.
	r.eventually("2s with IPv6 failed", func() bool {
		return time.Since(down) > 2*time.Second && uplinkStatus(t, r.statusJSON(), "a").IPv6.State == control.StateFailed
	})
	if err := l.Blackhole6("eth1", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("probe6-up hook again", func() bool {
		n := 0
		for _, line := range trace.lines() {
			if line == "probe6-up,ipv6,"+a6.String() {
				n++
			}
		}
		return n == 2
	})
	r.eventually("IPv6 up in the metrics again", func() bool {
		m := scrapeMetrics(t, r)
		return strings.Contains(m, up6) && strings.Contains(m, `uplinkd_uplink_ipv6_transitions_total{uplink="a"} 2`+"\n")
	})
	for _, line := range trace.lines() {
		if line == "reconnect" || strings.HasPrefix(line, "probe-down") {
			t.Errorf("an IPv6-only outage made %q; trace %v", line, trace.lines())
		}
	}
	if st := uplinkStatus(t, r.statusJSON(), "a"); st.Reconnects != 0 || st.State != control.StateUp {
		t.Errorf("a: state %s, %d reconnects; want up, 0", st.State, st.Reconnects)
	}
}

// TestLabIPv6ProbeMethods: tcp, dns and http probes to IPv6 targets,
// against real servers in the inet namespace (a TCP listener, a miekg/dns
// server, an HTTP server): each uplink's IPv6 probes leave from its own
// IPv6 address (the servers see both), decide its IPv6 health on their
// own, and an IPv6 blackhole on eth1 fails a's IPv6 only, with the IPv4
// probes of the same method still up.
func TestLabIPv6ProbeMethods(t *testing.T) {
	for _, method := range []string{"tcp", "dns", "http"} {
		t.Run(method, func(t *testing.T) {
			l := ipv6Lab(t)
			v4, v6 := lab.InetHosts[0].String(), lab.InetHosts6[0].String()
			peers := &peerSet{}
			var targets string
			switch method {
			case "tcp":
				for _, a := range []string{v4 + ":7001", "[" + v6 + "]:7001"} {
					ln := listenInet(t, l, a)
					go func() {
						for {
							c, err := ln.Accept()
							if err != nil {
								return
							}
							peers.add(c.RemoteAddr())
							c.Close()
						}
					}()
				}
				targets = fmt.Sprintf(`"%s:7001", "[%s]:7001"`, v4, v6)
			case "dns":
				for _, a := range []string{v4 + ":53", "[" + v6 + "]:53"} {
					pc, err := l.ListenPacketIn(l.Inet, "udp", a)
					if err != nil {
						t.Fatal(err)
					}
					srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
						peers.add(w.RemoteAddr())
						m := new(dns.Msg)
						m.SetReply(q)
						_ = w.WriteMsg(m)
					})}
					go srv.ActivateAndServe()
					t.Cleanup(func() { _ = srv.Shutdown() })
				}
				targets = fmt.Sprintf(`%q, %q`, v4, v6) // port 53
			case "http":
				for _, a := range []string{v4 + ":8080", "[" + v6 + "]:8080"} {
					srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
							peers.add(net.TCPAddrFromAddrPort(ap))
						}
						_, _ = w.Write([]byte("ok\n"))
					})}
					go srv.Serve(listenInet(t, l, a))
					t.Cleanup(func() { srv.Close() })
				}
				targets = fmt.Sprintf(`"http://%s:8080/", "http://[%s]:8080/"`, v4, v6)
			}
			cfg := strings.ReplaceAll(ipv6Config(l), fmt.Sprintf("  targets = [%q, %q]\n", v4, v6),
				fmt.Sprintf("  method = %q\n  targets = [%s]\n", method, targets))
			r := start(t, l, writeConfig(t, cfg))
			a6, b6 := l.UplinkAddr6("eth1"), l.UplinkAddr6("eth2")
			answered := func(u control.Uplink) bool {
				return u.State == control.StateUp && u.Loss != nil && *u.Loss == 0 &&
					u.IPv6 != nil && u.IPv6.State == control.StateUp && u.IPv6.Loss != nil && *u.IPv6.Loss == 0
			}
			r.eventually("IPv4 and IPv6 probes of a and b answered", func() bool {
				st := r.statusJSON()
				return answered(uplinkStatus(t, st, "a")) && answered(uplinkStatus(t, st, "b"))
			})
			r.eventually("the servers saw each uplink's IPv6 and IPv4 address", func() bool {
				return peers.has(a6) && peers.has(b6) && peers.has(l.UplinkAddr("eth1")) && peers.has(l.UplinkAddr("eth2"))
			})
			if err := l.Blackhole6("eth1", true); err != nil {
				t.Fatal(err)
			}
			r.eventually("a's IPv6 failed, its IPv4 and b's IPv6 up", func() bool {
				st := r.statusJSON()
				a, b := uplinkStatus(t, st, "a"), uplinkStatus(t, st, "b")
				return a.State == control.StateUp && a.IPv6.State == control.StateFailed && answered(b)
			})
			r.eventually("IPv6 default via eth2 only", r.has("default via fe80::1 dev eth2 proto 157", "-6", "route", "show", "table", "157"))
		})
	}
}

// listenInet opens a TCP listener on address in the lab's inet namespace,
// closed when the test ends.
func listenInet(t *testing.T, l *lab.Lab, address string) net.Listener {
	t.Helper()
	ln, err := l.ListenIn(l.Inet, "tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// peerSet records the source addresses a test server saw.
type peerSet struct {
	mu   sync.Mutex
	seen map[netip.Addr]bool
}

func (p *peerSet) add(a net.Addr) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[netip.Addr]bool{}
	}
	p.seen[ap.Addr().Unmap()] = true
}

func (p *peerSet) has(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[a]
}

// TestLabIPv6Publish: a command publisher with family ipv6 runs for the
// uplink's IPv6 address (UPLINKD_FAMILY=ipv6) and, after renumbering,
// once for the new one; the IPv4 publisher of the same uplink publishes
// its IPv4 address, once.
func TestLabIPv6Publish(t *testing.T) {
	l := ipv6Lab(t)
	dir := t.TempDir()
	trace := newTrace(t)
	pub := script(t, dir, "publish", `echo "$UPLINKD_PUBLISHER,$UPLINKD_FAMILY,$UPLINKD_NEW_IP,$UPLINKD_OLD_IP" >> `+trace.path)
	cfg := strings.Replace(ipv6Config(l), `  hold_down = "0s"
`, fmt.Sprintf(`  hold_down = "0s"
  [[uplink.publish]]
  name = "v6"
  kind = "command"
  command = [%[1]q]
  family = "ipv6"
  settle = "100ms"
  min_interval = "100ms"
  [[uplink.publish]]
  name = "v4"
  kind = "command"
  command = [%[1]q]
  settle = "100ms"
  min_interval = "100ms"
`, pub), 1)
	cfg = fmt.Sprintf("[daemon]\nstate_dir = %q\n", filepath.Join(dir, "state")) + cfg
	r := start(t, l, writeConfig(t, cfg))
	a4, a6 := l.UplinkAddr("eth1"), l.UplinkAddr6("eth1")
	want := []string{"v4,ipv4," + a4.String() + ",", "v6,ipv6," + a6.String() + ","}
	r.eventually("both addresses published", func() bool {
		got := slices.Sorted(slices.Values(trace.lines()))
		return slices.Equal(got, want)
	})
	pfx := lab.CustomerPrefix6(l.UplinkIndex("eth1"))
	n := pfx.Addr().As16()
	n[15] = 0x99
	renum := netip.AddrFrom16(n)
	mustExec(t, l, l.Router, "ip", "addr", "add", renum.String()+"/64", "dev", "eth1", "nodad")
	mustExec(t, l, l.Router, "ip", "addr", "del", a6.String()+"/64", "dev", "eth1")
	r.eventually("the new IPv6 address published, nothing pending", func() bool {
		for _, p := range r.statusJSON().Publishers {
			if p.Name == "v6" {
				return p.Address == renum && !p.Pending.IsValid() && p.Result == "ok"
			}
		}
		return false
	})
	got := slices.Sorted(slices.Values(trace.lines()))
	want = append(want, "v6,ipv6,"+renum.String()+","+a6.String())
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("publishes %q, want %q", got, want)
	}
}
