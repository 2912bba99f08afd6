"""PCI devices under `sys/bus/pci/devices` (links into `sys/devices/pci…/…`)."""

from __future__ import annotations

from pciback_doctor.facts.pci import Bdf, PciDevice, parse_bdf, parse_hex
from pciback_doctor.facts.root import Root

PCI_DEVICES = "sys/bus/pci/devices"


def read_pci_devices(root: Root) -> tuple[PciDevice, ...]:
    devices = []
    for name in root.listdir(PCI_DEVICES):
        bdf = parse_bdf(name)
        if bdf is None:
            continue
        rel = f"{PCI_DEVICES}/{name}"

        def attr(key: str, rel: str = rel) -> str | None:
            text = root.read_text(f"{rel}/{key}")
            return None if text is None else text.strip()

        driver_link = root.readlink(f"{rel}/driver")
        if driver_link is None:
            # a fixture may write the driver's name into a plain file instead of a link
            driver_link = attr("driver")
        override = attr("driver_override")
        devices.append(
            PciDevice(
                bdf=bdf,
                vendor=parse_hex(attr("vendor")),
                device=parse_hex(attr("device")),
                subsystem_vendor=parse_hex(attr("subsystem_vendor")),
                subsystem_device=parse_hex(attr("subsystem_device")),
                pci_class=parse_hex(attr("class")),
                modalias=attr("modalias"),
                driver=driver_link.rstrip("/").rsplit("/", 1)[-1] if driver_link else None,
                driver_override=None if override in (None, "", "(null)") else override,
                parent=_parent(root, rel),
                path=rel,
            )
        )
    return tuple(devices)


def _parent(root: Root, rel: str) -> Bdf | None:
    located = root.locate(rel)  # sys/devices/pci0000:00/0000:00:1c.0/0000:05:00.0
    if located is None:
        return None
    return parse_bdf(located.rpartition("/")[0].rpartition("/")[2])
