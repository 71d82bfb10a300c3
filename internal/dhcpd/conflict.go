package dhcpd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// conflictChecker answers "does some host already use this address?" before
// a pool address is offered to a client for the first time.
//
// It sends one ICMP echo request to the address and waits ConflictTimeout.
// The address is in use if an echo reply comes back, or if the kernel's
// neighbour entry for it on the LAN interface is REACHABLE by then with a
// MAC other than the requesting client's. The echo makes the kernel resolve
// the address with ARP; a host that drops pings (a firewalled laptop) still
// has to answer ARP to be on the LAN at all, so reading the neighbour table
// catches it without a raw ARP socket of our own. ISC dhcpd and dnsmasq
// check with ping only; the ARP half closes their firewalled-host gap.
// An address whose neighbour entry is merely STALE (a host seen earlier
// that did not answer now) is not a conflict.
type conflictChecker struct {
	conn    *net.IPConn
	nl      *netlink.Handle
	ifindex int
	timeout time.Duration
	id      uint16
	seq     atomic.Uint32

	mu      sync.Mutex
	waiters map[netip.Addr][]chan struct{}
}

// newConflictChecker opens the ICMP socket (bound to the LAN interface) and
// the netlink handle; it runs inside the server's namespace (openSockets).
func newConflictChecker(iface string, ifindex int, timeout time.Duration) (*conflictChecker, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("open ICMP socket for the conflict check: %w", err)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("open netlink for the conflict check: %w", err)
	}
	return &conflictChecker{
		conn:    pc.(*net.IPConn),
		nl:      nl,
		ifindex: ifindex,
		timeout: timeout,
		id:      uint16(os.Getpid()) ^ 0x4448, // "DH": apart from the health probes' ids
		waiters: map[netip.Addr][]chan struct{}{},
	}, nil
}

// read delivers echo replies to waiting checks until the socket is closed.
func (c *conflictChecker) read() {
	b := make([]byte, 1500)
	for {
		n, from, err := c.conn.ReadFrom(b)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1, b[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); !ok || uint16(e.ID) != c.id {
			continue
		}
		ia, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		a, _ := netip.AddrFromSlice(ia.IP.To4())
		c.mu.Lock()
		for _, ch := range c.waiters[a] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
	}
}

func (c *conflictChecker) close() {
	c.conn.Close()
	c.nl.Close()
}

// inUse runs the check for ip on behalf of the client with hardware address
// mac (its own answer is no conflict).
func (c *conflictChecker) inUse(ctx context.Context, ip netip.Addr, mac net.HardwareAddr) bool {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.waiters[ip] = append(c.waiters[ip], ch)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		ws := c.waiters[ip]
		for i, w := range ws {
			if w == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(c.waiters, ip)
		} else {
			c.waiters[ip] = ws
		}
		c.mu.Unlock()
	}()

	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{
		ID: int(c.id), Seq: int(uint16(c.seq.Add(1))), Data: []byte("uplinkd-dhcp"),
	}}
	b, _ := msg.Marshal(nil) // cannot fail for an echo
	if _, err := c.conn.WriteTo(b, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		// No route or the link is down: nothing can answer, and the
		// offer itself will not get out either.
		return false
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	return c.neighbourAnswered(ip, mac)
}

// neighbourAnswered reports whether the kernel has a confirmed (REACHABLE)
// neighbour entry for ip on the LAN interface with a MAC that is not mac.
func (c *conflictChecker) neighbourAnswered(ip netip.Addr, mac net.HardwareAddr) bool {
	neighs, err := c.nl.NeighList(c.ifindex, unix.AF_INET)
	if err != nil {
		return false
	}
	for _, n := range neighs {
		if n.IP.Equal(ip.AsSlice()) && n.State&netlink.NUD_REACHABLE != 0 &&
			len(n.HardwareAddr) > 0 && !bytes.Equal(n.HardwareAddr, mac) {
			return true
		}
	}
	return false
}
