"""Fuzzing tier: every reader in facts/ on arbitrary bytes and on mutations of realistic inputs.

Each reader either returns facts or raises the error type it documents (ConfigError, ModinfoError,
WaiverError, ValueError for `--device`); nothing else, and within a few seconds. The example counts
are fixed and the search derandomized, so CI runs the same inputs every time; every crash found
is kept below as an explicit `@example` next to its fix.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from seeds import (
    FIXTURES,
    HUGE_OFFSET,
    IMAGES,
    MODINFO,
    MODULES,
    finishes,
    fixture_files,
    fuzz,
    inputs,
    kernels,
    text,
)

from pciback_doctor.facts.bootloader import find_next_boot
from pciback_doctor.facts.cmdline import parse_cmdline
from pciback_doctor.facts.domu import from_config_bytes, from_image
from pciback_doctor.facts.dracutconf import parse_dracut_conf
from pciback_doctor.facts.hide import parse_hide
from pciback_doctor.facts.image import image_facts, needed_files, parse_device_list, wanted_file
from pciback_doctor.facts.initramfs import read_initramfs
from pciback_doctor.facts.kconfig import ConfigError, decode_config, parse_config
from pciback_doctor.facts.kimage import inspect_kernel_image, kallsyms_names
from pciback_doctor.facts.modprobe import parse_modprobe_file
from pciback_doctor.facts.modules import (
    ModinfoError,
    parse_alias_file,
    parse_builtin,
    parse_builtin_modinfo,
    parse_dep,
    read_modinfo,
)
from pciback_doctor.facts.pci import device_from_spec, parse_bdf
from pciback_doctor.facts.root import Root
from pciback_doctor.facts.services import backend_loaders, late_bindings, parse_unit
from pciback_doctor.facts.sysfs import read_pci_devices
from pciback_doctor.facts.waivers import WaiverError, parse_waivers
from pciback_doctor.facts.xl import parse_xl

pytestmark = pytest.mark.fuzz

# --- kernel config, module files, modinfo ------------------------------------------------------

CONFIGS = [*fixture_files("*/boot/config-*")[:1], b"CONFIG_XEN=y\n# CONFIG_XEN_PCIDEV_BACKEND is not set\n"]


@fuzz(600)
@given(inputs(CONFIGS))
def test_kconfig(data: bytes) -> None:
    with finishes(), contextlib.suppress(ConfigError):
        config = parse_config(decode_config(data), "config")
        config.get("CONFIG_XEN_PCIDEV_BACKEND")


MODULE_TEXT = [
    *fixture_files("module-modprobe-options/lib/modules/*/modules.dep"),
    *fixture_files("module-modprobe-options/lib/modules/*/modules.builtin"),
    b"alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\nalias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci\n",
]


@fuzz(600)
@given(text(MODULE_TEXT))
def test_module_index_files(data: str) -> None:
    with finishes():
        parse_dep(data)
        parse_builtin(data, "modules.builtin")
        for alias in parse_alias_file(data, "modules.alias"):
            alias.matches("pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00")


@fuzz(400)
@given(inputs([MODINFO, b"e1000e.alias=pci:v*d*\0xen-pciback.parmtype=hide:charp\0"]))
def test_builtin_modinfo(data: bytes) -> None:
    with finishes():
        parse_builtin_modinfo(data, "modules.builtin.modinfo")


@fuzz(600)
@given(inputs(MODULES))
@example(HUGE_OFFSET)
def test_modinfo(data: bytes) -> None:
    with finishes(), contextlib.suppress(ModinfoError):
        read_modinfo(data, "xen-pciback.ko")


# --- modprobe.d, command lines, hide values, the dracut module's list ---------------------------

MODPROBE = [
    *fixture_files("*/etc/modprobe.d/*.conf"),
    b"softdep e1000e pre: xen-pciback\ninstall xen-pciback /sbin/modprobe --ignore-install xen-pciback $CMDLINE_OPTS\n"
    b"options xen-pciback \\\n  hide=(0000:05:00.0)(0000:06:00.*) permissive=1\nblacklist e1000e\n",
]


@fuzz(600)
@given(text(MODPROBE))
def test_modprobe(data: str) -> None:
    with finishes():
        config = parse_modprobe_file(data, "etc/modprobe.d/x.conf")
        config.options("xen-pciback")
        config.install("xen_pciback")
        config.softdep("e1000e")
        config.is_blacklisted("e1000e")


CMDLINES = [
    *fixture_files("*/proc/cmdline"),
    b'BOOT_IMAGE=/vmlinuz ro quiet xen-pciback.hide=(0000:05:00.0) rd.xen_pciback.hide=05:00.0 "a b=c d"',
]


@fuzz(600)
@given(text(CMDLINES))
def test_cmdline_and_hide(data: str) -> None:
    with finishes():
        cmd = parse_cmdline(data, "proc/cmdline")
        for p in cmd.params:
            if p.value is not None:
                parse_hide(p.value)
        parse_hide(data)


@fuzz(400)
@given(text([b"# NIC\n0000:05:00.0\n05:00.1 # x\n"]))
def test_device_list_and_bdf(data: str) -> None:
    with finishes():
        for entry, _ in parse_device_list(data, "etc/xen-pciback.conf"):
            parse_bdf(entry)
        with contextlib.suppress(ValueError):
            device_from_spec(data)


# --- initramfs images ----------------------------------------------------------------------------


@fuzz(600)
@given(inputs(IMAGES))
def test_initramfs_and_image_facts(data: bytes) -> None:
    with finishes():
        raw = read_initramfs(io.BytesIO(data), wanted_file, needed_files)
        image_facts(raw, "initrd.img")
        raw.listdir("lib/modprobe.d")
        raw.read("etc/modprobe.d/x.conf")


# --- kernel images ------------------------------------------------------------------------------

KERNELS = [*kernels(), *MODULES, b"MZ" + b"\0" * 0x200 + b"HdrS", *CONFIGS]


@fuzz(400)
@given(inputs(KERNELS))
def test_kernel_images(data: bytes) -> None:
    with finishes():
        inspect_kernel_image(data, "vmlinuz")
        kallsyms_names(data)
        from_image(data, "vmlinuz")
        from_config_bytes(data, "config")


# --- xl, waivers, dracut.conf, services --------------------------------------------------------

XL = [
    b'name = "guest"\npci = [ "0000:05:00.0,permissive=1", "06:00.*,seize=1" ]\nkernel = "/boot/vmlinuz"\n'
    b"memory = 1024\nvcpus = 2\nextra = 'console=hvc0'\npci_permissive = 1 # c\n",
]


@fuzz(600)
@given(text(XL))
def test_xl(data: str) -> None:
    with finishes():
        parse_xl(data, "etc/xen/guest.cfg")


WAIVERS = [
    b'[[waiver]]\nid = "PB305"\ndevice = "0000:05:00.0"\njustification = "lab box"\nexpires = 2027-01-31\n'
    b'[[waiver]]\nid = "PB1"\npath = "etc/modprobe.d/x.conf"\njustification = "known"\n',
]


@fuzz(600)
@given(text(WAIVERS))
def test_waivers(data: str) -> None:
    with finishes(), contextlib.suppress(WaiverError):
        parse_waivers(data, "waivers.toml")


DRACUT_CONF = [
    b'add_dracutmodules+=" xen-pciback "\nforce_drivers+="xen-pciback"\nomit_drivers+=" e1000e "\n'
]
UNITS = [
    b"[Unit]\nDescription=bind\nBefore=xen-domains.service xendomains.service\n[Service]\nType=oneshot\n"
    b"ExecStart=/bin/sh -c 'echo 0000:05:00.0 > /sys/bus/pci/drivers/pciback/new_slot'\n"
    b"[Install]\nWantedBy=multi-user.target\n",
    b"#!/bin/sh\nmodprobe xen-pciback\nxl pci-assignable-add 05:00.0\nBDF=0000:06:00.0\n"
    b"echo $BDF > /sys/bus/pci/drivers/pciback/bind\n",
]


@fuzz(600)
@given(text(DRACUT_CONF + UNITS))
def test_dracut_conf_and_services(data: str) -> None:
    with finishes():
        parse_dracut_conf(data, "etc/dracut.conf.d/x.conf")
        parse_unit("etc/systemd/system/x.service", data, ("xendomains.service", "xapi-domains.service"))
        backend_loaders("modules-load", "etc/modules-load.d/x.conf", data)
        backend_loaders("xencommons", "etc/default/xencommons", data)
        late_bindings("usr/local/bin/bind", data, True)


# --- whole trees: bootloaders and sysfs ---------------------------------------------------------

BOOT_FILES = [
    ("boot-debian-grub-xen", "boot/grub/grub.cfg"),
    ("boot-debian-grub-xen", "boot/grub/grubenv"),
    ("boot-debian-grub-xen", "etc/default/grub"),
    ("boot-debian-grub-xen", "etc/default/grub.d/xen.cfg"),
    ("boot-stale-grub", "etc/default/grub"),
    ("boot-fedora-bls", "boot/grub2/grub.cfg"),
    ("boot-fedora-bls", "boot/loader/entries/8d3f0a6c5e4b4f2a9c1d7e6b5a4f3c2d-6.5.12-300.fc39.x86_64.conf"),
    ("boot-efi-xen-cfg", "boot/efi/EFI/xen/xen.cfg"),
    ("xcpng-8.3-malformed-hide", "boot/efi/EFI/xenserver/grub.cfg"),
]


@st.composite
def boot_tree(draw: st.DrawFn) -> tuple[str, str, bytes]:
    fixture, rel = draw(st.sampled_from(BOOT_FILES))
    return fixture, rel, draw(inputs([(FIXTURES / fixture / rel).read_bytes()]))


@fuzz(400)
@given(boot_tree())
def test_bootloaders(case: tuple[str, str, bytes]) -> None:
    fixture, rel, data = case
    with tempfile.TemporaryDirectory() as tmp, finishes():
        root = Path(tmp) / "root"
        shutil.copytree(FIXTURES / fixture, root, ignore=shutil.ignore_patterns("sys", "README.md"))
        (root / rel).write_bytes(data)
        find_next_boot(Root(root))


SYSFS_ATTRS = ["vendor", "device", "class", "modalias", "driver_override", "subsystem_vendor"]


@fuzz(200)
@given(
    st.dictionaries(
        st.sampled_from(SYSFS_ATTRS), inputs([b"0x8086\n", b"0x020000\n", b"(null)\n"]), max_size=4
    )
)
@example({"vendor": b"0x" + b"f" * 64 + b"\n", "driver_override": b"\x00\xff"})
def test_sysfs(attrs: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp, finishes():
        device = Path(tmp) / "sys/devices/pci0000:00/0000:00:01.0/0000:05:00.0"
        device.mkdir(parents=True)
        for name, data in attrs.items():
            (device / name).write_bytes(data)
        (Path(tmp) / "sys/bus/pci/devices").mkdir(parents=True)
        (Path(tmp) / "sys/bus/pci/devices/0000:05:00.0").symlink_to(device)
        read_pci_devices(Root(Path(tmp)))
