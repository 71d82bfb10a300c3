// Package firewall applies the netfilter state uplinkd owns: per-uplink source
// NAT, connection marks that tie conntrack entries to an uplink, marks for
// [[rule]] policy routing, per-uplink input filters with rate limits, deny
// lists, and the DNAT of inbound load-balanced [[service]]s.
//
// The package is split the same way as policy: Compute is a pure function from
// the configuration and the observed uplinks to a backend-neutral Ruleset, and a
// Backend makes the kernel match a Ruleset in one atomic batch.
//
// # Ownership
//
// The nftables backend (the default) owns exactly one table, `ip uplinkd`, and
// writes it with one transaction per Sync over a long-lived netlink
// connection, so packets see either the old or the new ruleset and never a
// gap. The first Sync (and the first after damage) deletes and re-creates the
// whole table inside that transaction, which also adopts whatever a previous
// run left; later Syncs flush and refill only the chains whose rules changed
// and the sets whose elements changed. An address change therefore rewrites
// one two-rule NAT chain (about 0.1 ms), and the per-source rate-limit meters
// keep their state (they are reset only when the table is replaced, e.g. when
// a limit itself changes). The table is IPv4 only
// (family ip, not inet) on purpose: uplinkd manages IPv4 routing only, the
// iptables backend manages iptables only (not ip6tables), and an inet table would
// either filter IPv6 differently between the two backends or drop IPv6 neighbour
// discovery on filtered uplinks. IPv6 traffic is neither NATed nor filtered.
//
// The iptables backend (for hosts that manage iptables-legacy) owns chains named
// UPLINKD-* in the filter, nat and mangle tables, entered by one jump each from
// the built-in chains. Jumps are checked and inserted with go-iptables only when
// missing; chain content is written kube-proxy style with one
// `iptables-restore --noflush` whose input declares `:UPLINKD-X - [0:0]`, which
// flushes only our chains. Rules uplinkd does not own are never deleted or
// reordered (our jumps are inserted at the top of the built-in chains).
//
// Both backends render one rule model (buildRules, nftrules.go), shaped like
// table ip uplinkd, so that a rule is assembled once and the iptables rules
// cannot drift from the nftables ones; iptrules.go says how iptables differs.
//
// # Verdicts
//
// In both backends only "drop" and "reject" are final. An "accept" in the
// uplinkd table (or a RETURN from an UPLINKD-* chain) only means "uplinkd does
// not object": the packet still traverses the administrator's own tables and
// rules, so installing uplinkd never opens what an administrator closed.
//
// # Marks
//
// The 32-bit packet and connection marks are shared with other software, so
// uplinkd only writes two fields and always with a mask:
//
//   - bits 0-15 (UserMarkMask): the [[rule]] mark M; policy routes
//     `fwmark M/0xffff lookup T`. Set on the first packet of a new connection
//     (prerouting for forwarded traffic, a `type route` output chain for local
//     traffic so the kernel re-routes), saved in the conntrack mark and restored
//     for later packets of the connection in the original direction, so a
//     connection keeps its uplink when the rules change.
//   - bits 16-23 (UplinkMarkMask): the uplink a connection was created on, (i+1)<<16
//     for the i-th [[uplink]]. Written into the conntrack mark for new
//     connections leaving or entering through the uplink, so that
//     Backend.DeleteConntrackByMark can remove exactly that uplink's entries in
//     the kernel when its address changes or it fails.
//
// Replies to LAN-originated connections are deliberately not marked: a reply
// to a LAN host carrying the mark would be routed by the uplink's table, which
// holds only a default route, and sent back out of the uplink. The opposite
// case is marked on purpose: a connection that came in through an uplink (a
// [[service]], a port forward) has that uplink's mark in its conntrack mark,
// and its replies, arriving from the LAN in the reply direction, get the
// mark restored so that they leave through the uplink the connection came in
// on, also when another uplink holds the default route.
//
// Inbound [[service]] DNAT, balancing, health and hairpin are described in
// services.go.
package firewall
