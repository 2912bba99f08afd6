"""Built-in PCI drivers read from the vmlinux (facts/builtin_pci.py) and what they change in a
prediction: a built-in match wins at kernel init; no way to know the built-ins → never `claimed`."""

from __future__ import annotations

import gzip
import shutil
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpio_writer import file, newc
from helpers import FIXTURES, devices, doctor
from pciback_doctor.facts.builtin_pci import ANY_ID, read_builtin_pci_drivers
from vmlinux_writer import ANY, SERIAL, vmlinux

K = "6.1.0-56-amd64"
INTEL_NIC = ("e1000e", [(0x8086, 0x10D3, ANY, ANY, 0, 0)])
MODS = f"usr/lib/modules/{K}/kernel/drivers"
ORDERED = [
    file("usr/lib/dracut/modules.txt", b"base\nudev-rules\n"),
    file(f"{MODS}/net/ethernet/intel/e1000e/e1000e.ko", b"\x7fELF"),
    file(f"{MODS}/xen/xen-pciback/xen-pciback.ko", b"\x7fELF"),
    file(
        "etc/modprobe.d/xen-pciback.conf",
        b"options xen-pciback hide=(0000:05:00.0)\nsoftdep e1000e pre: xen-pciback\n",
    ),
]
SUB_ONLY = ("vendor-board", [(0x1234, 0x5678, 0x1AF4, 0x1100, 0, 0)])


def test_reads_every_driver_and_its_table() -> None:
    found = read_builtin_pci_drivers(vmlinux(SERIAL, INTEL_NIC, SUB_ONLY), "boot/vmlinuz")
    assert found.error is None
    assert [(d.name, len(d.ids)) for d in found.drivers] == [
        ("serial", 1),
        ("e1000e", 1),
        ("vendor-board", 1),
    ]
    assert found.drivers[0].ids[0].vendor == ANY_ID


def test_matching_follows_pci_match_one_device() -> None:
    found = read_builtin_pci_drivers(vmlinux(SERIAL, SUB_ONLY), "boot/vmlinuz")
    hit = found.match(0x1B36, 0x0002, 0x1AF4, 0x1100, 0x070002)  # qemu pci-serial: class 07 00
    assert hit is not None and hit[0].name == "serial"
    assert found.match(0x8086, 0x10D3, 0x8086, 0, 0x020000) is None  # a NIC: no built-in driver
    assert found.match(0x1234, 0x5678, 0x1AF4, 0x1100, 0x020000) is not None  # subsystem ids match
    assert found.match(0x1234, 0x5678, 0x1AF4, 0x1101, 0x020000) is None  # ... and only then


def test_a_built_in_backend_is_no_competitor(tmp_path: Path) -> None:
    # pci_stub.c's pcistub_ids match every device; pcistub_probe decides by hide and slots
    catch_all = ("pciback", [(ANY, ANY, ANY, ANY, 0, 0)])
    root = _root(tmp_path, "module-modprobe-options", vmlinux(catch_all, SERIAL))
    dev = _predict(root, "--device=0000:09:00.0=8086:10d3:020000", bdf="0000:09:00.0")
    assert dev["native_driver"] != "pciback" and dev["native_mode"] != "builtin", dev


def test_kernels_before_override_only_have_32_byte_entries() -> None:
    found = read_builtin_pci_drivers(vmlinux(SERIAL, INTEL_NIC, id_size=32), "boot/vmlinuz")
    assert [d.name for d in found.drivers] == ["serial", "e1000e"]


def test_not_a_vmlinux_is_an_error_not_an_exception() -> None:
    for blob in (b"", b"\x7fELF", b"MZ" + bytes(200), b"\x7fELF\x01\x01" + bytes(100)):
        found = read_builtin_pci_drivers(blob, "boot/vmlinuz")
        assert found.error and not found.drivers


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=4096))
def test_never_raises_on_mutated_images(noise: bytes, at: int) -> None:
    blob = bytearray(vmlinux(SERIAL, INTEL_NIC))
    blob[at : at + len(noise)] = noise
    read_builtin_pci_drivers(bytes(blob), "boot/vmlinuz")


def _root(tmp_path: Path, fixture: str, image: bytes | None) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / fixture, root, symlinks=True)
    # Debian 6.1 records no PCI ids of built-in drivers: the fixture's list of them goes
    for listed in root.glob("lib/modules/*/modules.builtin.modinfo"):
        listed.unlink()
    if image is not None:
        (root / "boot").mkdir(exist_ok=True)
        (root / "boot" / f"vmlinuz-{K}").write_bytes(image)
    return root


def _predict(root: Path, *args: str, bdf: str = "0000:05:00.0") -> dict[str, object]:
    run = doctor("--root", str(root), "--format", "json", "--kernel", K, *args)
    assert run.code in (0, 1), run.err
    return devices(run)[bdf]


# the fixture: backend a module, `options xen-pciback hide=` and `softdep e1000e pre: xen-pciback`,
# a kernel that records no built-in PCI ids (Debian 6.1); an image without e1000e → rootfs decides
SERIAL_DEVICE = "--device=0000:09:00.0=1b36:0002:070002"


def test_built_in_driver_from_the_kernel_image_wins_at_kernel_init(tmp_path: Path) -> None:
    root = _root(tmp_path, "module-modprobe-options", vmlinux(SERIAL, INTEL_NIC))
    dev = _predict(root, SERIAL_DEVICE, bdf="0000:09:00.0")
    assert (dev["prediction"], dev["phase"], dev["winner"]) == ("not-claimed", "kernel", "serial")
    assert dev["native_mode"] == "builtin"


def test_without_the_built_in_ids_a_module_path_is_never_claimed(tmp_path: Path) -> None:
    # e1000e and the backend in the image, the softdep ordering them: claimed in the initramfs —
    # unless a built-in driver binds first, which only the kernel image can rule out
    img = tmp_path / "initrd.img"
    img.write_bytes(gzip.compress(newc(ORDERED)))  # type: ignore[arg-type]
    blind = _predict(_root(tmp_path / "a", "module-modprobe-options", None), "--initramfs", str(img))
    assert (blind["prediction"], blind["phase"]) == ("unknown", "kernel"), blind
    assert "built-in" in str(blind["reason"]) and "kernel image" in str(blind["reason"])
    seen = _predict(
        _root(tmp_path / "b", "module-modprobe-options", vmlinux(SERIAL)), "--initramfs", str(img)
    )
    assert (seen["prediction"], seen["phase"]) == ("claimed", "initramfs"), seen


def test_an_unknown_built_in_competitor_is_a_warning(tmp_path: Path) -> None:
    img = tmp_path / "initrd.img"
    img.write_bytes(gzip.compress(newc(ORDERED)))  # type: ignore[arg-type]
    root = _root(tmp_path / "a", "module-modprobe-options", None)
    run = doctor("--root", str(root), "--kernel", K, "--initramfs", str(img), "--format", "json")
    pb309 = [f for f in run.json()["findings"] if f["id"] == "PB309"]
    assert [f["device"] for f in pb309] == ["0000:05:00.0"] and pb309[0]["severity"] == "warning"
    assert (
        doctor("--root", str(root), "--kernel", K, "--initramfs", str(img), "--fail-on", "warning").code == 1
    )


def test_an_unusable_kernel_image_option_is_a_usage_error(tmp_path: Path) -> None:
    # the tables are read on a thread beside the initramfs; its error still ends the run as exit 2
    root = _root(tmp_path, "module-modprobe-options", None)
    bogus = tmp_path / "not-a-kernel"
    bogus.write_bytes(b"MZ" + bytes(5000))
    run = doctor("--root", str(root), "--kernel", K, "--kernel-image", str(bogus), "--format", "json")
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"pciback-doctor: --kernel-image {bogus}: ") and run.err.count("\n") == 1
    named = doctor(
        "--root", str(root), "--kernel", K, "--kernel-image", str(root / "nope"), "--format", "json"
    )
    assert named.code == 2 and "--kernel-image" in named.err


def test_the_kernel_image_option_gives_the_built_in_tables(tmp_path: Path) -> None:
    root = _root(tmp_path, "module-modprobe-options", None)
    image = tmp_path / "vmlinux"
    image.write_bytes(vmlinux(SERIAL, INTEL_NIC))
    dev = _predict(root, SERIAL_DEVICE, "--kernel-image", str(image), bdf="0000:09:00.0")
    assert (dev["prediction"], dev["phase"], dev["winner"], dev["native_mode"]) == (
        "not-claimed",
        "kernel",
        "serial",
        "builtin",
    )


def test_with_no_device_to_predict_the_kernel_image_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # decompressing the kernel for its id tables is the slowest read of a check: a system that
    # wants no device passed through answers without waiting for it (it runs on a thread)
    import pciback_doctor.facts.system as system

    started, release = threading.Event(), threading.Event()

    def slow(*_args: object) -> None:
        started.set()
        release.wait(60)

    monkeypatch.setattr(system, "read_builtin_pci", slow)
    root = _root(tmp_path, "module-modprobe-options", vmlinux(SERIAL))
    (root / "etc/modprobe.d/xen-pciback.conf").write_text("# nothing hidden\n")
    try:
        begun = time.monotonic()
        run = doctor("--root", str(root), "--kernel", K, "--format", "json")
        assert run.code in (0, 1) and run.json()["devices"] == [], run.err
        assert started.is_set() and time.monotonic() - begun < 30  # read, but never waited for
    finally:
        release.set()
