"""The PCI drivers built into an arm64 kernel, read from its `Image` (what Debian installs as
boot/vmlinuz-K; Fedora's is the same gzip-compressed). facts/builtin_pci.py reads them from an ELF
vmlinux or an x86 bzImage; an arm64 Image is neither: it is `objcopy -O binary vmlinux`, no program
headers, and its pointers are not in place.

arch/arm64/Makefile links the kernel `-shared -Bsymbolic -z notext --no-apply-dynamic-relocs`: every
absolute pointer is an R_AARCH64_RELATIVE entry in .rela.dyn (Elf64_Rela: r_offset, r_info = 1027,
r_addend = the link-time address) and the place itself holds 0 until the kernel relocates itself
at boot (arch/arm64/kernel/pi/relocate.c, head.S before it). So the pointers of a static
`struct pci_driver` (name, id_table, probe: include/linux/pci.h, after a zero list_head) are the
addends of three consecutive places. A kernel built with CONFIG_RELR keeps the addends in place
instead; there the pointers are read from the Image itself.

The Image is the vmlinux from `_text` on, so file offset = address - _text; `_text` is KIMAGE_VADDR
(arch/arm64/include/asm/memory.h), 2 MiB aligned: the 2 MiB boundary below the lowest addend
(`kimage_vaddr` itself holds `_text`). Text comes before every relocated place, which keeps probe
pointers honest. Pure: bytes in, a BuiltinPciDrivers (or None when the bytes are no arm64 Image).
"""

from __future__ import annotations

import re
import struct

from pciback_doctor.facts.builtin_pci import BuiltinPciDriver, BuiltinPciDrivers
from pciback_doctor.facts.builtin_pci import _c_string as c_string
from pciback_doctor.facts.builtin_pci import _id_table as id_table
from pciback_doctor.facts.compression import decompress_bytes
from pciback_doctor.facts.limits import KERNEL_IMAGE

_MAGIC = b"ARM\x64"  # at 0x38: Documentation/arm64/booting.rst
_R_AARCH64_RELATIVE = struct.pack("<Q", 1027)
_ALIGN = 2 << 20
# driver names are C-identifier-like ("serial", "8250_pericom", "ehci-pci"); device-tree compatibles
# ("fsl,qoriq-...") and other look-alike structs are not
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# RELR kernels: a zero list_head, then three pointers in place (0xffff… on arm64)
_IN_PLACE = re.compile(rb"(?=\x00{16}(?:.{6}\xff\xff){3})", re.S)


def image_of(data: bytes) -> bytes | None:
    """The arm64 Image in `data` (gunzipped if need be), or None when it is not one."""
    if data[:2] == b"\x1f\x8b":
        out, error = decompress_bytes(data, "gzip", KERNEL_IMAGE.value)
        if error is not None and len(out) < 0x40:
            return None
        data = out
    return data if data[0x38:0x3C] == _MAGIC else None


def arm64_builtin_pci(data: bytes, path: str) -> BuiltinPciDrivers | None:
    image = image_of(data)
    if image is None:
        return None
    relocations = _relocations(image)
    found_base = min(relocations.values()) // _ALIGN * _ALIGN if relocations else _base_in_place(image)
    if found_base is None:
        return BuiltinPciDrivers(path, (), "no relocations and no kernel pointers in the arm64 Image")
    base = found_base
    if relocations:
        text_end = min(relocations)  # code needs no relocation: it lies below the first place
        # name, id_table and probe: three relocated places in a row, after a list_head that is
        # zero for real (its bytes are zero in the Image whenever they are relocated places, too)
        places = [
            p - base
            for p in relocations
            if p + 8 in relocations
            and p + 16 in relocations
            and p - 8 not in relocations
            and p - 16 not in relocations
        ]
    else:  # CONFIG_RELR: the link-time addresses are in place
        text_end = base + len(image)
        places = [m.start() + 16 for m in _IN_PLACE.finditer(image) if m.start() % 8 == 0]

    def pointer(at: int) -> int | None:
        if relocations:
            return relocations.get(base + at)
        value: int = struct.unpack_from("<Q", image, at)[0] if at + 8 <= len(image) else 0
        return value if value >> 48 == 0xFFFF else None

    def offset(addr: int | None) -> int | None:
        return addr - base if addr is not None and 0 <= addr - base < len(image) else None

    zero = bytes(16)  # the list_head, all zero until pci_register_driver() runs
    named: list[tuple[str, int]] = []  # (name, id table offset) of every pci_driver-shaped struct
    for at in sorted(places):
        probe = pointer(at + 16)
        if probe is None or not base <= probe < text_end or at < 16 or image[at - 16 : at] != zero:
            continue
        name_at, table_at = offset(pointer(at)), offset(pointer(at + 8))
        name = c_string(image, name_at) if name_at is not None and table_at is not None else None
        if name and table_at is not None and _NAME.fullmatch(name):
            named.append((name, table_at))
    best: tuple[BuiltinPciDriver, ...] = ()
    for size in (40, 32):  # sizeof(struct pci_device_id): 40 since 5.14 (override_only), 32 before
        found = [BuiltinPciDriver(name, ids) for name, at in named if (ids := id_table(image, at, size))]
        if len(found) > len(best):
            best = tuple(found)
    if not best:
        return BuiltinPciDrivers(path, (), "no struct pci_driver found in the arm64 Image")
    return BuiltinPciDrivers(path, best)


def _relocations(image: bytes) -> dict[int, int]:
    """R_AARCH64_RELATIVE entries: place -> addend (both link-time kernel addresses). .rela.dyn is
    one contiguous array of them: found by three entries in a row, read to its first other entry."""
    at = image.find(_R_AARCH64_RELATIVE)
    while at >= 0:
        if (
            at % 8 == 0
            and at >= 8
            and all(image[at + k : at + k + 8] == _R_AARCH64_RELATIVE for k in (24, 48))
        ):
            break
        at = image.find(_R_AARCH64_RELATIVE, at + 1)
    if at < 0:
        return {}
    start = at - 8
    words = memoryview(image)[start : start + (len(image) - start) // 24 * 24].cast("Q")
    infos = words[1::3].tolist()
    count = next((i for i, info in enumerate(infos) if info != 1027), len(infos))
    places, addends = words[0 : count * 3 : 3].tolist(), words[2 : count * 3 : 3].tolist()
    return {p: a for p, a in zip(places, addends, strict=True) if p >> 48 == 0xFFFF and a >> 48 == 0xFFFF}


def _base_in_place(image: bytes) -> int | None:
    """_text of a RELR kernel: the 2 MiB-aligned window of the Image's size that most of its
    in-place kernel pointers fall into (sampled: the densest window needs no exact count)."""
    count = len(image) // 8
    words = memoryview(image)[: count * 8].cast("Q")
    buckets: dict[int, int] = {}
    for value in words[::16]:
        if value >> 48 == 0xFFFF:
            buckets[value // _ALIGN] = buckets.get(value // _ALIGN, 0) + 1
    if not buckets:
        return None
    span = -(-len(image) // _ALIGN)
    best = max(buckets, key=lambda b: sum(buckets.get(b + i, 0) for i in range(span)))
    return best * _ALIGN
