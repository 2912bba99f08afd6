"""A minimal x86-64 vmlinux for tests: an ELF64 whose data holds `struct pci_driver`s (list_head
zero, name, id_table, probe) and whose read-only text holds their names and pci_device_id tables,
laid out as the kernel links them (include/linux/pci.h, include/linux/mod_devicetable.h)."""

from __future__ import annotations

import struct

ANY = 0xFFFFFFFF
TEXT = 0xFFFFFFFF81000000
DATA = 0xFFFFFFFF82000000
ID_SIZE = 40  # sizeof(struct pci_device_id) since 5.14 (override_only)

# (vendor, device, subvendor, subdevice, class, class_mask)
PciId = tuple[int, int, int, int, int, int]

# the 8250_pci driver's class entries: what binds qemu's pci-serial (1b36:0002, class 0700)
SERIAL: tuple[str, list[PciId]] = ("serial", [(ANY, ANY, ANY, ANY, 0x070000, 0xFFFF00)])


def vmlinux(*drivers: tuple[str, list[PciId]], id_size: int = ID_SIZE) -> bytes:
    text = bytearray(b"\xc3" * 16)  # a probe function: ret
    tables: list[tuple[int, int]] = []
    for name, ids in drivers:
        name_at = TEXT + len(text)
        text += name.encode() + b"\0"
        text += bytes(-len(text) % 8)
        table_at = TEXT + len(text)
        for entry in [*ids, (0, 0, 0, 0, 0, 0)]:
            text += struct.pack("<6IQ", *entry, 0) + bytes(id_size - 32)
        tables.append((name_at, table_at))
    data = bytearray(64)  # something before the first driver, like .data has
    for name_at, table_at in tables:
        data += bytes(16) + struct.pack("<QQQ", name_at, table_at, TEXT) + bytes(64)
    header_size, ph_size = 64, 56
    text_off = 0x1000
    data_off = text_off + len(text) + (-(text_off + len(text)) % 0x1000)
    elf = bytearray(data_off + len(data))
    elf[:header_size] = (
        b"\x7fELF"
        + bytes([2, 1, 1])
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, TEXT, header_size, 0, 0, header_size, ph_size, 2, 64, 0, 0)
    )
    for i, (vaddr, off, blob, flags) in enumerate(((TEXT, text_off, text, 5), (DATA, data_off, data, 6))):
        elf[header_size + i * ph_size : header_size + (i + 1) * ph_size] = struct.pack(
            "<IIQQQQQQ", 1, flags, off, vaddr, vaddr - 0xFFFFFFFF80000000, len(blob), len(blob), 0x1000
        )
        elf[off : off + len(blob)] = blob
    return bytes(elf)
