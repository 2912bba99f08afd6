"""A small cpio "newc" writer for tests: images are built by test code, never committed.

Follows usr/gen_init_cpio.c: 110-byte header of 13 eight-digit hex fields, header + name padded to
4 bytes, data padded to 4 bytes, `TRAILER!!!` last.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CpioEntry:
    name: str
    data: bytes = b""
    mode: int = stat.S_IFREG | 0o644
    nlink: int = 1
    ino: int = 0  # 0: a fresh inode number
    name_padding: int = 0  # extra NULs in the name, as dracut writes them


def file(name: str, data: bytes = b"") -> CpioEntry:
    return CpioEntry(name, data)


def directory(name: str) -> CpioEntry:
    return CpioEntry(name, mode=stat.S_IFDIR | 0o755, nlink=2)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, target.encode(), mode=stat.S_IFLNK | 0o777)


def header(name_size: int, *, ino: int, mode: int, nlink: int, size: int, magic: bytes = b"070701") -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0)
    return magic + b"".join(b"%08X" % value for value in fields)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def newc(entries: Iterable[CpioEntry], *, magic: bytes = b"070701", trailer: bool = True) -> bytes:
    out = bytearray()
    for number, entry in enumerate(entries, 1):
        name = entry.name.encode() + b"\0" * (1 + entry.name_padding)
        out += _pad(
            header(
                len(name),
                ino=entry.ino or number,
                mode=entry.mode,
                nlink=entry.nlink,
                size=len(entry.data),
                magic=magic,
            )
            + name
        )
        out += _pad(entry.data)
    if trailer:
        out += _pad(header(11, ino=0, mode=0, nlink=1, size=0, magic=magic) + b"TRAILER!!!\0")
    return bytes(out)
