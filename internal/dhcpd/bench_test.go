package dhcpd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// BenchmarkLeases200 measures the embedded server in a lab: 200 clients
// (distinct MACs) on the LAN each do DISCOVER→OFFER and REQUEST→ACK at the
// same time (or one after another), over real sockets from the LAN namespace to the server on the
// router's lan0, with the lease file written (fsync) on every ACK.
// Reported: p50/p99 of both exchanges and leases per second (200 / wall
// time of the whole round). With the conflict check on, every new address
// costs one check timeout (500 ms) before its offer, by design.
//
//	go test -run '^$' -bench Leases200 -benchtime 5x ./internal/dhcpd
func BenchmarkLeases200(b *testing.B) {
	for _, c := range []struct {
		burst, check bool
	}{{true, false}, {true, true}, {false, false}} {
		name := "one_by_one"
		if c.burst {
			name = "burst"
		}
		b.Run(fmt.Sprintf("%s/conflict_check=%v", name, c.check), func(b *testing.B) { benchLeases(b, c.burst, c.check) })
	}
}

const benchClients = 200

// benchLeases runs the 200 clients all at once (burst: a rack powering up)
// or one after another (one_by_one: the latency of an unloaded server).
func benchLeases(b *testing.B, burst, check bool) {
	if reason := lab.Unsupported(); reason != "" {
		b.Skip(reason)
	}
	l := lab.NewT(b, lab.Spec{})
	h, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()

	// One UDP socket on port 68 in the LAN namespace plays all clients:
	// replies are broadcast, and the transaction ID says whose they are.
	var conn *net.UDPConn
	if err := l.Do(l.LAN, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			_ = c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
				if serr == nil {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, lab.ClientIface)
				}
			})
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)

	var (
		mu      sync.Mutex
		waiters = map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}
	)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			mu.Lock()
			ch := waiters[m.TransactionID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		}
	}()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	// exchange sends m until a reply of type want comes back (3 tries).
	exchange := func(m *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, time.Duration, error) {
		ch := make(chan *dhcpv4.DHCPv4, 4)
		mu.Lock()
		waiters[m.TransactionID] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiters, m.TransactionID); mu.Unlock() }()
		start := time.Now()
		for range 3 {
			if _, err := conn.WriteTo(m.ToBytes(), bcast); err != nil {
				return nil, 0, err
			}
			t := time.NewTimer(2 * time.Second)
			for {
				select {
				case r := <-ch:
					if r.MessageType() != want {
						continue
					}
					t.Stop()
					return r, time.Since(start), nil
				case <-t.C:
				}
				break
			}
		}
		return nil, 0, fmt.Errorf("no %s for %s", want, m.ClientHWAddr)
	}

	var offerLat, ackLat []time.Duration
	var wall time.Duration
	for i := range b.N {
		b.StopTimer()
		spec := Spec{
			Mode: ModeEmbedded, Interface: lab.LANIface,
			Range: [2]netip.Addr{addr("10.0.0.10"), addr("10.0.0.250")},
			Lease: time.Hour, StateDir: b.TempDir(), NetNS: int(h),
			ConflictCheck: check,
		}
		s, err := New(spec, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for !s.Status().Listening {
			time.Sleep(5 * time.Millisecond)
		}
		b.StartTimer()

		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, benchClients)
		lats := make([][2]time.Duration, benchClients)
		for c := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hw := net.HardwareAddr{0x02, 0xbe, byte(i >> 8), byte(i), byte(c >> 8), byte(c)}
				d, err := dhcpv4.NewDiscovery(hw)
				if err != nil {
					errs <- err
					return
				}
				offer, l1, err := exchange(d, dhcpv4.MessageTypeOffer)
				if err != nil {
					errs <- err
					return
				}
				r, err := dhcpv4.NewRequestFromOffer(offer)
				if err != nil {
					errs <- err
					return
				}
				_, l2, err := exchange(r, dhcpv4.MessageTypeAck)
				if err != nil {
					errs <- err
					return
				}
				lats[c] = [2]time.Duration{l1, l2}
			}()
			if !burst {
				wg.Wait()
			}
		}
		wg.Wait()
		wall += time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if st := s.Status(); st.InUse != benchClients {
			b.Fatalf("%d leases in use, want %d", st.InUse, benchClients)
		}
		for _, l := range lats {
			offerLat = append(offerLat, l[0])
			ackLat = append(ackLat, l[1])
		}
		b.StartTimer()
	}
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(offerLat, 0.5), "offer_p50_ms")
	b.ReportMetric(pct(offerLat, 0.99), "offer_p99_ms")
	b.ReportMetric(pct(ackLat, 0.5), "ack_p50_ms")
	b.ReportMetric(pct(ackLat, 0.99), "ack_p99_ms")
	b.ReportMetric(float64(benchClients*b.N)/wall.Seconds(), "leases/s")
}
