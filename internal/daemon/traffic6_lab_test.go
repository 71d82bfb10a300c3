package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// TestLabTrafficCounters6: bytes sent over IPv6 through an uplink with
// ipv6 on show in its counters (status from the real CLI, and metrics)
// within 1 %, with both firewall backends: the IPv6 counting chains add to
// the IPv4 ones. The traffic is the router's own (in and out); the
// forward directions are the same rules on the forward hook.
func TestLabTrafficCounters6(t *testing.T) {
	const n, payload = 2000, 1000
	const ipLen = payload + 48 // IPv6 and UDP headers
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			l := ipv6Lab(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			// Probes every 10 s: their packets stay well under 1 % of n.
			cfg := strings.ReplaceAll(ipv6Config(l), `interval = "200ms"`, `interval = "10s"`)
			cfg += "\n[firewall]\nbackend = \"" + backend + "\"\n\n[daemon]\nmetrics_listen = \"" + ln.Addr().String() + "\"\n"
			r := startWith(t, l, writeConfig(t, cfg), ln)
			a6 := l.UplinkAddr6("eth1")
			r.eventually("a's IPv6 source rule", r.has("from "+a6.String()+" lookup 100", "-6", "rule"))
			server := netip.AddrPortFrom(lab.InetHosts6[0], 9000).String()
			echoServer(t, l, server)

			st0 := r.statusJSON()
			before := statusUplink(st0, "a").Traffic
			mBefore := scrapeMetrics(t, r)
			if before == nil {
				t.Fatalf("no traffic counters in the status: %+v", st0.Uplinks)
			}
			c, err := l.DialIn(l.Router, "udp", netip.AddrPortFrom(a6, 0).String(), server, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, payload), make([]byte, 2048)
			for i := range n {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
			}
			after := statusUplink(r.statusJSON(), "a").Traffic
			mAfter := scrapeMetrics(t, r)
			for _, d := range []struct {
				dir  string
				b, a control.Count
			}{{"in", before.In, after.In}, {"out", before.Out, after.Out}} {
				pk, by := d.a.Packets-d.b.Packets, d.a.Bytes-d.b.Bytes
				if !near(float64(pk), n) || !near(float64(by), n*ipLen) {
					t.Errorf("status a %s: %d packets, %d bytes; want %d, %d within 1%%", d.dir, pk, by, n, n*ipLen)
				}
				for _, m := range []struct {
					name string
					want float64
				}{{"bytes", n * ipLen}, {"packets", n}} {
					series := fmt.Sprintf(`uplinkd_uplink_traffic_%s_total{uplink="a",direction=%q}`, m.name, d.dir)
					b, a := metricValue(mBefore, series), metricValue(mAfter, series)
					if b < 0 || a < 0 || !near(a-b, m.want) {
						t.Errorf("metrics %s: %v → %v, want +%v within 1%%", series, b, a, m.want)
					}
				}
			}
		})
	}
}
