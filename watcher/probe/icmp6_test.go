package probe

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"
)

// The IPv6 side of topo: the same two paths with IPv6 on, no DAD.
//
//	va 2001:db8:77::2/64  <--->  sa 2001:db8:77::1/64
//	vb 2001:db8:78::2/64  <--->  sb 2001:db8:78::1/64
//	                             lo 2001:db8:ffff::1/128
var (
	src6A  = netip.MustParseAddr("2001:db8:77::2")
	src6B  = netip.MustParseAddr("2001:db8:78::2")
	inet6  = "2001:db8:ffff::1"
	server = map[string]string{"a": "2001:db8:77::1", "b": "2001:db8:78::1"}
)

func newTopo6(tb testing.TB) *topo {
	tb.Helper()
	tp := newTopo(tb)
	// all.disable_ipv6 is applied to every existing interface too.
	for _, ns := range []*netNS{tp.client, tp.server} {
		run(tb, "ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
			"net.ipv6.conf.default.disable_ipv6=0")
	}
	tp.client.ip(tb, "addr", "add", "2001:db8:77::2/64", "dev", "va", "nodad")
	tp.client.ip(tb, "addr", "add", "2001:db8:78::2/64", "dev", "vb", "nodad")
	tp.server.ip(tb, "addr", "add", "2001:db8:77::1/64", "dev", "sa", "nodad")
	tp.server.ip(tb, "addr", "add", "2001:db8:78::1/64", "dev", "sb", "nodad")
	tp.server.ip(tb, "addr", "add", inet6+"/128", "dev", "lo", "nodad")
	tp.client.ip(tb, "-6", "route", "add", "default", "via", "2001:db8:77::1", "dev", "va")
	tp.client.ip(tb, "-6", "route", "add", "default", "via", "2001:db8:77::1", "dev", "va", "table", "101")
	tp.client.ip(tb, "-6", "route", "add", "default", "via", "2001:db8:78::1", "dev", "vb", "table", "102")
	tp.client.ip(tb, "-6", "rule", "add", "from", "2001:db8:77::2", "lookup", "101", "pref", "100")
	tp.client.ip(tb, "-6", "rule", "add", "from", "2001:db8:78::2", "lookup", "102", "pref", "101")
	return tp
}

func (tp *topo) spec6(uplink string, targets ...string) Spec {
	return tp.spec6m(uplink, MethodICMP, targets...)
}

// spec6m is spec6 for any method.
func (tp *topo) spec6m(uplink, method string, targets ...string) Spec {
	s := tp.spec(uplink, method, targets...)
	s.Source = map[string]netip.Addr{"a": src6A, "b": src6B}[uplink]
	return s
}

// TestICMPv6 probes through each uplink over ICMPv6: a blackhole of one
// path's IPv6 echo fails that uplink's probes only.
func TestICMPv6(t *testing.T) {
	tp := newTopo6(t)
	ra := start(t, tp.spec6("a", inet6, server["a"]))
	rb := start(t, tp.spec6("b", inet6))
	rs, _ := ra.round(t)
	checkOK(t, rs)
	rs, _ = rb.round(t)
	checkOK(t, rs)

	undo := tp.drop(t, `iifname "sa" icmpv6 type echo-request`)
	now := time.Now()
	rs, _ = ra.roundAfter(t, now)
	checkFailed(t, rs, "timeout")
	rs, _ = rb.roundAfter(t, now)
	checkOK(t, rs)
	undo()
	rs, _ = ra.roundAfter(t, time.Now())
	checkOK(t, rs)
}

// TestICMPv6PingSocket: the unprivileged fallback over ICMPv6.
func TestICMPv6PingSocket(t *testing.T) {
	tp := newTopo6(t)
	tp.client.do(t, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0)
	})
	forcePingSocket = true
	defer func() { forcePingSocket = false }()
	r := start(t, tp.spec6("a", inet6))
	rs, _ := r.round(t)
	checkOK(t, rs)
	tp.drop(t, `iifname "sa" icmpv6 type echo-request`)
	rs, _ = r.roundAfter(t, time.Now())
	checkFailed(t, rs, "timeout")
}

func TestICMPTargetFamilies(t *testing.T) {
	s := Spec{Method: MethodICMP, Targets: []string{"192.0.2.1", "2001:db8::1"}, Interval: time.Second, Timeout: time.Second}
	if _, err := s.parse(); err == nil {
		t.Fatal("icmp targets of two families in one prober were accepted")
	}
	s.Targets = []string{"2001:db8::1"}
	s.Source = netip.MustParseAddr("192.0.2.2")
	if _, err := s.parse(); err == nil {
		t.Fatal("an IPv6 target with an IPv4 source was accepted")
	}
}

// TestConnectProbesV6: tcp, dns and http probes to IPv6 targets, from each
// uplink's IPv6 address and device: an IPv6 blackhole of path a fails a's
// probes only.
func TestConnectProbesV6(t *testing.T) {
	tp := newTopo6(t)
	var tcpLn, httpLn net.Listener
	tp.server.do(t, func() (err error) {
		if tcpLn, err = net.Listen("tcp6", "["+inet6+"]:7001"); err != nil {
			return err
		}
		httpLn, err = net.Listen("tcp6", "["+inet6+"]:8080")
		return err
	})
	t.Cleanup(func() { tcpLn.Close() })
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("fine")) })}
	go srv.Serve(httpLn)
	t.Cleanup(func() { srv.Close() })
	dnsServer(t, tp.server, "["+inet6+"]:53", 0)

	for method, target := range map[string]string{
		MethodTCP: "[" + inet6 + "]:7001", MethodDNS: inet6, MethodHTTP: "http://[" + inet6 + "]:8080/",
	} {
		t.Run(method, func(t *testing.T) {
			ra := start(t, tp.spec6m("a", method, target))
			rb := start(t, tp.spec6m("b", method, target))
			rs, _ := ra.round(t)
			checkOK(t, rs)
			rs, _ = rb.round(t)
			checkOK(t, rs)
			undo := tp.drop(t, `iifname "sa" ip6 daddr `+inet6)
			now := time.Now()
			rs, _ = ra.roundAfter(t, now)
			checkFailed(t, rs, "timeout")
			rs, _ = rb.roundAfter(t, now)
			checkOK(t, rs)
			undo()
		})
	}
}
