"""A dom0 kernel the lab builds itself: Debian's `linux-source-6.1` with the PCI backend built in.

Debian's own kernel has the backend as a module, so the built-in path (pcistub_init at
fs_initcall, the `xen-pciback.` parameter prefix, a malformed hide that stops the driver from ever
registering) needs a kernel of our own. To build in minutes on two cores it starts from
`tinyconfig` and adds only what a Xen PV dom0 booting a dracut image under qemu needs (udev wants
devtmpfs, netlink and unix sockets, inotify, signalfd, epoll; the project's dracut module reads
/sys/hypervisor), plus the devices the lab emulates: e1000e as a module, 8250_pci (`serial`) built
in. The result is laid out like Debian's package (boot/vmlinuz-R, boot/config-R, lib/modules/R with
depmod run) and cached under the test cache, keyed by the source package and this fragment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from debian import Unavailable, cache_dir, fetch_deb

#: the flavour names `harness.dom0_kernel` knows these kernels by: e1000e a module, or built in
FLAVOUR = "lab-builtin"
FLAVOUR_E1000E = "lab-builtin-e1000e"

#: (symbol, value) on top of tinyconfig; olddefconfig fills in what they select
FRAGMENT: tuple[tuple[str, str], ...] = (
    ("64BIT", "y"),
    ("PRINTK", "y"),
    ("TTY", "y"),
    ("MULTIUSER", "y"),
    ("POSIX_TIMERS", "y"),
    ("FUTEX", "y"),
    ("EPOLL", "y"),
    ("SIGNALFD", "y"),
    ("TIMERFD", "y"),
    ("EVENTFD", "y"),
    ("SHMEM", "y"),
    ("FILE_LOCKING", "y"),
    ("FHANDLE", "y"),
    ("INOTIFY_USER", "y"),
    ("BLOCK", "y"),
    ("BLK_DEV_INITRD", "y"),
    ("RD_GZIP", "y"),
    ("RD_XZ", "y"),
    ("RD_ZSTD", "y"),
    ("BINFMT_ELF", "y"),
    ("BINFMT_SCRIPT", "y"),
    ("MODULES", "y"),
    ("MODULE_UNLOAD", "y"),
    ("PROC_FS", "y"),
    ("SYSFS", "y"),
    ("TMPFS", "y"),
    ("DEVTMPFS", "y"),
    ("DEVTMPFS_MOUNT", "y"),
    ("NET", "y"),
    ("UNIX", "y"),
    ("MAGIC_SYSRQ", "y"),
    ("PCI", "y"),
    ("PCI_MSI", "y"),
    ("ACPI", "y"),
    ("X86_LOCAL_APIC", "y"),
    ("X86_IO_APIC", "y"),
    ("HYPERVISOR_GUEST", "y"),
    ("PARAVIRT", "y"),
    ("XEN", "y"),
    ("XEN_PV", "y"),
    ("XEN_DOM0", "y"),
    ("XEN_BACKEND", "y"),
    ("XEN_SYS_HYPERVISOR", "y"),
    ("XENFS", "y"),
    ("XEN_COMPAT_XENFS", "y"),
    ("HVC_XEN", "y"),
    ("XEN_PCIDEV_BACKEND", "y"),
    ("SERIAL_8250", "y"),
    ("SERIAL_8250_CONSOLE", "y"),
    ("SERIAL_8250_PCI", "y"),
    ("NETDEVICES", "y"),
    ("ETHERNET", "y"),
    ("NET_VENDOR_INTEL", "y"),
    ("E1000E", "m"),
)


#: what each flavour changes in FRAGMENT
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {FLAVOUR: (), FLAVOUR_E1000E: (("E1000E", "y"),)}


def fragment(flavour: str) -> tuple[tuple[str, str], ...]:
    changed = dict(VARIANTS[flavour])
    return tuple((k, changed.get(k, v)) for k, v in FRAGMENT)


def _digest(flavour: str) -> str:
    text = "\n".join(f"{k}={v}" for k, v in fragment(flavour)) + f"-{flavour}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def built_kernel(flavour: str = FLAVOUR) -> tuple[Path, Path, str]:
    """(tree root, vmlinuz, release) of one of the lab's own kernels, built once and cached."""
    deb = fetch_deb("linux-source-6.1")
    base = cache_dir() / "lab" / f"kernel-{deb.stem}-{_digest(flavour)}"
    tree = base / "tree"
    stamp = base / ".built"
    if not stamp.exists():
        _build(deb, base, tree, flavour)
        stamp.touch()
    release = (base / "release").read_text().strip()
    return tree, tree / "boot" / f"vmlinuz-{release}", release


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Unavailable(
            f"kernel build tools missing: {' '.join(missing)} (gcc make flex bison bc libelf-dev)"
        )


def _build(deb: Path, base: Path, tree: Path, flavour: str) -> None:
    _need("gcc", "make", "flex", "bison", "bc", "depmod")
    started = time.monotonic()
    shutil.rmtree(base, ignore_errors=True)
    src, out = base / "src", base / "build"
    src.mkdir(parents=True)
    out.mkdir()
    tarball = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    inner = subprocess.run(
        ["tar", "-xO", "./usr/src/linux-source-6.1.tar.xz"], input=tarball, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-xJ", "-C", str(src), "--strip-components=1"], input=inner, check=True)
    del tarball, inner
    make = ["make", "-C", str(src), f"O={out}", "ARCH=x86_64", f"LOCALVERSION=-{flavour}"]
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run([*make, "tinyconfig"], **quiet)  # type: ignore[call-overload]
    config = out / ".config"
    lines = config.read_text().splitlines()
    wanted = fragment(flavour)
    names = {f"CONFIG_{k}" for k, _ in wanted}
    kept = [ln for ln in lines if not any(ln.startswith((f"{n}=", f"# {n} is not set")) for n in names)]
    config.write_text("\n".join([*kept, *(f"CONFIG_{k}={v}" for k, v in wanted)]) + "\n")
    subprocess.run([*make, "olddefconfig"], **quiet)  # type: ignore[call-overload]
    got = dict(
        line.split("=", 1)
        for line in config.read_text().splitlines()
        if line.startswith("CONFIG_") and "=" in line
    )
    lost = [f"{k}={v}" for k, v in wanted if got.get(f"CONFIG_{k}") != v]
    if lost:
        raise RuntimeError(f"the lab kernel config lost {', '.join(lost)} (unmet dependencies)")
    jobs = str(os.cpu_count() or 2)
    subprocess.run([*make, f"-j{jobs}", "bzImage", "modules"], **quiet)  # type: ignore[call-overload]
    release = subprocess.run(
        [*make, "-s", "kernelrelease"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (tree / "boot").mkdir(parents=True)
    shutil.copy(out / "arch" / "x86" / "boot" / "bzImage", tree / "boot" / f"vmlinuz-{release}")
    shutil.copy(config, tree / "boot" / f"config-{release}")
    subprocess.run(
        [*make, f"INSTALL_MOD_PATH={tree}", "INSTALL_MOD_STRIP=1", "modules_install"],
        **quiet,  # type: ignore[call-overload]
    )
    subprocess.run(["depmod", "-b", str(tree), release], check=True)
    (base / "release").write_text(release + "\n")
    (base / "build-seconds").write_text(f"{time.monotonic() - started:.0f}\n")
    shutil.rmtree(src)  # the sources and objects are 1.5 GB; the tree is what the lab needs
    shutil.rmtree(out)
