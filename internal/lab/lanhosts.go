package lab

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// AddLANAddrs gives the LAN client namespace more addresses on the LAN
// subnet (10.0.0.3, 10.0.0.4, ...), so that servers bound to each act as
// separate LAN hosts: the router resolves and reaches every address over
// lan0 like a host of its own. [[service]] tests run one backend per
// address. The addresses go when the lab is closed.
func (l *Lab) AddLANAddrs(addrs ...netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	link, err := l.lan.h.LinkByName(ClientIface)
	if err != nil {
		return fmt.Errorf("lab: lan %s: %w", ClientIface, err)
	}
	for _, a := range addrs {
		if !LANPrefix.Contains(a) || a == LANRouterAddr || a == LANClientAddr {
			return fmt.Errorf("lab: %s is not a free address of %s", a, LANPrefix)
		}
		if err := l.lan.h.AddrAdd(link, &netlink.Addr{IPNet: ipnet(prefixOf(a, LANPrefix.Bits()))}); err != nil {
			return fmt.Errorf("lab: add %s to the LAN client: %w", a, err)
		}
	}
	return nil
}
