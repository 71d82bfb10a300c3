package lab

import (
	"context"
	"fmt"
	"net"
	"time"
)

// ListenIn opens a listener inside namespace ns (e.g. a TCP server on an
// inet host address). The socket stays in ns; it can be served from any
// goroutine and must be closed by the caller (it does not pin Close, but it
// keeps the namespace alive until closed).
func (l *Lab) ListenIn(ns, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := l.Do(ns, func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: listen %s %s: %w", network, address, err)
	}
	return ln, nil
}

// ListenPacketIn is ListenIn for packet sockets (UDP), e.g. a DNS responder.
func (l *Lab) ListenPacketIn(ns, network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := l.Do(ns, func() (err error) {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: listen %s %s: %w", network, address, err)
	}
	return pc, nil
}

// DialIn connects from inside namespace ns. laddr may be "" or a local
// address (e.g. an uplink's address, to pick the path by source rule).
func (l *Lab) DialIn(ns, network, laddr, raddr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if laddr != "" {
		var err error
		switch network {
		case "udp", "udp4", "udp6":
			d.LocalAddr, err = net.ResolveUDPAddr(network, laddr)
		default:
			d.LocalAddr, err = net.ResolveTCPAddr(network, laddr)
		}
		if err != nil {
			return nil, fmt.Errorf("lab: dial: local address %q: %w", laddr, err)
		}
	}
	var c net.Conn
	err := l.Do(ns, func() (err error) {
		// The socket is created (and connect started) on this thread, so
		// it belongs to ns; completion is handled by the runtime poller.
		c, err = d.DialContext(context.Background(), network, raddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: dial %s %s from %q: %w", network, raddr, laddr, err)
	}
	return c, nil
}
