// Package dhcpd keeps DHCPv4 working on the LAN side of the gateway
// (`[lan.dhcp]`). It has two modes:
//
//   - embedded: a DHCPv4 server of its own on the LAN interface, built on
//     github.com/insomniacslk/dhcp for the wire format. One UDP socket on
//     port 67 bound to the interface (SO_BINDTODEVICE); replies to clients
//     without an address are broadcast, so no ARP entry has to be forged.
//   - service: an external server (isc-dhcp-server, kea, dnsmasq) is
//     restarted when the LAN interface comes back, because such servers
//     bind to an interface at start and some exit when it is missing.
//
// Files by layer:
//
//	spec.go        Spec (the typed configuration) and its checks
//	options.go     the options a reply carries
//	alloc.go       the address pool: offers, requests, declines, releases (pure)
//	store.go       the lease file in state_dir (JSON, written atomically)
//	conflict.go    the "is this address already in use" check before an offer
//	handle.go      one packet in, at most one reply out (pure apart from the pool)
//	server.go      sockets, re-binding after link flaps, the lease-file
//	               committer, Run/LinkChanged/Rebind/Status
//	supervise.go   mode service: restart a systemd unit or run a command
//	netns.go       socket creation inside another network namespace (tests)
//
// Every ACK leaves only after the lease table it promises is on disk: one
// committer goroutine writes the whole file (temp + fsync + rename) for a
// batch of changes and then releases the batch's ACKs (a group commit), so
// 200 clients at once cost a few writes, not 200.
//
// Warnings that a LAN host triggers with each packet it sends (a full
// pool, a conflict, a decline, a failed send) go through internal/lograte:
// one per kind a minute, the next with the count suppressed, keyed by kind
// and not by MAC, which the sender chooses.
//
// The pool is pure: it takes the time as an argument and never touches the
// network, so the RFC 2131 state handling is tested without sockets. The
// server is tested with real DHCP clients (busybox udhcpc) in lab namespaces.
package dhcpd
