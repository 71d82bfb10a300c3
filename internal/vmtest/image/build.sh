#!/usr/bin/env bash
# Builds the acceptance-test VM image: a minimal Debian 12 with its stock
# kernel, systemd as PID 1 and the real tools the scenarios drive (pppd and
# rp-pppoe, hostapd, wpa_supplicant, dhclient, dnsmasq, nftables, iptables,
# isc-dhcp-server, keepalived, conntrackd; for IPv6 on the PPPoE lines
# radvd and wide-dhcpv6-server on the ISP side, dhcpcd on the gateway).
#
#   build.sh OUTDIR MIRROR DEBCACHE
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/rootfs.ext4. The image
# is made with `mkfs.ext4 -d` from a directory, so nothing is loop-mounted.
# The Go driver hashes this directory (the recipe) to name OUTDIR, so any
# change here builds a new image.
set -euo pipefail
out=$1 mirror=$2 debcache=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$out/root
mkdir -p "$out" "$debcache"
rm -rf "$root"

t0=$(date +%s)
pkgs=(
  linux-image-amd64 systemd-sysv udev kmod iproute2 ifupdown
  ppp pppoe hostapd wpasupplicant iw isc-dhcp-client dnsmasq
  nftables iptables conntrack procps iputils-ping
  isc-dhcp-server keepalived conntrackd netcat-openbsd
  radvd wide-dhcpv6-server dhcpcd-base
)
# --cache-dir keeps the downloaded packages between builds: a recipe change
# then costs the unpack, not the download.
debootstrap --variant=minbase --cache-dir="$debcache" \
  --include="$(IFS=,; echo "${pkgs[*]}")" bookworm "$root" "$mirror" >"$out/debootstrap.log" 2>&1 ||
  { tail -30 "$out/debootstrap.log" >&2; exit 1; }
echo "image: debootstrap $(( $(date +%s) - t0 ))s" >&2

# Files of the recipe (units, configs) go in as they are.
cp -a "$here/files/." "$root/"

# Modules the VM can never use (no GPU, sound, media, real NICs or wifi
# cards, storage controllers) are removed: a third of the image and of the
# mkfs time. The initramfs only needs virtio and ext4.
kver=$(ls "$root/lib/modules")
mods=$root/lib/modules/$kver/kernel
rm -rf "$mods/sound" "$mods/drivers/gpu" "$mods/drivers/media" "$mods/drivers/infiniband" \
       "$mods/drivers/staging" "$mods/drivers/net/ethernet" "$mods/drivers/scsi" "$mods/drivers/ata" \
       "$mods/drivers/iio" "$mods/drivers/hid" "$mods/drivers/input" "$mods/drivers/usb" \
       "$mods/drivers/bluetooth" "$mods/drivers/isdn" "$mods/drivers/mtd" "$mods/drivers/md" \
       "$mods/drivers/target" "$mods/drivers/nvme" "$mods/drivers/hwmon" "$mods/fs/xfs" \
       "$mods/fs/btrfs" "$mods/fs/ocfs2" "$mods/fs/nfs" "$mods/fs/nfsd" "$mods/fs/smb" \
       "$mods/fs/ceph" "$mods/fs/gfs2" "$mods/net/bluetooth" "$mods/net/mac802154" \
       "$mods/net/ieee802154" "$mods/net/ceph" "$mods/net/sunrpc" "$mods/net/rxrpc"
# mac80211_hwsim is drivers/net/wireless/mac80211_hwsim.ko (virtual/ on
# newer kernels): only the vendor directories go.
find "$mods/drivers/net/wireless" -mindepth 1 -maxdepth 1 -type d ! -name virtual -exec rm -rf {} +
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/var/cache/apt" \
       "$root/var/lib/apt/lists" "$root/usr/lib/firmware" "$root/lib/firmware"
mkdir -p "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
chroot "$root" depmod -a "$kver"

# The services the scenarios start themselves must not start at boot, nor
# udev's coldplug (under tcg it spends most of the boot loading modules for
# emulated hardware nobody uses); the
# boot target is vmtest.target (kernel command line), which pulls in only
# the runner.
chroot "$root" systemctl mask dnsmasq.service hostapd.service wpa_supplicant.service \
  isc-dhcp-server.service keepalived.service conntrackd.service radvd.service \
  wide-dhcpv6-server.service \
  getty@.service serial-getty@.service systemd-timesyncd.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-logind.service \
  networking.service ifupdown-pre.service man-db.timer dpkg-db-backup.timer \
  systemd-udev-trigger.service systemd-udev-settle.service >/dev/null 2>&1 || true
chroot "$root" systemctl enable vmtest-runner.service >/dev/null 2>&1
echo uplinkd-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 uplinkd-vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$root/etc/fstab"
passwd -R "$root" -d root >/dev/null

# Small initramfs: the listed modules only (virtio disk, ext4).
t1=$(date +%s)
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/vmtest.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k "$kver" >/dev/null 2>&1
echo "image: initramfs $(( $(date +%s) - t1 ))s" >&2

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
t2=$(date +%s)
size=$(( $(du -sm "$root" | cut -f1) + 300 ))
mkfs.ext4 -q -F -L uplinkd-vm -d "$root" "$out/rootfs.ext4" "${size}M"
echo "image: mkfs $(( $(date +%s) - t2 ))s (${size} MB)" >&2
rm -rf "$root"
echo "$kver" >"$out/kernel-version"
echo "image: total $(( $(date +%s) - t0 ))s" >&2
