#!/bin/sh
# dracut module xen-pciback: claim PCI devices for Xen's pciback early in the initramfs
# (hook xen-pciback-hide.sh at cmdline 00, before udev and rd.driver.pre). See README.md.
#
# module-setup.sh is sourced by dracut (bash) but kept POSIX like the hook, which runs in the
# image's /bin/sh. dracut provides $moddir and $dracutsysrootdir.
# shellcheck disable=SC2154

# Include automatically when the host is configured (/etc/xen-pciback.conf); otherwise only
# when asked (dracut --add xen-pciback, add_dracutmodules+=" xen-pciback "), e.g. for devices
# given with rd.xen_pciback.hide= on the kernel command line.
check() {
    [ -f "$dracutsysrootdir/etc/xen-pciback.conf" ] && return 0
    return 255
}

# Nothing: the hook needs only base (modprobe, readlink, dracut-lib.sh). The boot lab shows it
# working in a minimal "base udev-rules rootfs-block" image, without kernel-modules.
depends() {
    return 0
}

# The backend module even in hostonly mode (no device "needs" it, so hostonly instmods would
# drop it). Optional: a kernel with the backend built in, or without it, still builds.
installkernel() {
    hostonly='' instmods xen-pciback
}

install() {
    inst_multiple modprobe readlink tr cat
    inst_hook cmdline 00 "$moddir/xen-pciback-hide.sh"
    if [ -f "$dracutsysrootdir/etc/xen-pciback.conf" ]; then
        inst_simple "$dracutsysrootdir/etc/xen-pciback.conf" /etc/xen-pciback.conf
    fi
}
