// Package vmtest is the VM acceptance suite: it proves uplinkd on a real
// Debian 12 system, with systemd as PID 1, real pppd and rp-pppoe, a real
// (simulated-radio) wlan link with hostapd, wpa_supplicant and dhclient,
// Debian's isc-dhcp-server supervised over systemd's API, and two gateways
// with keepalived and conntrackd, installed from the project's .deb the way
// an admin installs it.
//
// The lab tests (internal/lab) prove the kernel side in network
// namespaces, but the host has no PPP, no wlan and no systemd to run the
// daemon under; a VM has all of them. TestVM:
//
//  1. builds the image from the recipe in image/ (debootstrap minbase from
//     the host's Debian mirror, stock kernel, `mkfs.ext4 -d`, no loop
//     mounts), cached in /var/cache/uplinkd-vm/<recipe hash>/ and rebuilt
//     when any recipe file changes;
//  2. builds the .deb with `make deb` (into the test's temporary directory);
//  3. writes a data disk (ext4 made with `mkfs.ext4 -d`) with the .deb,
//     guest/run.sh, guest/lib.sh, guest/files and scenarios/*.sh;
//  4. boots qemu (KVM when it boots the kernel, else tcg) with that disk
//     and no network device at all (`-nic none`): every network lives in
//     the VM's own namespaces. The image boots into vmtest.target, whose
//     runner mounts the data disk, runs the scenarios and powers off;
//  5. reads the results back with debugfs (no mount) and reports each
//     scenario as a subtest: PASS/FAIL/XFAIL/SKIP lines and TIMING lines.
//
// Timings (TIMING lines, milliseconds; wall clock inside the VM):
//
//	pppoe.dial_ppp0, dial_ppp1     pon → the line has its address
//	pppoe.start_ready              systemctl start → READY=1 (first start:
//	                               includes loading the nf_tables modules)
//	pppoe.start_converged          systemctl start → rules, tables, SNAT and
//	                               routes of both lines in place
//	pppoe.drop_linkdown            the ISP ends the session → ppp0 down
//	pppoe.drop_failover            ppp0 down → `ip route get` says ppp1 (polled)
//	pppoe.drop_failover_kernel     the first kernel event of ppp0 going → the
//	                               default route via ppp1 (kernel events)
//	pppoe.persist_redial           ppp0 down → pppd's persist has it back
//	                               (pppd's holdoff, 30 s by default)
//	pppoe.redial_rewritten         new address → rule, SNAT, routes rewritten (polled)
//	pppoe.redial_rule_kernel       new address → its rule, from the kernel's events
//	pppoe.reconnect_pon_up         pppd gone (poff) → uplinkd's pon has ppp1 back
//	pppoe.restart_ready            systemctl restart → READY=1
//	redial.first_dial_up           uplinkd started without a pppd → its pon has ppp0 up
//	redial.pppd_exit               the ISP ends the session → pppd (no persist) exits
//	redial.drop_redial_converged   the ISP ends the session → uplinkd dialled again
//	                               and rules, table and SNAT are there (TARGET: pppd's
//	                               exit + the 1 s backoff + one dial)
//	dhcpservice.dhcpd_started      uplinkd started → isc-dhcp-server active
//	dhcpservice.lease_*            a LAN host's dhclient → a lease from isc-dhcp-server
//	dhcpservice.lan_change_restart the LAN link back → isc-dhcp-server restarted
//	hafailover.master_converged    keepalived started → gw1 holds the WAN address, SNAT to it
//	hafailover.failover_vip_snat   gw1's keepalived stopped → gw2 holds it, SNAT to it
//	hafailover.failover_connection_resumed
//	                               the same → the NATed TCP connection carries 20 more lines
//	wlan.ifup_wlan0_lease          ifup wlan0 → associated and leased
//	wlan.ap_stop_linkloss          hostapd stopped → wlan0 without carrier
//	wlan.ap_loss_failover          carrier lost → traffic via ppp0 (polled)
//	wlan.ap_loss_failover_kernel   the same from the kernel's events
//	wlan.ap_back_reassoc           hostapd back → wlan0 carrier again
//	wlan.reassoc_converged         carrier back → rules, SNAT, default on wlan0
//
// TARGET lines compare a timing with the product's target (failover within
// 1 s); they are reported, not failures, because the VM is emulated on a
// shared host. The check itself fails past 5 s. A negative timing is a
// failure: the script missed an event and timed the wrong one. The kernel
// event timings come from `ip monitor`, which a scenario starts and waits
// for until its socket has joined the groups.
//
// After the subtests TestVM repeats each failed check in one line, last in
// its output, so that a CI log's tail names what failed.
//
// For chasing one scenario: UPLINKD_VM_ONLY=ipv6,wlan runs only those
// scenarios, and UPLINKD_VM_RESULTS=DIR keeps every scenario's log and the
// console, also of a run that passed.
//
// The suite is skipped with -short and when not root.
package vmtest
