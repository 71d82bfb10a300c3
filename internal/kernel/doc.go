// Package kernel is uplinkd's view of, and hand on, the kernel's routing
// state: an in-memory mirror of links, IPv4 addresses, rules and the routes
// uplinkd decides on, and the applier that writes rules, routes, sysctls and
// neighbour deletions over rtnetlink.
//
// The mirror follows the informer pattern (client-go's informers, tailscale's
// netmon plus a cache): it is filled by a dump, then kept current by the
// rtnetlink notifications themselves, so a reconcile pass reads memory, not
// the kernel. It dumps again only when it may have missed something: at
// start (after the subscription is in place), after the notification socket
// overflowed (ENOBUFS), and after a write failed. No timer runs: an idle
// kernel costs nothing.
//
// What is kept: every link (index, name, flags, MTU, operational state,
// kind), every IPv4 address, every IPv4 rule, and the IPv4 unicast routes of
// main, of the tables uplinkd is told about (SetTables), the routes carrying
// uplinkd's protocol in any table, and the default routes of every table
// (gateway learning reads a DHCP client's default route wherever it put it).
// Routes of other tables are dropped after a look at the message header, so
// a pass costs the same with 50 or 50,000 foreign routes.
//
// The kernel does not send RTM_DELROUTE for the IPv4 routes it flushes when
// a device goes down or away or loses its addresses (fib_sync_down_dev,
// fib_sync_down_addr). The mirror applies the same rules itself; the lab
// test TestMirrorMatchesDump compares it with a fresh dump after each kind
// of change.
//
// A link's rp_filter is part of the mirror too (IFLA_INET_CONF of its
// RTM_NEWLINK, RTM_NEWNETCONF when someone writes the sysctl) and is written
// over rtnetlink: a redial re-creates the link, and reading or writing its
// /proc/sys file would first need a namespace switch to open the new file.
// Other sysctls are files opened once and kept.
//
// The applier updates the mirror after each successful write (write-through):
// the notification of the write arrives later and changes nothing, and a pass
// right after an apply sees what it just wrote.
package kernel
