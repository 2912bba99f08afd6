"""The initramfs phase for each generator's own order (SPEC §3), on images made by test code."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cpio_writer import file, newc
from helpers import FIXTURES, devices, doctor, finding_ids
from vmlinux_writer import SERIAL, vmlinux

K = "6.1.0-56-amd64"
MODS = f"usr/lib/modules/{K}/kernel/drivers"
E1000E = file(f"{MODS}/net/ethernet/intel/e1000e/e1000e.ko", b"\x7fELF")
BACKEND = file(f"{MODS}/xen/xen-pciback/xen-pciback.ko", b"\x7fELF")
HIDE = "options xen-pciback hide=(0000:05:00.0)\n"


def image(tmp_path: Path, *entries: object) -> Path:
    path = tmp_path / "initrd.img"
    path.write_bytes(gzip.compress(newc(list(entries))))  # type: ignore[arg-type]
    return path


def initramfs_tools(*extra: object) -> list[object]:
    return [
        file("conf/initramfs.conf", b"MODULES=most\n"),
        file("scripts/functions"),
        file("scripts/init-top/udev"),
        *extra,
    ]


def mkinitcpio(modules: str, *extra: object) -> list[object]:
    return [
        file("init_functions"),
        file("VERSION", b"39\n"),
        file("config", f"MODULES=({modules})\nHOOKS=(base udev)\n".encode()),
        *extra,
    ]


def dracut(*extra: object) -> list[object]:
    return [file("usr/lib/dracut/modules.txt", b"base\nudev-rules\n"), *extra]


def root_with_kernel(where: Path) -> Path:
    """The fixture plus its kernel image (generated: a vmlinux whose only built-in PCI driver is
    8250_pci's `serial`), so that built-in competitors of the NIC are ruled out as on a real root."""
    root = where / "root"
    if not root.exists():
        shutil.copytree(FIXTURES / "module-modprobe-options", root, symlinks=True)
        (root / "boot" / f"vmlinuz-{K}").write_bytes(vmlinux(SERIAL))
    return root


def predict(img: Path, cmdline: str = "ro quiet") -> tuple[dict[str, object], list[str]]:
    run = doctor(
        "--root", str(root_with_kernel(img.parent)), "--initramfs", str(img), "--cmdline", cmdline,
        "--format", "json",
    )  # fmt: skip
    return devices(run)["0000:05:00.0"], finding_ids(run)


@pytest.mark.parametrize(
    ("entries", "verdict", "phase"),
    [
        # initramfs-tools: udev coldplug (init-top) loads e1000e before conf/modules is read
        (
            initramfs_tools(E1000E, BACKEND, file("conf/modules", b"xen-pciback\n")),
            "not-claimed",
            "initramfs",
        ),
        # ... and the softdep copied into the image (mkinitramfs always copies /etc/modprobe.d) orders it
        (
            initramfs_tools(
                E1000E,
                BACKEND,
                file(
                    "etc/modprobe.d/xen-pciback.conf", (HIDE + "softdep e1000e pre: xen-pciback\n").encode()
                ),
            ),
            "claimed",
            "initramfs",
        ),
        # no e1000e in the image: conf/modules loads the backend with hide, nothing competes
        (
            initramfs_tools(
                BACKEND,
                file("etc/modprobe.d/xen-pciback.conf", HIDE.encode()),
                file("conf/modules", b"xen-pciback\n"),
            ),
            "claimed",
            "initramfs",
        ),
        # mkinitcpio modprobes MODULES before the udev hook
        (
            mkinitcpio(
                "xen-pciback", E1000E, BACKEND, file("etc/modprobe.d/xen-pciback.conf", HIDE.encode())
            ),
            "claimed",
            "initramfs",
        ),
        (
            mkinitcpio("", E1000E, BACKEND, file("etc/modprobe.d/xen-pciback.conf", HIDE.encode())),
            "not-claimed",
            "initramfs",
        ),
        # the project's dracut module and its device list in the image
        (
            dracut(
                E1000E,
                BACKEND,
                file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh"),
                file("etc/xen-pciback.conf", b"# NIC\n0000:05:00.0\n"),
            ),
            "claimed",
            "initramfs",
        ),
    ],
)
def test_generator_order(tmp_path: Path, entries: list[object], verdict: str, phase: str) -> None:
    dev, _ = predict(image(tmp_path, *entries))
    assert (dev["prediction"], dev["phase"]) == (verdict, phase), dev


def test_dracut_module_switched_off(tmp_path: Path) -> None:
    img = image(
        tmp_path,
        *dracut(
            E1000E,
            BACKEND,
            file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh"),
            file("etc/xen-pciback.conf", b"0000:05:00.0\n"),
        ),
    )
    dev, _ = predict(img, "ro rd.xen_pciback=0")
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e")


def test_dracut_module_missing_from_image(tmp_path: Path) -> None:
    img = image(tmp_path, *dracut(E1000E, BACKEND))
    dev, ids = predict(img, "ro rd.xen_pciback.hide=0000:05:00.0")
    assert dev["prediction"] == "not-claimed"
    assert "PB701" in ids


def test_rd_driver_pre_with_kernel_modules_code(tmp_path: Path) -> None:
    img = image(
        tmp_path,
        *dracut(
            E1000E,
            BACKEND,
            file("usr/lib/dracut/hooks/cmdline/01-parse-kernel.sh"),
            file("etc/modprobe.d/x.conf", HIDE.encode()),
        ),
    )
    dev, _ = predict(img, "ro rd.driver.pre=xen-pciback")
    assert (dev["prediction"], dev["phase"]) == ("claimed", "initramfs")


def test_cmdline_d_in_the_image_counts(tmp_path: Path) -> None:
    # dracut's force_drivers writes rd.driver.pre into etc/cmdline.d/20-force_drivers.conf
    img = image(
        tmp_path,
        *dracut(
            E1000E,
            BACKEND,
            file("usr/lib/dracut/hooks/cmdline/01-parse-kernel.sh"),
            file("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback\n"),
            file("etc/modprobe.d/x.conf", HIDE.encode()),
        ),
    )
    dev, _ = predict(img)
    assert (dev["prediction"], dev["phase"]) == ("claimed", "initramfs")
    assert dev["evidence"][0]["path"].endswith("!etc/cmdline.d/20-force_drivers.conf")


def test_dracut_module_cannot_bind_when_the_hide_value_is_malformed(tmp_path: Path) -> None:
    # the hook passes hide to the backend (kmod applies the command line); a malformed value makes
    # xen-pciback refuse to load, and driver_override keeps e1000e away too
    img = image(
        tmp_path, *dracut(E1000E, BACKEND, file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh"))
    )
    dev, ids = predict(
        img, "ro xen-pciback.hide=(0000:05:00.0),(0000:06:00.0) rd.xen_pciback.hide=0000:05:00.0"
    )
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "none")
    assert "PB201" in ids


def test_a_dead_classic_line_missing_from_the_image_is_no_stale_image(tmp_path: Path) -> None:
    # `options pciback` names no module (kmod matches options to xen_pciback, PB105): an image
    # built before it was written lacks nothing that matters, so no PB402 "rebuild" error
    root = root_with_kernel(tmp_path)
    conf = root / "etc/modprobe.d/xen-pciback.conf"
    in_image = conf.read_bytes()
    conf.write_bytes(in_image + b"options pciback hide=(0000:05:00.0)\n")
    img = image(
        tmp_path, *initramfs_tools(E1000E, BACKEND, file("etc/modprobe.d/xen-pciback.conf", in_image))
    )
    run = doctor("--root", str(root), "--kernel", K, "--initramfs", str(img), "--format", "json")
    ids = finding_ids(run)
    assert "PB105" in ids and "PB402" not in ids, ids
    # a live line missing from the image still is one
    conf.write_bytes(in_image + b"options xen-pciback permissive=1\n")
    assert "PB402" in finding_ids(
        doctor("--root", str(root), "--kernel", K, "--initramfs", str(img), "--format", "json")
    )
