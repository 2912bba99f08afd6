"""The PCI drivers built into a kernel, with their id tables, read from the vmlinux itself.

Kernels before built-in modaliases were recorded (Debian 6.1 among them) list no PCI ids for
built-in drivers in modules.builtin.modinfo, yet a built-in driver binds at its device initcall,
before any module loads — the one competitor a modular backend can never beat. The vmlinux still
holds every registered `struct pci_driver` (include/linux/pci.h) as static data:

    struct pci_driver { struct list_head node; const char *name;
                        const struct pci_device_id *id_table; int (*probe)(…); … };

`node` is all zero until pci_register_driver() runs, `name` points at a C string, `id_table` at an
array of `struct pci_device_id` (include/linux/mod_devicetable.h: vendor, device, subvendor,
subdevice, class, class_mask, driver_data, and since 5.14 override_only) ended by an entry whose
vendor, subvendor and class_mask are zero (pci_match_id's loop), and `probe` into kernel text. The
reader looks for exactly that shape in the writable data of a 64-bit vmlinux; the pointers are the
link-time addresses the ELF program headers map back to file offsets (KASLR relocates at boot,
not in the file). Pure and total: bytes in, a `BuiltinPciDrivers` out, never an exception.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

ANY_ID = 0xFFFFFFFF  # PCI_ANY_ID
_MAX_IDS = 8192  # the largest in-tree table (8250_pci's) has ~450 entries
_NAME_MAX = 64
# list_head all zero, then three kernel pointers (name, id_table, probe): 0xffff… on x86-64/arm64.
# The zeros are spelled out: a literal prefix the regex engine searches for (ten times faster than
# a lookahead tried at every byte of the data segment).
_DRIVER = re.compile(b"\x00" * 16 + rb"(?:.{4}\xff\xff\xff\xff){3}", re.S)
_PF_X, _PF_W = 1, 2


@dataclass(frozen=True)
class PciId:
    vendor: int
    device: int
    subvendor: int
    subdevice: int
    pci_class: int
    class_mask: int

    def matches(
        self, vendor: int, device: int, subvendor: int | None, subdevice: int | None, pci_class: int
    ) -> bool:
        """drivers/pci/pci-driver.c pci_match_one_device."""
        return (
            self.vendor in (ANY_ID, vendor)
            and self.device in (ANY_ID, device)
            and (self.subvendor == ANY_ID or self.subvendor == subvendor)
            and (self.subdevice == ANY_ID or self.subdevice == subdevice)
            and not ((self.pci_class ^ pci_class) & self.class_mask)
        )

    def __str__(self) -> str:
        def part(v: int) -> str:
            return "*" if v == ANY_ID else f"{v:04x}"

        text = f"{part(self.vendor)}:{part(self.device)}"
        if (self.subvendor, self.subdevice) != (ANY_ID, ANY_ID):
            text += f" sub {part(self.subvendor)}:{part(self.subdevice)}"
        if self.class_mask:
            text += f" class {self.pci_class:06x}/{self.class_mask:06x}"
        return text


@dataclass(frozen=True)
class BuiltinPciDriver:
    name: str  # the PCI driver's name (what /sys/bus/pci/drivers/ shows), e.g. `serial`
    ids: tuple[PciId, ...]


@dataclass(frozen=True)
class BuiltinPciDrivers:
    path: str
    drivers: tuple[BuiltinPciDriver, ...]
    error: str | None = None  # why the tables could not be read (then `drivers` proves nothing)

    def match(
        self,
        vendor: int,
        device: int,
        subvendor: int | None,
        subdevice: int | None,
        pci_class: int,
        exclude: str | None = None,
    ) -> tuple[BuiltinPciDriver, PciId] | None:
        """The built-in driver that would bind first: drivers register in link order, and the
        first whose table matches probes the device (bus_add_driver → driver_attach)."""
        for driver in self.drivers:
            if driver.name == exclude:
                continue
            for pid in driver.ids:
                if pid.matches(vendor, device, subvendor, subdevice, pci_class):
                    return driver, pid
        return None


@dataclass(frozen=True)
class _Segment:
    vaddr: int
    offset: int
    size: int
    flags: int


def read_builtin_pci_drivers(
    vmlinux: bytes | bytearray, path: str, id_size: int | None = None
) -> BuiltinPciDrivers:
    """`id_size` is sizeof(struct pci_device_id): 40 since 5.14 (override_only), 32 before; None
    tries both and keeps the layout that finds drivers."""
    try:
        segments = _segments(vmlinux)
    except (ValueError, struct.error) as exc:
        return BuiltinPciDrivers(path, (), f"not a 64-bit vmlinux ELF: {exc}")
    if not segments:
        return BuiltinPciDrivers(path, (), "no loadable segments in the vmlinux")
    candidates = _candidates(vmlinux, segments)  # the one scan of the data
    best: tuple[BuiltinPciDriver, ...] = ()
    for size in (id_size,) if id_size else (40, 32):  # a few dozen tables read twice, not the data
        found = _drivers(vmlinux, candidates, size)
        if len(found) > len(best):
            best = found
    if not best:
        return BuiltinPciDrivers(path, (), "no struct pci_driver found in the vmlinux data")
    return BuiltinPciDrivers(path, best)


def _segments(data: bytes | bytearray) -> list[_Segment]:
    """PT_LOAD program headers of a little-endian ELF64 (x86-64, arm64)."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise ValueError("no ELF header")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not ELF64 little-endian")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phentsize < 56 or phnum > 64:
        raise ValueError("implausible program headers")
    out = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1 and p_vaddr and p_offset + p_filesz <= len(data):  # PT_LOAD, not percpu
            out.append(_Segment(p_vaddr, p_offset, p_filesz, p_flags))
    return out


def _candidates(data: bytes | bytearray, segments: list[_Segment]) -> list[tuple[str, int]]:
    """(name, file offset of its id table) of every struct that looks like a registered-to-be
    `struct pci_driver`, in link order."""

    def offset_of(addr: int) -> int | None:
        for s in segments:
            if s.vaddr <= addr < s.vaddr + s.size:
                return s.offset + (addr - s.vaddr)
        return None

    text = [(s.vaddr, s.vaddr + s.size) for s in segments if s.flags & _PF_X]
    found: list[tuple[str, int]] = []
    # static pci_driver structs live in .data (writable, not executable); init/bss segments are RWX
    for seg in (s for s in segments if s.flags & _PF_W and not s.flags & _PF_X):
        pos, end = seg.offset, seg.offset + seg.size
        while (m := _DRIVER.search(data, pos, end)) is not None:
            at = pos = m.start()
            pos += 1  # candidates may overlap (a run of zeros): each start is tried
            if (at - seg.offset) % 8:
                continue
            name_p, table_p, probe_p = struct.unpack_from("<QQQ", data, at + 16)
            if not any(lo <= probe_p < hi for lo, hi in text):
                continue
            name_at, table_at = offset_of(name_p), offset_of(table_p)
            if name_at is None or table_at is None:
                continue
            if name := _c_string(data, name_at):
                found.append((name, table_at))
    return found


def _drivers(
    data: bytes | bytearray, candidates: list[tuple[str, int]], id_size: int
) -> tuple[BuiltinPciDriver, ...]:
    found: list[BuiltinPciDriver] = []
    for name, table_at in candidates:
        if ids := _id_table(data, table_at, id_size):
            found.append(BuiltinPciDriver(name, ids))
    return tuple(found)


def _c_string(data: bytes | bytearray, at: int) -> str | None:
    end = data.find(b"\0", at, at + _NAME_MAX)
    if end <= at:
        return None
    raw = data[at:end]
    return raw.decode("ascii") if all(0x20 < c < 0x7F for c in raw) else None


def _id_table(data: bytes | bytearray, at: int, size: int) -> tuple[PciId, ...] | None:
    ids: list[PciId] = []
    for i in range(_MAX_IDS):
        start = at + i * size
        if start + size > len(data):
            return None
        vendor, device, subvendor, subdevice, pci_class, mask = struct.unpack_from("<6I", data, start)
        if vendor == 0 and subvendor == 0 and mask == 0:  # the terminating entry
            return tuple(ids) or None
        if any(v != ANY_ID and v > 0xFFFF for v in (vendor, device, subvendor, subdevice)):
            return None
        if pci_class > 0xFFFFFF:
            return None
        if size >= 40:
            override_only, pad = struct.unpack_from("<II", data, start + 32)
            if override_only > 1 or pad:
                return None
            if override_only:  # matches only through driver_override: never by itself
                continue
        ids.append(PciId(vendor, device, subvendor, subdevice, pci_class, mask))
    return None
