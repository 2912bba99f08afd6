"""The built-in PCI drivers of Debian's real dom0 kernel, read from its bzImage, against the
id tables in the driver sources of the same release (Debian's linux-source package)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

import debian
from pciback_doctor.facts.builtin_pci import ANY_ID, BuiltinPciDrivers, read_builtin_pci_drivers
from pciback_doctor.facts.kimage import vmlinux_of

pytestmark = pytest.mark.realworld

# driver name → (source file, table name): drivers whose tables use plain macros we can expand
SOURCES = {
    "xen-platform-pci": ("drivers/xen/platform-pci.c", "platform_pci_tbl"),
    "8250_pericom": ("drivers/tty/serial/8250/8250_pericom.c", "pericom8250_pci_ids"),
    "8250_mid": ("drivers/tty/serial/8250/8250_mid.c", "pci_ids"),
    "iosf_mbi_pci": ("arch/x86/platform/intel/iosf_mbi.c", "iosf_mbi_pci_ids"),
}
PCI_IDS = "include/linux/pci_ids.h"


@pytest.fixture(scope="module")
def tables(amd64) -> BuiltinPciDrivers:  # type: ignore[no-untyped-def]
    image = (amd64.root / "boot" / f"vmlinuz-{amd64.release}").read_bytes()
    start = time.monotonic()
    vmlinux, error = vmlinux_of(image)
    assert vmlinux is not None, error
    found = read_builtin_pci_drivers(vmlinux, "vmlinuz")
    print(f"built-in PCI tables read in {time.monotonic() - start:.2f} s")
    return found


def test_debian_kernel_built_in_pci_drivers(tables: BuiltinPciDrivers) -> None:
    names = {d.name for d in tables.drivers}
    ids = sum(len(d.ids) for d in tables.drivers)
    print(f"{len(names)} built-in PCI drivers, {ids} ids: {sorted(names)}")
    # Debian builds 8250_pci (`serial`), the PCIe port driver and the Xen platform device in
    assert {"serial", "pcieport", "shpchp", "xen-platform-pci"} <= names
    # ... and the usual passthrough devices' drivers as modules
    assert not names & {"e1000e", "xhci_hcd", "ahci", "nvme", "igb", "ehci-pci"}
    serial = tables.match(0x1B36, 0x0002, 0x1AF4, 0x1100, 0x070002)  # qemu's pci-serial
    assert serial is not None and serial[0].name == "serial"
    assert tables.match(0x8086, 0x10D3, 0x8086, 0x0000, 0x020000) is None  # qemu's e1000e


def _source_files() -> Path:
    """The few driver sources the comparison reads, from Debian's linux-source package (cached)."""
    deb = debian.fetch_deb("linux-source-6.1")
    out = debian.cache_dir() / "trees" / f"{deb.stem}-pci-tables"
    if not (out / ".extracted").exists():
        out.mkdir(parents=True, exist_ok=True)
        top = "linux-source-6.1"
        wanted = [f"{top}/{p}" for p, _ in SOURCES.values()] + [f"{top}/{PCI_IDS}"]
        tarball = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
        ).stdout
        inner = subprocess.run(
            ["tar", "-xO", "./usr/src/linux-source-6.1.tar.xz"],
            input=tarball,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            ["tar", "-xJ", "-C", str(out), "--strip-components=1", *wanted], input=inner, check=True
        )
        (out / ".extracted").touch()
    return out


def _defines(text: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2), 0)
        for m in re.finditer(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)
    }


def _source_ids(text: str, table: str, defines: dict[str, int]) -> set[tuple[int, int]]:
    """(vendor, device) of every entry of `table`, expanding the pci.h macros the drivers use."""
    body = re.search(rf"pci_device_id\s+{table}\[\]\s*=\s*\{{(.*?)\n\}};", text, re.S)
    assert body is not None, table
    found: set[tuple[int, int]] = set()

    def value(token: str) -> int:
        token = token.strip()
        return int(token, 0) if token[:1].isdigit() else defines[token]

    for m in re.finditer(r"PCI_(VDEVICE|DEVICE_DATA|DEVICE)\(\s*(\w+)\s*,\s*(\w+)", body.group(1)):
        kind, vendor, device = m.groups()
        if kind == "DEVICE":
            found.add((value(vendor), value(device)))
        elif kind == "VDEVICE":
            found.add((defines[f"PCI_VENDOR_ID_{vendor}"], value(device)))
        else:
            found.add((defines[f"PCI_VENDOR_ID_{vendor}"], defines[f"PCI_DEVICE_ID_{vendor}_{device}"]))
    for m in re.finditer(r"\{\s*(PCI_VENDOR_ID_\w+|0x[0-9a-fA-F]+)\s*,\s*(\w+)\s*,", body.group(1)):
        found.add((value(m.group(1)), value(m.group(2))))
    return found


@pytest.mark.parametrize("driver", list(SOURCES))
def test_extracted_tables_equal_the_driver_sources(tables: BuiltinPciDrivers, driver: str) -> None:
    src = _source_files()
    common = _defines((src / PCI_IDS).read_text())
    path, table = SOURCES[driver]
    text = (src / path).read_text()
    expected = _source_ids(text, table, {**common, **_defines(text)})
    got = next(d for d in tables.drivers if d.name == driver)
    extracted = {(i.vendor, i.device) for i in got.ids if i.vendor != ANY_ID}
    assert expected and extracted == expected, (driver, sorted(expected ^ extracted))
