"""Built-in PCI drivers read from an arm64 Image (facts/arm64_image.py): the pointers of a static
struct pci_driver are R_AARCH64_RELATIVE addends (the kernel links with --no-apply-dynamic-relocs),
or in place on a CONFIG_RELR kernel. The images here are laid out as the kernel's are: text, then
read-only data (names, id tables), then data (the driver structs), then .rela.dyn."""

from __future__ import annotations

import gzip
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.arm64_image import arm64_builtin_pci

BASE = 0xFFFF800008000000  # KIMAGE_VADDR of a 48-bit-VA 6.1 kernel: _text
TEXT, RODATA, DATA, RELA, END = 0x10000, 0x20000, 0x30000, 0x40000, 0x50000
ANY = 0xFFFFFFFF


def image(
    drivers: list[tuple[str, list[tuple[int, int]], int]],
    *,
    relr: bool = False,
    gz: bool = False,
    linked: frozenset[str] = frozenset(),
) -> bytes:
    """`drivers`: (name, [(vendor, device)], probe offset). Each gets a name and an id table in
    rodata and a pci_driver {zero list_head, name, id_table, probe} in data; those in `linked` get
    a list_head of two pointers instead (relocated places: zero bytes in the Image all the same)."""
    out = bytearray(END)
    out[0:2] = b"MZ"
    struct.pack_into("<Q", out, 16, END)  # image_size
    out[0x38:0x3C] = b"ARM\x64"
    # kimage_vaddr = _text, and read-only data starts with a const table of code pointers: the
    # first relocated place, where text has ended
    relocs = [(BASE + DATA - 8, BASE), (BASE + RODATA, BASE + TEXT)]
    if relr:
        struct.pack_into("<Q", out, RODATA, BASE + TEXT)
    ro, data = RODATA + 8, DATA
    for name, ids, probe in drivers:
        name_at = ro
        out[ro : ro + len(name)] = name.encode()
        ro += (len(name) + 8) // 8 * 8
        table_at = ro
        for vendor, device in ids:
            struct.pack_into("<6I", out, ro, vendor, device, ANY, ANY, 0, 0)
            ro += 40
        ro += 40  # the terminating all-zero entry
        if name in linked:
            relocs += [(BASE + data, BASE + DATA), (BASE + data + 8, BASE + DATA)]
        data += 16  # the list_head
        for value in (name_at, table_at, probe):
            relocs.append((BASE + data, BASE + value))
            if relr:
                struct.pack_into("<Q", out, data, BASE + value)
            data += 8
        data += 64  # remove, suspend, ...: left zero
    if not relr:
        at = RELA
        for place, addend in relocs:
            struct.pack_into("<QQQ", out, at, place, 1027, addend)
            at += 24
    else:  # what an Image also holds: more kernel pointers in place, for the base to be found
        for i in range(64):
            struct.pack_into("<Q", out, RELA + 8 * i, BASE + TEXT + 4 * i)
    return gzip.compress(bytes(out)) if gz else bytes(out)


SERIAL = ("serial", [(0x1415, 0xC158), (0x8086, ANY)], TEXT + 0x100)


@pytest.mark.parametrize("relr", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_finds_the_driver_and_its_ids(relr: bool, gz: bool) -> None:
    found = arm64_builtin_pci(
        image([SERIAL, ("ehci-pci", [(0x8086, 0x1C26)], TEXT + 0x200)], relr=relr, gz=gz), "vmlinuz"
    )
    assert found is not None and found.error is None
    assert [(d.name, [(i.vendor, i.device) for i in d.ids]) for d in found.drivers] == [
        ("serial", [(0x1415, 0xC158), (0x8086, ANY)]),
        ("ehci-pci", [(0x8086, 0x1C26)]),
    ]


@pytest.mark.parametrize(
    "impostor",
    [
        ("fsl,qoriq-device-config-1.0", [(2, 0x8000)], TEXT + 0x100),  # a device-tree compatible
        ("local", [(2, 0x8000)], RODATA + 0x800),  # its "probe" is no code: past the text
    ],
)
def test_lookalikes_are_not_drivers(impostor: tuple[str, list[tuple[int, int]], int]) -> None:
    found = arm64_builtin_pci(image([SERIAL, impostor]), "vmlinuz")
    assert found is not None
    assert [d.name for d in found.drivers] == ["serial"]


def test_a_struct_on_a_list_is_no_static_driver() -> None:
    """Real Debian arm64 Image: a struct shaped like pci_driver (name "local", code pointer) whose
    first 16 bytes are relocated pointers, zero in the file only because RELA places are."""
    found = arm64_builtin_pci(
        image([SERIAL, ("local", [(2, 0x8000)], TEXT + 0x300)], linked=frozenset({"local"})), "x"
    )
    assert found is not None
    assert [d.name for d in found.drivers] == ["serial"]


def test_no_driver_is_said() -> None:
    found = arm64_builtin_pci(image([]), "vmlinuz")
    assert found is not None and found.drivers == () and found.error


@pytest.mark.parametrize(
    "data", [b"", b"MZ" + bytes(100), b"\x7fELF" + bytes(100), gzip.compress(b"not an image" * 10)]
)
def test_not_an_arm64_image(data: bytes) -> None:
    assert arm64_builtin_pci(data, "x") is None


@given(st.binary(max_size=0x200))
def test_never_raises(tail: bytes) -> None:
    head = bytearray(0x40)
    head[0x38:0x3C] = b"ARM\x64"
    arm64_builtin_pci(bytes(head) + tail, "x")
    arm64_builtin_pci(bytes(head) + struct.pack("<QQQ", BASE, 1027, BASE) * 3 + tail, "x")
