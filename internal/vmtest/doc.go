// Package vmtest is the VM acceptance suite: it proves uplinkd on a real
// Debian 12 system, with systemd as PID 1, real pppd and rp-pppoe, a real
// (simulated-radio) wlan link with hostapd, wpa_supplicant and dhclient,
// installed from the project's .deb the way an admin installs it.
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
// The suite is skipped with -short and when not root.
package vmtest
