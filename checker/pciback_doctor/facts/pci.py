"""PCI addresses and devices as sysfs shows them (sys/bus/pci/devices/*)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BDF = re.compile(r"(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])")


@dataclass(frozen=True, order=True)
class Bdf:
    domain: int
    bus: int
    slot: int
    func: int

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.func:x}"


def parse_bdf(text: str) -> Bdf | None:
    """`DDDD:BB:SS.F` or `BB:SS.F` (domain 0), as lspci and sysfs write them.

    The whole text, nothing stripped: the dracut module's `_xpb_norm` rejects a stray CR or form
    feed, so the model must too (a device it would skip is not "claimed").
    """
    m = _BDF.fullmatch(text)
    if m is None:
        return None
    bdf = Bdf(int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4)))
    return bdf if bdf.slot < 32 else None


@dataclass(frozen=True)
class PciDevice:
    bdf: Bdf
    vendor: int | None
    device: int | None
    subsystem_vendor: int | None
    subsystem_device: int | None
    pci_class: int | None  # 24-bit class code
    modalias: str | None
    driver: str | None  # currently bound driver (live systems)
    driver_override: str | None
    parent: Bdf | None  # the bridge it sits behind, if any
    path: str  # sysfs path relative to the root

    @property
    def id(self) -> str | None:
        if self.vendor is None or self.device is None:
            return None
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def is_bridge(self) -> bool:
        # PCI base class 06 (bridge), subclass 04 PCI-to-PCI or 07 CardBus.
        return self.pci_class is not None and (self.pci_class >> 8) in (0x0604, 0x0607)

    def computed_modalias(self) -> str | None:
        """The kernel's pci_uevent MODALIAS when sysfs has no modalias file (offline devices)."""
        if self.modalias:
            return self.modalias
        if self.vendor is None or self.device is None or self.pci_class is None:
            return None
        sv = 0xFFFFFFFF if self.subsystem_vendor is None else self.subsystem_vendor
        sd = 0xFFFFFFFF if self.subsystem_device is None else self.subsystem_device
        c = self.pci_class
        return (
            f"pci:v{self.vendor:08X}d{self.device:08X}sv{sv:08X}sd{sd:08X}"
            f"bc{c >> 16:02X}sc{(c >> 8) & 0xFF:02X}i{c & 0xFF:02X}"
        )


def parse_hex(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 16)
    except ValueError:
        return None


_ID_FIELDS = (("vendor id", 4), ("device id", 4), ("class code", 6))


def device_from_spec(spec: str) -> tuple[Bdf, int | None, int | None, int | None]:
    """`BDF[=VVVV:DDDD[:CCCCCC]]` from `--device`; ValueError names the field that is wrong.

    Each id is at most as wide as the config space register it stands for (vendor and device
    16 bits, class 24 bits): a wider one is a typo that would otherwise match no driver.
    """
    bdf_text, _, ids = spec.partition("=")
    bdf = parse_bdf(bdf_text.strip())
    if bdf is None:
        raise ValueError(f"'{bdf_text}' is not a PCI address ([DDDD:]BB:SS.F, slot below 0x20, function 0-7)")
    if not ids:
        return bdf, None, None, None
    parts = ids.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"'{ids}' is not VVVV:DDDD or VVVV:DDDD:CCCCCC")
    values: list[int] = []
    for part, (field, width) in zip(parts, _ID_FIELDS, strict=False):
        if not re.fullmatch(r"[0-9a-fA-F]+", part):
            raise ValueError(f"{field} '{part}' is not hexadecimal")
        if len(part) > width:
            raise ValueError(f"{field} '{part}' is wider than {width} hex digits")
        values.append(int(part, 16))
    klass = values[2] if len(values) == 3 else None
    return bdf, values[0], values[1], klass
