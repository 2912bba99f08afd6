"""Qubes OS's early binder (90qubes-pciback) as the model runs it, and the Qubes 4.2 fixture.

The hook's behaviour each row rests on was seen in the boot lab (tests/lab, scenarios `qubes-*`)
with the real module in a real dracut image; here the model is held to it on made-up devices.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cpio_writer import file, newc, symlink
from helpers import copy_fixture, devices, doctor, finding_ids
from pciback_doctor.boot.binders import BinderContext
from pciback_doctor.boot.qubes import getargbool, run_hook
from pciback_doctor.facts.cmdline import parse_cmdline
from pciback_doctor.facts.pci import PciDevice, parse_bdf
from pciback_doctor.model import Evidence

HOOK = Evidence("initrd.img!usr/lib/dracut/hooks/cmdline/02-qubes-pciback.sh")
NIC, USB, GPU, AUDIO = "0000:05:00.0", "0000:00:14.0", "0000:01:00.0", "0000:01:00.1"
CLASSES = {NIC: 0x020000, USB: 0x0C0330, GPU: 0x030000, AUDIO: 0x040300, "0001:02:00.0": 0x020000}


def device(bdf: str, cls: int | None) -> PciDevice:
    b = parse_bdf(bdf)
    assert b is not None
    return PciDevice(b, None, None, None, None, cls, None, None, None, None, "")


def hook(cmdline: str, present: tuple[str, ...] = (NIC, USB, GPU, AUDIO), backend_up: bool = True):  # type: ignore[no-untyped-def]
    ctx = BinderContext(
        (parse_cmdline(cmdline, "--cmdline"),),
        tuple(device(b, CLASSES.get(b)) for b in present),
        backend_up,
        "" if backend_up else "xen-pciback is not in the image",
        backend_up,
    )
    return run_hook(HOOK, ctx)


def bound(sel) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(w.intended) for w in sel.words if w.binds and not w.skipped}


@pytest.mark.parametrize(
    ("cmdline", "taken"),
    [
        # network devices by class, always; nothing else without options
        ("", {NIC}),
        # rd.qubes.hide_all_usb (getargbool default 0): a bare key, =1, =yes all turn it on
        ("rd.qubes.hide_all_usb", {NIC, USB}),
        ("rd.qubes.hide_all_usb=1", {NIC, USB}),
        ("rd.qubes.hide_all_usb=0", {NIC}),
        ("rd.qubes.hide_all_usb=off", {NIC}),
        # the last occurrence wins (dracut-getarg)
        ("rd.qubes.hide_all_usb rd.qubes.hide_all_usb=no", {NIC}),
        # no `-`/`_` folding in dracut's getarg
        ("rd.qubes.hide-all-usb", {NIC}),
        # USBguard instead of hiding: the controllers stay in dom0
        ("usbcore.authorized_default=0", {NIC}),
        # rd.qubes.hide_pci adds devices of any class, without a domain, comma separated
        ("rd.qubes.hide_pci=01:00.0,01:00.1", {NIC, GPU, AUDIO}),
        # rd.qubes.dom0_usb: the exception is compared as text with lspci's BB:SS.F
        ("rd.qubes.hide_all_usb rd.qubes.dom0_usb=00:14.0", {NIC}),
        ("rd.qubes.hide_all_usb rd.qubes.dom0_usb=0000:00:14.0", {NIC, USB}),
        # a bogus dom0_usb is dropped with a warning: the controller is hidden after all
        ("rd.qubes.hide_all_usb rd.qubes.dom0_usb=00:14.0;", {NIC, USB}),
        # a domain-prefixed word in the middle: its writes fail, the device is not taken, no stop
        ("rd.qubes.hide_pci=0000:01:00.0,01:00.1", {NIC, AUDIO}),
    ],
)
def test_selection(cmdline: str, taken: set[str]) -> None:
    sel = hook(cmdline)
    assert bound(sel) == taken
    assert sel.stop is None


@pytest.mark.parametrize(
    ("cmdline", "present", "backend_up", "stops"),
    [
        # the last word fails (a domain written: 0000:0000:01:00.1), so die (seen in the lab)
        ("rd.qubes.hide_pci=01:00.0,0000:01:00.1", (NIC, GPU, AUDIO), True, True),
        # a device that does not exist: bind fails
        ("rd.qubes.hide_pci=03:00.0", (NIC,), True, True),
        # upper-case hex is outside [0-9a-f.:,]: 'Bogus PCI device list'
        ("rd.qubes.hide_pci=01:00.0,0A:00.0", (NIC, GPU), True, True),
        # no pciback driver: every bind fails, and there is a device to bind
        ("", (NIC,), False, True),
        # ... but nothing selected: the loop never runs
        ("", (GPU,), False, False),
        # a NIC outside domain 0: lspci prints 0001:02:00.0, the hook writes 0000:0001:02:00.0
        ("", (NIC, "0001:02:00.0"), True, True),
        # only the last word counts (`set -e` is inert inside `( … ) ||`): an earlier failure is silent
        ("rd.qubes.hide_pci=03:00.0,01:00.0", (NIC, GPU), True, False),
        # the last word skipped: `continue` is the last command, status 0
        ("rd.qubes.hide_pci=03:00.0,00:14.0 rd.qubes.dom0_usb=00:14.0", (NIC, USB), True, False),
    ],
)
def test_boot_stops(cmdline: str, present: tuple[str, ...], backend_up: bool, stops: bool) -> None:
    assert (hook(cmdline, present, backend_up).stop is not None) is stops


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [(None, False, False), (None, True, True), ("", False, True), ("0", True, False), ("no", True, False),
     ("off", True, False), ("2", False, True), ("yes", False, True)],
)  # fmt: skip
def test_getargbool(value: str | None, default: bool, expected: bool) -> None:
    token = "" if value is None else ("k" if value == "" else f"k={value}")
    assert getargbool((parse_cmdline(token, "--cmdline"),), default, "k") is expected


# -- end to end: the Qubes 4.2 fixture with an image carrying the hook --------------------------------

K = "6.6.48-1.qubes.fc37.x86_64"
FIXTURE = "qubes-4.2-hide-pci-domain"
MODS = f"usr/lib/modules/{K}/kernel/drivers"


def qubes_root(tmp_path: Path) -> Path:
    """The fixture plus its initramfs as dracut builds it with 90qubes-pciback (made here: the
    fixture carries no binary): the hook file, the backend and the native drivers."""
    root = copy_fixture(FIXTURE, tmp_path / "root")
    entries = [
        file("usr/lib/dracut/modules.txt", b"base\nbash\nqubes-pciback\nudev-rules\n"),
        file("usr/lib/dracut/hooks/cmdline/02-qubes-pciback.sh", b"# 90qubes-pciback's hook\n"),
        file(f"{MODS}/xen/xen-pciback/xen-pciback.ko", b"\x7fELF"),
        file(f"{MODS}/net/ethernet/intel/e1000e/e1000e.ko", b"\x7fELF"),
        file(f"{MODS}/usb/host/xhci-pci.ko", b"\x7fELF"),
        file(f"{MODS}/gpu/drm/nouveau/nouveau.ko", b"\x7fELF"),
    ]
    (root / "boot" / f"initramfs-{K}.img").write_bytes(gzip.compress(newc(entries)))  # type: ignore[arg-type]
    return root


def check(root: Path, *args: str):  # type: ignore[no-untyped-def]
    run = doctor("--root", str(root), "--format", "json", *args)
    assert run.code in (0, 1), run.err
    return run


def fixture_root(tmp_path: Path, image: bool) -> Path:
    """With its image, or without one: /boot/initramfs-*.img is readable by root only on Fedora and
    Qubes, and Qubes puts 90qubes-pciback into every image it builds, so the answers are the same."""
    return qubes_root(tmp_path) if image else copy_fixture(FIXTURE, tmp_path / "root")


@pytest.mark.parametrize("image", [True, False], ids=["image", "no-image"])
def test_fixture_domain_in_hide_pci_stops_the_boot(tmp_path: Path, image: bool) -> None:
    run = check(fixture_root(tmp_path, image))
    ids = finding_ids(run)
    assert "PB703" in ids and ids.count("PB704") == 2, ids
    # the boot stops: nothing is anybody's, and the doctor says so instead of blaming native drivers
    for bdf in (NIC, USB, GPU, AUDIO):
        dev = devices(run)[bdf]
        assert (dev["prediction"], dev["winner"]) == ("not-claimed", "none"), dev
        assert "stops the boot" in dev["reason"]
    assert not {"PB302", "PB303"} & set(ids), ids


@pytest.mark.parametrize("image", [True, False], ids=["image", "no-image"])
def test_fixture_fix_is_in_qubes_terms(tmp_path: Path, image: bool) -> None:
    root = fixture_root(tmp_path, image)
    run = doctor("fix", "--root", str(root))
    assert run.code == 0, run.out + run.err
    assert 'rd.qubes.hide_pci=01:00.0,01:00.1"' in run.out, run.out
    assert "grub2-mkconfig -o /boot/grub2/grub.cfg" in run.out, run.out
    # a modprobe.d or cmdline fix leaves the hook stopping the boot in the image dracut builds next
    assert "# not offered: modprobe: simulated: 0 of 4 claimed" in run.out, run.out
    # written, then grub.cfg regenerated as grub2-mkconfig would: every device is pciback's
    assert doctor("fix", "--root", str(root), "--write").code == 0
    grub = (root / "etc/default/grub").read_text()
    assert "rd.qubes.hide_pci=01:00.0,01:00.1" in grub and "0000:01:00" not in grub
    cfg = root / "boot/grub2/grub.cfg"
    cfg.write_text(
        cfg.read_text().replace(
            "rd.qubes.hide_pci=0000:01:00.0,0000:01:00.1", "rd.qubes.hide_pci=01:00.0,01:00.1"
        )
    )
    after = check(root)
    assert {b: d["prediction"] for b, d in devices(after).items()} == dict.fromkeys(
        (USB, GPU, AUDIO, NIC), "claimed"
    )
    assert not {"PB703", "PB704", "PB308"} & set(finding_ids(after))


def test_qubes_claims_without_false_native_findings(tmp_path: Path) -> None:
    """The NIC by class and the GPU by rd.qubes.hide_pci are pciback's at cmdline hook 02: no
    PB302/PB303/PB308 although nothing orders xen-pciback before e1000e or nouveau."""
    root = qubes_root(tmp_path)
    cmdline = "root=/dev/mapper/qubes_dom0-root ro rd.qubes.hide_pci=01:00.0"
    run = check(root, "--cmdline", cmdline)
    assert devices(run)[NIC]["prediction"] == "claimed"
    assert devices(run)[GPU]["prediction"] == "claimed"
    assert "90qubes-pciback" in devices(run)[GPU]["reason"]
    assert not {"PB302", "PB303", "PB308", "PB703"} & set(finding_ids(run)), finding_ids(run)


def test_wanted_device_not_selected(tmp_path: Path) -> None:
    """The GPU wanted by xen-pciback.hide= but not in rd.qubes.hide_pci: the hook leaves it to the
    rest of the boot (nothing orders xen-pciback before nouveau): PB706 with the Qubes fix."""
    root = qubes_root(tmp_path)
    for rel in ("etc/default/grub", "boot/grub2/grub.cfg"):
        text = (root / rel).read_text()
        (root / rel).write_text(
            text.replace("rd.qubes.hide_pci=0000:01:00.0,0000:01:00.1", f"xen-pciback.hide=({GPU})")
        )
    run = check(root)
    assert devices(run)[GPU]["prediction"] == "not-claimed"
    pb706 = [f for f in run.json()["findings"] if f["id"] == "PB706"]
    assert len(pb706) == 1 and GPU in pb706[0]["message"], pb706
    assert "rd.qubes.hide_pci=01:00.0" in str(pb706[0]["fixes"])


def test_dom0_usb_exception_reported(tmp_path: Path) -> None:
    root = qubes_root(tmp_path)
    run = check(
        root, "--cmdline", "root=/dev/sda1 rd.qubes.hide_all_usb rd.qubes.dom0_usb=00:14.0,0000:05:00.0"
    )
    msgs = [f["message"] for f in run.json()["findings"] if f["id"] == "PB705"]
    assert any("stays with dom0's driver" in m for m in msgs), msgs
    assert any("'0000:05:00.0' matches no device" in m for m in msgs), msgs
    assert devices(run)[NIC]["prediction"] == "claimed"  # the exception with a domain keeps nothing


def test_explain_new_ids() -> None:
    for id in ("PB703", "PB704", "PB705", "PB706", "PB707"):
        run = doctor("explain", id)
        assert run.code == 0 and id in run.out, run.out + run.err


def test_hook_recognised_by_its_name_only(tmp_path: Path) -> None:
    """A dracut image without 90qubes-pciback: no class-based claim (the NIC follows the rest of the model)."""
    root = qubes_root(tmp_path)
    img = root / "boot" / f"initramfs-{K}.img"
    shutil.copy(img, tmp_path / "with.img")
    img.write_bytes(gzip.compress(newc([file("usr/lib/dracut/modules.txt", b"base\n")])))  # type: ignore[arg-type]
    run = check(root, "--cmdline", "root=/dev/sda1", "--device", f"{NIC}=8086:10d3:020000")
    assert devices(run)[NIC]["prediction"] != "claimed"


def test_dash_as_init_shell_stops_the_boot(tmp_path: Path) -> None:
    """The hook is bash; dracut sources it in the image's /bin/sh. Without dracut's bash module
    (dash, as in the boot lab's qubes-dash) `set -o pipefail` fails and the hook dies."""
    root = qubes_root(tmp_path)
    img = root / "boot" / f"initramfs-{K}.img"
    entries = [
        file("usr/lib/dracut/modules.txt", b"base\ndash\nqubes-pciback\n"),
        file("usr/lib/dracut/hooks/cmdline/02-qubes-pciback.sh", b"# 90qubes-pciback's hook\n"),
        file(f"{MODS}/xen/xen-pciback/xen-pciback.ko", b"\x7fELF"),
        file("usr/bin/dash", b"\x7fELF"),
        symlink("usr/bin/sh", "dash"),
        symlink("bin", "usr/bin"),
    ]
    img.write_bytes(gzip.compress(newc(entries)))  # type: ignore[arg-type]
    run = check(root, "--cmdline", "root=/dev/sda1 rd.qubes.hide_pci=01:00.0")
    msgs = [f["message"] for f in run.json()["findings"] if f["id"] == "PB703"]
    assert len(msgs) == 1 and "dash" in msgs[0], msgs
    assert devices(run)[GPU]["prediction"] == "not-claimed"


@pytest.mark.parametrize(
    ("cmdline", "warned", "stops"),
    [
        # bogus dom0_usb: ignored with a warning, the USB controller is hidden after all
        ("rd.qubes.hide_all_usb rd.qubes.dom0_usb=00:14.0;", "Bogus rd.qubes.dom0_usb", False),
        # upper-case hex in hide_pci: warned at line 38, then 'Bogus PCI device list' stops the boot
        ("rd.qubes.hide_pci=01:00.0,01:00.1,0A:00.0", "Bogus rd.qubes.hide_pci", True),
    ],
)
def test_bogus_options(tmp_path: Path, cmdline: str, warned: str, stops: bool) -> None:
    run = check(qubes_root(tmp_path), "--cmdline", f"root=/dev/sda1 {cmdline}")
    found = run.json()["findings"]
    assert next(f["message"] for f in found if f["id"] == "PB707").startswith(warned), found
    assert ("PB703" in finding_ids(run)) is stops
    if not stops:
        assert devices(run)[USB]["prediction"] == "claimed"
