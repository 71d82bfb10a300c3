package dhcpd

import (
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// replyOptions are the options every OFFER and ACK carries, computed once
// per socket bind (the server address may change with it).
type replyOptions struct {
	serverID netip.Addr
	mask     net.IPMask
	bcast    netip.Addr
	router   []net.IP
	dns      []net.IP
	ntp      []net.IP
	domain   string
}

func newReplyOptions(s Spec, server netip.Addr, network netip.Prefix) replyOptions {
	o := replyOptions{
		serverID: server,
		mask:     net.CIDRMask(network.Bits(), 32),
		bcast:    broadcastOf(network),
		router:   ips(s.Router),
		dns:      ips(s.DNS),
		ntp:      ips(s.NTP),
		domain:   s.Domain,
	}
	if len(o.router) == 0 {
		o.router = []net.IP{server.AsSlice()}
	}
	return o
}

func ips(as []netip.Addr) []net.IP {
	out := make([]net.IP, 0, len(as))
	for _, a := range as {
		out = append(out, a.AsSlice())
	}
	return out
}

// modifiers returns the options of a reply; lease is 0 for an INFORM's ACK
// (RFC 2131 §3.4: no lease time), hostname is set for fixed hosts.
func (o replyOptions) modifiers(lease time.Duration, hostname string) []dhcpv4.Modifier {
	m := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(o.serverID.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(o.mask)),
		dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(o.bcast.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRouter(o.router...)),
	}
	if len(o.dns) > 0 {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptDNS(o.dns...)))
	}
	if len(o.ntp) > 0 {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptNTPServers(o.ntp...)))
	}
	if o.domain != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptDomainName(o.domain)))
	}
	if lease > 0 {
		// T1 and T2 at the RFC 2131 §4.4.5 defaults (0.5 and 0.875).
		m = append(m,
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lease/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lease*7/8)),
		)
	}
	if hostname != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	}
	return m
}
