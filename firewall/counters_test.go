package firewall

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestTrafficCounters sends a known number of UDP datagrams from the LAN
// client through wan0 to an echo server and checks that ReadTraffic counts
// them, within 1 %, in every direction, and that wan1 counted none of them.
func TestTrafficCounters(t *testing.T) {
	const n, payload = 2000, 1000
	const ipLen = payload + 28 // IPv4 and UDP headers: what netfilter counts
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newLab(t)
			b := k.make(t, l.router)
			if _, err := b.Sync(Compute(Input{Config: labConfig(), Uplinks: labState("192.0.2.1")})); err != nil {
				t.Fatal(err)
			}
			before, err := b.ReadTraffic()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := before["wan0"]; !ok {
				t.Fatalf("no counters for wan0: %+v", before)
			}
			var srv *net.UDPConn
			l.server.do(t, func() { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9000}) })
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go func() {
				buf := make([]byte, 2048)
				for {
					m, from, err := srv.ReadFromUDP(buf)
					if err != nil {
						return
					}
					srv.WriteToUDP(buf[:m], from)
				}
			}()
			var c *net.UDPConn
			l.client.do(t, func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9000}) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Lock-step: one datagram in flight, so nothing is dropped on
			// a busy machine and the echo count is exact.
			buf := make([]byte, 2048)
			msg := make([]byte, payload)
			for i := range n {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
			}
			after, err := b.ReadTraffic("wan0", "wan1")
			if err != nil {
				t.Fatal(err)
			}
			d := func(iface, dir string) Count {
				a, b := after[iface].Dir(dir), before[iface].Dir(dir)
				return Count{Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes}
			}
			for _, dir := range Directions {
				got := d("wan0", dir)
				if !within(got.Packets, n, 0.01) || !within(got.Bytes, n*ipLen, 0.01) {
					t.Errorf("wan0 %s: %d packets, %d bytes; want %d, %d within 1%%", dir, got.Packets, got.Bytes, n, n*ipLen)
				}
				if got := d("wan1", dir); got.Packets > n/100 {
					t.Errorf("wan1 %s counted %d packets of wan0's traffic", dir, got.Packets)
				}
			}
		})
	}
}

func within(got, want uint64, frac float64) bool {
	diff := float64(got) - float64(want)
	return diff >= 0 && diff <= frac*float64(want) || diff < 0 && -diff <= frac*float64(want)
}

// BenchmarkReadTraffic measures one read of the traffic counters of one
// uplink among 2 and 16 (what the traffic trigger does every half window),
// per backend.
//
// Run: go test -run '^$' -bench ReadTraffic ./firewall
func BenchmarkReadTraffic(b *testing.B) {
	for _, k := range backendKinds {
		for _, n := range []int{2, 16} {
			b.Run(fmt.Sprintf("%s/uplinks=%d", k.name, n), func(b *testing.B) {
				ns := newNS(b)
				be := k.make(b, ns)
				if _, err := be.Sync(Compute(benchInput(n, 0, 0))); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					tr, err := be.ReadTraffic("ppp0")
					if _, ok := tr["ppp0"]; err != nil || !ok {
						b.Fatalf("ReadTraffic = %v, %v", tr, err)
					}
				}
			})
		}
	}
}

func TestParseCountLine(t *testing.T) {
	for _, c := range []struct {
		line, chain, iface string
		out                bool
		c                  Count
		ok                 bool
	}{
		{"[12:3456] -A UPLINKD-COUNT-IN -i ppp0", iptCountIn, "ppp0", false, Count{12, 3456}, true},
		{"[0:0] -A UPLINKD-COUNT-FWD -o wan.1", iptCountFwd, "wan.1", true, Count{}, true},
		{"[18446744073709551615:1] -A UPLINKD-COUNT-OUT -o ppp1", iptCountOut, "ppp1", true, Count{1<<64 - 1, 1}, true},
		{"[1:2] -A UPLINKD-PREROUTING -i ppp0", "", "", false, Count{}, false},
		{"[1:2] -A UPLINKD-COUNT-IN -i ppp0 -j RETURN", "", "", false, Count{}, false},
		{"[x:2] -A UPLINKD-COUNT-IN -i ppp0", "", "", false, Count{}, false},
		{":UPLINKD-COUNT-IN - [0:0]", "", "", false, Count{}, false},
	} {
		s, chain, ok := parseCountLine(c.line)
		if ok != c.ok || ok && (chain != c.chain || s.iface != c.iface || s.out != c.out || s.c != c.c) {
			t.Errorf("%q: %+v %q %v", c.line, s, chain, ok)
		}
	}
}
