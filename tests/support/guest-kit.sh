#!/bin/sh
# Builds a tiny guest for the libvirt tests: a Debian cloud kernel and an initramfs that runs
# the QEMU guest agent over virtio-serial with one mounted file system (ext2 on a loop
# device), so that `virsh domfsfreeze` really freezes something.
#
# Usage: tests/support/guest-kit.sh [OUTDIR]   (default /var/cache/vmvault-test/guest-kit)
# Writes OUTDIR/vmlinuz and OUTDIR/initrd.gz; the tests find them through
# VMVAULT_GUEST_KIT=OUTDIR (or the default folder). Needs apt-get (Debian's packages) and
# the host libraries of qemu-guest-agent (glib, liburing, libnuma, libudev), which
# libvirt and qemu already pull in. Nothing is installed on the host: the packages are
# downloaded and unpacked into a temporary folder.
set -eu

out=${1:-/var/cache/vmvault-test/guest-kit}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

kernel=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel" ] || { echo "guest-kit: no linux-image-cloud-amd64 in apt (run apt-get update)" >&2; exit 1; }
# apt's sandbox user cannot write into a root-only temp folder.
chmod 755 "$work"
apt-get download -q "$kernel" busybox-static qemu-guest-agent >/dev/null
for deb in ./*.deb; do dpkg -x "$deb" x; done

root=$work/root
mkdir -p "$root/bin" "$root/usr/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/run" \
    "$root/var/run" "$root/tmp" "$root/mnt" "$root/lib/modules"
cp x/bin/busybox "$root/bin/busybox"
cp x/usr/sbin/qemu-ga "$root/usr/sbin/qemu-ga"
# qemu-ga's shared libraries, resolved on the host (same Debian release).
for lib in $(ldd x/usr/sbin/qemu-ga | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mods=$(echo x/lib/modules/*/kernel)
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
    drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/char/virtio_console \
    drivers/block/loop; do
    cp "$mods/$m.ko" "$root/lib/modules/"
done

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Dependency order.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console loop; do
    insmod /lib/modules/$m.ko
done
# A real (block-backed) file system for the agent to freeze.
dd if=/dev/zero of=/fs.img bs=1M count=8 2>/dev/null
mke2fs -q /fs.img
mount -o loop /fs.img /mnt
PORT=
for i in 1 2 3 4 5 6 7 8 9 10; do
    for p in /sys/class/virtio-ports/*; do
        [ -f "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && PORT=$(basename "$p")
    done
    [ -n "$PORT" ] && break
    sleep 1
done
echo "vmvault-guest: agent on ${PORT:-nothing}"
exec /usr/sbin/qemu-ga -v -m virtio-serial -p "/dev/$PORT"
EOF
chmod 755 "$root/init"

mkdir -p "$out"
(cd "$root" && find . | "$work/x/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$out/initrd.gz.tmp"
cp x/boot/vmlinuz-* "$out/vmlinuz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
# QEMU runs as another user and must read both.
chmod 755 "$out"
chmod 644 "$out/initrd.gz" "$out/vmlinuz"
echo "guest-kit: $out/vmlinuz $out/initrd.gz"
