"""The kernel's architecture from its own bytes (facts/machine.py): module ELF headers and kernel
image headers, as the kernel's boot documentation lays them out."""

from __future__ import annotations

import gzip
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.machine import elf_machine, image_machine


def elf(machine: int, *, big: bool = False, wide: bool = True) -> bytes:
    """An ELF header: e_ident, e_type ET_REL (a module), e_machine."""
    ident = b"\x7fELF" + bytes([2 if wide else 1, 2 if big else 1, 1]) + bytes(9)
    return ident + struct.pack(">HH" if big else "<HH", 1, machine) + bytes(44)


def at(size: int, *pieces: tuple[int, bytes]) -> bytes:
    out = bytearray(size)
    for offset, data in pieces:
        out[offset : offset + len(data)] = data
    return bytes(out)


ARM64_IMAGE = at(0x40, (0, b"MZ"), (0x38, b"ARM\x64"))  # Debian's arm64 vmlinuz starts so
RISCV_IMAGE = at(0x40, (0x30, b"RISCV\0\0\0"), (0x38, b"RSC\x05"))
ARM_ZIMAGE = at(0x30, (0x24, struct.pack("<I", 0x016F2818)))


def bzimage(version: int, xloadflags: int) -> bytes:
    return at(
        0x240,
        (0x1FE, b"\x55\xaa"),
        (0x202, b"HdrS"),
        (0x206, struct.pack("<H", version)),
        (0x236, bytes([xloadflags])),
    )


def efi_zboot(machine: int) -> bytes:
    """arm64's EFI zboot image: MZ, "zimg" at 4, the PE header's Machine field (no Image magic)."""
    return at(
        0x100,
        (0, b"MZ"),
        (4, b"zimg"),
        (0x3C, struct.pack("<I", 0x80)),
        (0x80, b"PE\0\0"),
        (0x84, struct.pack("<H", machine)),
    )


@pytest.mark.parametrize(
    ("head", "arch"),
    [
        (elf(183), "arm64"),  # EM_AARCH64: an arm64 module
        (elf(62), "x86_64"),  # EM_X86_64
        (elf(3, wide=False), "i386"),
        (elf(40, wide=False), "arm"),
        (elf(243), "riscv"),
        (elf(22, big=True), "s390"),  # big-endian e_machine
        (elf(0x1234), "other (ELF machine 4660)"),
        (ARM64_IMAGE, "arm64"),
        (gzip.compress(ARM64_IMAGE + bytes(4096)), "arm64"),  # Fedora's arm64 vmlinuz: a gzipped Image
        (RISCV_IMAGE, "riscv"),
        (ARM_ZIMAGE, "arm"),
        (bzimage(0x020F, 0x01), "x86_64"),  # XLF_KERNEL_64
        (bzimage(0x020F, 0x00), "i386"),
        (bzimage(0x020A, 0x01), "x86"),  # before boot protocol 2.12 there are no xloadflags
        (efi_zboot(0xAA64), "arm64"),
        (efi_zboot(0x8664), "x86_64"),
        (b"", None),
        (b"\x7fELF", None),  # truncated: no e_machine
        (b"\x1f\x8b\x08garbage", None),  # a broken gzip stream
        (b"#!/bin/sh\n", None),
    ],
)
def test_image_machine(head: bytes, arch: str | None) -> None:
    assert image_machine(head) == arch


def test_only_elf_is_a_module() -> None:
    assert elf_machine(elf(183)) == "arm64"
    assert elf_machine(ARM64_IMAGE) is None


@given(st.binary(max_size=0x300))
def test_never_raises(data: bytes) -> None:
    image_machine(data)
    image_machine(b"MZ" + data)
    image_machine(gzip.compress(data))
