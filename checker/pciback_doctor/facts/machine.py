"""Which architecture a kernel was built for, from its own bytes: the ELF header of one of its
modules (e_machine, System V gABI) or the header of its image, when there is no kernel config to
ask (CONFIG_ARM64=y and friends). Pure: the first bytes of a file in, a frozen Machine out.

Image headers, each from the kernel's own boot documentation:
- arm64 `Image`: magic "ARM\\x64" at 0x38 (Documentation/arm64/booting.rst); Debian's arm64
  vmlinuz is this, uncompressed; Fedora's is the same gzip-compressed.
- riscv `Image`: magic2 "RSC\\x05" at 0x38 (Documentation/riscv/boot-image-header.rst).
- x86 `bzImage`: "HdrS" at 0x202; xloadflags (0x236, boot protocol 2.12+) bit 0 XLF_KERNEL_64
  says the kernel is 64-bit (Documentation/x86/boot.rst).
- arm `zImage`: 0x016f2818 at 0x24 (Documentation/arm/booting.rst).
- anything else with an EFI stub (arm64 EFI zboot "zimg" images among them): the PE/COFF header's
  Machine field (PE offset at 0x3c).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pciback_doctor.model import Evidence

# e_machine -> the name make's ARCH= (and so pciback_doctor/arches.py) uses
_ELF = {
    3: "i386",
    20: "powerpc",
    21: "powerpc",
    22: "s390",
    40: "arm",
    62: "x86_64",
    183: "arm64",
    243: "riscv",
}
_ELF |= {8: "mips", 258: "loongarch"}
# PE/COFF IMAGE_FILE_MACHINE_* (the EFI stub's header)
_PE = {0x014C: "i386", 0x8664: "x86_64", 0xAA64: "arm64", 0x01C2: "arm", 0x01C4: "arm", 0x5064: "riscv"}
_PE |= {0x6264: "loongarch"}
HEAD = 0x240  # enough for every header above (bzImage's xloadflags end at 0x238)


@dataclass(frozen=True)
class Machine:
    arch: str  # x86_64 | i386 | x86 | arm64 | arm | riscv | powerpc | s390 | mips | loongarch | other
    evidence: Evidence


def elf_machine(head: bytes) -> str | None:
    """The architecture an ELF file (a kernel module, a vmlinux) was built for, or None."""
    if head[:4] != b"\x7fELF" or len(head) < 20 or head[5] not in (1, 2):
        return None
    (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)
    return _ELF.get(machine, f"other (ELF machine {machine})")


def image_machine(head: bytes) -> str | None:
    """The architecture a kernel image (vmlinuz, Image, bzImage, zImage, vmlinux) was built for."""
    if head[:2] == b"\x1f\x8b":  # a gzip-compressed Image: its first bytes are enough
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, HEAD)
        except zlib.error:
            return None
    if (elf := elf_machine(head)) is not None:
        return elf
    if head[0x38:0x3C] == b"ARM\x64":
        return "arm64"
    if head[0x38:0x3C] == b"RSC\x05":
        return "riscv"
    if head[0x202:0x206] == b"HdrS":
        if len(head) < 0x238 or struct.unpack_from("<H", head, 0x206)[0] < 0x020C:
            return "x86"  # a boot protocol before xloadflags: the width is not said
        return "x86_64" if head[0x236] & 1 else "i386"
    if head[0x24:0x28] == b"\x18\x28\x6f\x01":
        return "arm"
    if head[:2] == b"MZ" and len(head) >= 0x40:
        (pe,) = struct.unpack_from("<I", head, 0x3C)
        if head[pe : pe + 4] == b"PE\0\0" and len(head) >= pe + 6:
            return _PE.get(struct.unpack_from("<H", head, pe + 4)[0])
    return None


def module_machine(head: bytes, path: str) -> Machine | None:
    """From a module file's first bytes (already decompressed)."""
    arch = elf_machine(head)
    return Machine(arch, Evidence(path, None, f"ELF machine: {arch}")) if arch else None


def kernel_image_machine(head: bytes, path: str) -> Machine | None:
    arch = image_machine(head)
    return Machine(arch, Evidence(path, None, f"kernel image for {arch}")) if arch else None
