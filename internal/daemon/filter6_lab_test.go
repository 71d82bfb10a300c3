package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// fw6Backends are the firewall backends the IPv6 lab tests run on, as the
// [firewall] keys that select them.
var fw6Backends = []struct{ name, toml string }{
	{"nftables", ""},
	{"iptables-legacy", "backend = \"iptables\"\niptables_variant = \"legacy\"\n"},
	{"iptables-nft", "backend = \"iptables\"\niptables_variant = \"nft\"\n"},
}

// fw6Installed reports whether the router's IPv6 firewall holds each of
// texts: in table ip6 uplinkd6 (nftables) or in ip6tables-save (iptables,
// whose chains are filled before the jumps to them are inserted: a test
// waits for the jumps too).
func fw6Installed(t *testing.T, l *lab.Lab, backend string, texts ...string) func() bool {
	return func() bool {
		argv := []string{"nft", "list", "table", "ip6", "uplinkd6"}
		switch backend {
		case "iptables-legacy":
			argv = []string{"ip6tables-legacy-save"}
		case "iptables-nft":
			argv = []string{"ip6tables-nft-save"}
		}
		out, _ := l.Exec(l.Router, argv...)
		for _, text := range texts {
			if !strings.Contains(out, text) {
				return false
			}
		}
		return true
	}
}

// jumps6 are the jumps into the ip6tables filter chains.
var jumps6 = []string{"-A INPUT -j UPLINKD-IN6", "-A FORWARD -j UPLINKD-FWD6"}

// dialFails reports whether a TCP connection from ns to addr does not come
// up within a few seconds (a dropped SYN; a refused one fails at once).
func dialFails(l *lab.Lab, ns, laddr, addr string) error {
	c, err := l.DialIn(ns, "tcp6", laddr, addr, 3*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s → %s connected", ns, addr)
	}
	return nil
}

// delegateBoth makes the ISPs of eth1 and eth2 delegate their prefixes
// (lab.Delegate6) and returns them.
func delegateBoth(t *testing.T, l *lab.Lab) (pa, pb netip.Prefix) {
	t.Helper()
	var err error
	if pa, err = l.Delegate6("eth1"); err != nil {
		t.Fatal(err)
	}
	if pb, err = l.Delegate6("eth2"); err != nil {
		t.Fatal(err)
	}
	return pa, pb
}

// lanHostsIn gives the LAN host an address in the first /64 of each of
// pa and pb (lab.AddLAN6) and returns them.
func lanHostsIn(t *testing.T, l *lab.Lab, pa, pb netip.Prefix) (hostA, hostB netip.Addr) {
	t.Helper()
	lanA, _ := lab.LANSubnet6For(pa)
	lanB, _ := lab.LANSubnet6For(pb)
	var err error
	if hostA, err = l.AddLAN6(lanA); err != nil {
		t.Fatal(err)
	}
	if hostB, err = l.AddLAN6(lanB); err != nil {
		t.Fatal(err)
	}
	return hostA, hostB
}

// TestLabIPv6FirewallPolicy: input_policy and forward_policy "drop" and an
// IPv6 [[firewall.deny]] filter IPv6 on each backend, with real traffic
// ([lan.ipv6] mode prefix, two LAN addresses, one from each uplink's
// delegation):
//   - forward drop: the LAN host's IPv6 (TCP, ping6) reaches the inet host;
//     a new connection from the inet host to the LAN host is dropped;
//   - input drop: a new TCP connection from the inet host to the router's
//     uplink address is dropped, ping6 answers (neighbour discovery works)
//     and the uplink's IPv6 stays up (its IPv6 probes);
//   - deny of the LAN host's second address: its TCP and ping6 are dropped,
//     the first address works;
//   - a reload to the accept policies without the deny opens all of it (so
//     the drops were the firewall's);
//   - a MAC deny of the LAN client drops its IPv6.
func TestLabIPv6FirewallPolicy(t *testing.T) {
	for _, fw := range fw6Backends {
		t.Run(fw.name, func(t *testing.T) {
			l := ipv6Lab(t)
			pa, pb := delegateBoth(t, l)
			hostA, hostB := lanHostsIn(t, l, pa, pb)
			base := ipv6Config(l)
			base = strings.Replace(base, "name = \"a\"\n", fmt.Sprintf("name = \"a\"\ndelegated_prefix = %q\n", pa), 1)
			base = strings.Replace(base, "name = \"b\"\n", fmt.Sprintf("name = \"b\"\ndelegated_prefix = %q\n", pb), 1)
			base += "\n[lan.ipv6]\nmode = \"prefix\"\n"
			closed := base + "\n[firewall]\n" + fw.toml + "input_policy = \"drop\"\nforward_policy = \"drop\"\n" +
				fmt.Sprintf("[[firewall.deny]]\nsource = %q\n", hostB)
			path := writeConfig(t, closed)
			r := start(t, l, path)
			r.eventually("rules for both delegations", func() bool {
				rules := r.ip("-6", "rule")
				return strings.Contains(rules, "from "+pa.String()+" lookup 100") && strings.Contains(rules, "from "+pb.String()+" lookup 101")
			})
			ready, wait := "policy drop", []string{"policy drop"}
			if fw.name != "nftables" {
				ready = "-A UPLINKD-FWD6 -j DROP"
				wait = append([]string{ready}, jumps6...)
			}
			r.eventually("the IPv6 drop policies", fw6Installed(t, l, fw.name, wait...))

			inet := "[" + lab.InetHosts6[0].String() + "]"
			srv := serveIn(t, l, l.Inet, "tcp6", inet+":8080")
			lanSrv := serveIn(t, l, l.LAN, "tcp6", "["+hostA.String()+"]:2222")
			a6 := l.UplinkAddr6("eth1")
			routerSrv := serveIn(t, l, l.Router, "tcp6", "["+a6.String()+"]:2323")

			// Forward drop: out from the LAN works, in to the LAN does not.
			c, err := l.DialIn(l.LAN, "tcp6", "["+hostA.String()+"]:0", srv.Addr().String(), 10*time.Second)
			if err != nil {
				t.Fatalf("LAN host → inet over IPv6 with forward_policy drop: %v", err)
			}
			c.Close()
			mustExec(t, l, l.LAN, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", "-I", hostA.String(), lab.InetHosts6[0].String())
			if err := dialFails(l, l.Inet, "", lanSrv.Addr().String()); err != nil {
				t.Errorf("forward_policy drop: %v", err)
			}

			// Input drop: a new TCP connection to the router from the inet
			// side is dropped; ping6 and neighbour discovery work.
			if err := dialFails(l, l.Inet, "", routerSrv.Addr().String()); err != nil {
				t.Errorf("input_policy drop: %v", err)
			}
			mustExec(t, l, l.Inet, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", a6.String())
			// Neighbour discovery: the router's entry of its ISP router
			// gets confirmed again after a flush.
			mustExec(t, l, l.Router, "ip", "-6", "neigh", "flush", "dev", "eth1")
			mustExec(t, l, l.Router, "ping", "-6", "-c", "1", "-W", "5", "-I", a6.String(), lab.InetHosts6[1].String())
			if out := mustExec(t, l, l.Router, "ip", "-6", "neigh", "show", "dev", "eth1"); !strings.Contains(out, lab.ISPLinkLocal.String()) && !strings.Contains(out, l.ISPAddr6("eth1").String()) {
				t.Errorf("no neighbour entry of the ISP router on eth1:\n%s", out)
			}
			if u := uplinkStatus(t, r.statusJSON(), "a"); u.IPv6 == nil || u.IPv6.State != "up" {
				t.Errorf("uplink a's IPv6 with input_policy drop: %+v", u.IPv6)
			}

			// Deny: the LAN host's second address is cut off.
			if err := dialFails(l, l.LAN, "["+hostB.String()+"]:0", srv.Addr().String()); err != nil {
				t.Errorf("denied LAN host: %v", err)
			}
			if out, err := l.Exec(l.LAN, "ping", "-6", "-c", "1", "-W", "2", "-I", hostB.String(), lab.InetHosts6[0].String()); err == nil {
				t.Errorf("denied LAN host pings the inet host:\n%s", out)
			}

			// The accept policies without the deny: everything opens.
			if err := os.WriteFile(path, []byte(base+"\n[firewall]\n"+fw.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			open := "policy accept"
			if fw.name != "nftables" {
				open = ":UPLINKD-MARK6-PRE" // the filter chains are gone
			}
			r.eventually("the IPv6 policies accept", func() bool {
				return fw6Installed(t, l, fw.name, open)() && !fw6Installed(t, l, fw.name, ready)()
			})
			for _, d := range []struct{ ns, laddr, addr string }{
				{l.Inet, "", lanSrv.Addr().String()},
				{l.Inet, "", routerSrv.Addr().String()},
				{l.LAN, "[" + hostB.String() + "]:0", srv.Addr().String()},
			} {
				c, err := l.DialIn(d.ns, "tcp6", d.laddr, d.addr, 10*time.Second)
				if err != nil {
					t.Errorf("with the accept policies, %s → %s: %v", d.ns, d.addr, err)
					continue
				}
				c.Close()
			}

			// A MAC deny of the LAN client drops its IPv6 too.
			mac := macOf(t, l, l.LAN, lab.ClientIface)
			if err := os.WriteFile(path, []byte(base+"\n[firewall]\n"+fw.toml+fmt.Sprintf("[[firewall.deny]]\nmac = %q\n", mac)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			denied := []string{"deny_mac_drop"}
			if fw.name != "nftables" {
				denied = append([]string{"-A UPLINKD-DENY6 -m mac --mac-source"}, jumps6...)
			}
			r.eventually("the IPv6 MAC deny", fw6Installed(t, l, fw.name, denied...))
			if err := dialFails(l, l.LAN, "["+hostA.String()+"]:0", srv.Addr().String()); err != nil {
				t.Errorf("MAC-denied LAN host over IPv6: %v", err)
			}
		})
	}
}

// macOf is the MAC address of iface in namespace ns.
func macOf(t *testing.T, l *lab.Lab, ns, iface string) string {
	t.Helper()
	for _, f := range strings.Fields(mustExec(t, l, ns, "ip", "-br", "link", "show", "dev", iface)) {
		if hw, err := net.ParseMAC(f); err == nil && len(hw) == 6 {
			return hw.String()
		}
	}
	t.Fatalf("no MAC address of %s in %s", iface, ns)
	return ""
}

// TestLabIPv6StickyBalancing: IPv6 connections from the LAN balanced over
// two uplinks keep the uplink they started on when the weights change (the
// multipath hash then maps many flows elsewhere), as
// TestLabWeightedSplitIsPerConnectionAndSticky does for IPv4:
//   - "routed" on each backend: [lan.ipv6] mode off, the LAN /64 routed to
//     the router by both ISPs, which masquerade it (an ISP's NAT66 stands
//     for any state a connection has at its uplink): a connection that
//     moved reaches the inet host from the other ISP's address, unknown
//     there, and breaks;
//   - "npt" on nftables: mode npt, the ISPs drop sources not their
//     customer's (BCP 38): a moved connection keeps its NAT binding's /64
//     and is dropped. (The iptables backend's NPT is stateless: connection
//     tracking never sees such a connection established, so no mark can
//     be restored; docs/ipv6.md.)
func TestLabIPv6StickyBalancing(t *testing.T) {
	type variant struct{ name, backend, mode string }
	var variants []variant
	for _, fw := range fw6Backends {
		variants = append(variants, variant{fw.name + "/routed", fw.toml, "routed"})
	}
	variants = append(variants, variant{"nftables/npt", "", "npt"})
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			l := ipv6Lab(t)
			pa, pb := delegateBoth(t, l)
			nft := func(ns, rules string) {
				cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(rules)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("nft in %s: %v\n%s", ns, err, out)
				}
			}
			lan6 := netip.MustParsePrefix("fd42:0:0:1::/64")
			extra := "\n[lan.ipv6]\nmode = \"npt\"\nprefix = \"" + lan6.String() + "\"\n"
			if v.mode == "routed" {
				lan6, extra = netip.MustParsePrefix("2001:db8:f00d::/64"), ""
				for _, isp := range []string{"eth1", "eth2"} {
					mustExec(t, l, l.ISP(isp), "ip", "-6", "route", "replace", lan6.String(), "via", l.UplinkAddr6(isp).String(), "dev", lab.CustIface)
					nft(l.ISP(isp), fmt.Sprintf("table ip6 labnat {\n chain p { type nat hook postrouting priority 100; policy accept; ip6 saddr %s oifname != %q masquerade\n }\n}\n", lan6, lab.CustIface))
				}
				// Mode off: forwarding is the admin's.
				if err := l.Sysctl(l.Router, "net.ipv6.conf.all.forwarding", "1"); err != nil {
					t.Fatal(err)
				}
			} else {
				for isp, p := range map[string]netip.Prefix{"eth1": pa, "eth2": pb} {
					customer := netip.PrefixFrom(l.UplinkAddr6(isp), 64).Masked()
					nft(l.ISP(isp), fmt.Sprintf("table ip6 bcp38 {\n chain f { type filter hook forward priority 0; policy accept; iifname %q ip6 saddr != { %s, %s } drop\n }\n}\n",
						lab.CustIface, p, customer))
				}
			}
			weights := func(wa, wb int) string {
				cfg := ipv6Config(l)
				cfg = strings.Replace(cfg, "weight = 1\n", "weight = WA\n", 1)
				cfg = strings.Replace(cfg, "weight = 3\n", "weight = WB\n", 1)
				da, db := fmt.Sprintf("\ndelegated_prefix = %q", pa), fmt.Sprintf("\ndelegated_prefix = %q", pb)
				if v.mode == "routed" {
					da, db = "", ""
				}
				cfg = strings.Replace(cfg, "weight = WA\n", fmt.Sprintf("weight = %d%s\n", wa, da), 1)
				cfg = strings.Replace(cfg, "weight = WB\n", fmt.Sprintf("weight = %d%s\n", wb, db), 1)
				return cfg + extra + "\n[firewall]\n" + v.backend
			}
			path := writeConfig(t, weights(3, 1))
			r := start(t, l, path)
			if _, err := l.AddLAN6(lan6); err != nil {
				t.Fatal(err)
			}
			r.eventually("3:1 IPv6 multipath", r.has("dev eth1 weight 3", "-6", "route", "show", "table", "157"))
			r.eventually("IPv6 sticky rules", r.has("fwmark 0x20000/0xff0000 lookup 101", "-6", "rule"))
			srv := newInetServer(t, l, "["+lab.InetHosts6[0].String()+"]:8080")

			const n = 40
			conns := make([]net.Conn, 0, n)
			t.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
			})
			count := map[string]int{}
			for i := range n {
				conns = append(conns, lanDial(t, l, srv.ln.Addr().String()))
				p := netip.MustParseAddr(srv.peer(t, i+1))
				if v.mode == "npt" {
					// The /64 says the uplink.
					p = netip.PrefixFrom(p, 64).Masked().Addr()
				}
				count[p.String()]++
			}
			t.Logf("split over %d IPv6 connections: %v", n, count)
			if len(count) != 2 {
				t.Fatalf("want connections over both uplinks, got %v", count)
			}

			if err := os.WriteFile(path, []byte(weights(1, 3)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := r.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			r.eventually("1:3 IPv6 multipath", r.has("dev eth2 weight 3", "-6", "route", "show", "table", "157"))
			if broken := brokenConns(conns, 5*time.Second); broken > 0 {
				t.Errorf("%d of %d open IPv6 connections broke when the weights changed", broken, n)
			}
		})
	}
}
