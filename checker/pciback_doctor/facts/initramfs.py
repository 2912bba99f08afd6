"""initramfs images: cpio "newc" archives, plain or compressed, one after another, maybe in a UKI.

Read the way the kernel unpacks them (init/initramfs.c `unpack_to_rootfs`): NULs between archives
are skipped, a cpio archive starts only at a 4-byte aligned offset, anything else must be a
compressed stream whose magic the kernel knows (lib/decompress.c), and a compressed stream must end
on an archive boundary. The image is streamed: the data of files nobody asked for is decompressed
and dropped in bounded chunks, so memory stays flat however large the image is. Bad bytes never raise:
the result carries a one-line `error` and everything read before it.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from types import MappingProxyType
from typing import BinaryIO

from pciback_doctor.facts.compression import (
    CHUNK,
    DECODERS,
    ByteSource,
    Corrupt,
    RawStream,
    compression_of,
)
from pciback_doctor.facts.limits import (
    IMAGE_ENTRIES,
    IMAGE_KEPT,
    IMAGE_OUTPUT,
    IMAGE_RATIO,
    IMAGE_RATIO_FLOOR,
    IMAGE_WANTED_FILE,
)
from pciback_doctor.facts.root import open_regular

_PATH_MAX = 4096  # the kernel refuses longer cpio names and symlink bodies
_HEX = re.compile(rb"[0-9A-Fa-f]{104}")


@dataclass(frozen=True, slots=True)  # slots: up to IMAGE_ENTRIES of them are kept
class Entry:
    name: str  # relative: no leading "./" or "/"; the root directory is "."
    mode: int
    size: int  # for hard links: the size of the data the whole link group shares
    nlink: int
    link_target: str | None  # symlinks only
    archive: int  # index into Initramfs.archives
    compression: str

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class Archive:
    offset: int  # image offset of the cpio header, or of the compressed stream holding it
    compression: str  # "none", "gzip", "zstd", "xz", "lzma", "bzip2", "lz4", "lzo"


_MODULE = re.compile(r"(?:usr/)?lib/modules/[^/]+/.+/([^/]+)\.ko(?:\.xz|\.gz|\.zst)?")
_RELEASE = re.compile(r"(?:usr/)?lib/modules/([^/]+)(?:/|$)")


@dataclass(frozen=True)
class Initramfs:
    entries: tuple[Entry, ...]
    files: Mapping[str, bytes]  # data of the wanted regular files (and their hard links)
    archives: tuple[Archive, ...]
    error: str | None = None

    def kernel_releases(self) -> tuple[str, ...]:
        return tuple(sorted({m[1] for e in self.entries if (m := _RELEASE.match(e.name))}))

    def modules(self) -> frozenset[str]:
        """Module names (`-` → `_`, as kmod compares them) of the `.ko*` files under lib/modules."""
        return frozenset(
            m[1].replace("-", "_") for e in self.entries if not e.is_dir and (m := _MODULE.fullmatch(e.name))
        )

    def generator(self) -> str:
        """Which tool built the image, from the files only that tool puts there."""
        names = {e.name for e in self.entries}
        # dracut installs its hook tree and modules.txt under (usr/)lib/dracut (dracut.sh).
        if any(n.startswith(("usr/lib/dracut/", "lib/dracut/")) for n in names):
            return "dracut"
        # mkinitramfs copies conf/initramfs.conf and the scripts/ tree (hook-functions).
        if "conf/initramfs.conf" in names or (
            "scripts/functions" in names and any(n.startswith("scripts/init-top") for n in names)
        ):
            return "initramfs-tools"
        # mkinitcpio writes /VERSION, /config, /buildconfig and ships /init_functions.
        if "init_functions" in names or ("config" in names and names & {"buildconfig", "VERSION"}):
            return "mkinitcpio"
        return "unknown"


def open_initramfs(path: str | PathLike[str], wanted: Callable[[str], bool]) -> Initramfs:
    """The image at the host path `path`: NotReadable if it is not a regular file."""
    with open_regular(path) as stream:
        return read_initramfs(stream, wanted)


def read_initramfs(stream: BinaryIO, wanted: Callable[[str], bool]) -> Initramfs:
    """Every entry of the image; the data of the files `wanted(name)` accepts.

    Only an OSError of `stream` itself propagates; bad bytes end up in `error`.
    """
    reader = _Reader(wanted)
    try:  # a file larger than the budget would only be read up to it, slowly (20 GiB of holes)
        size = os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file: an in-memory stream
        size = 0
    if size > IMAGE_OUTPUT.value:
        return Initramfs(
            (), {}, (), f"offset 0: a {size}-byte file, over the {IMAGE_OUTPUT.describe()} limit"
        )
    raw = _Counted(stream, reader.budget)
    try:
        if raw.peek(2) == b"MZ":
            _enter_uki(raw)
        reader.read_image(raw)
        if not reader.archives:
            raise Corrupt("offset 0: no cpio archive at all (an empty or all-NUL file)")
    except Corrupt as exc:
        reader.error = str(exc)
    return Initramfs(
        tuple(reader.entries),
        MappingProxyType(reader.files),
        tuple(reader.archives),
        reader.error,
    )


class _Budget:
    """What reading one image may cost: bytes read and decompressed together (IMAGE_OUTPUT)."""

    def __init__(self) -> None:
        self.spent = 0

    def spend(self, n: int, where: str) -> None:
        self.spent += n
        if self.spent > IMAGE_OUTPUT.value:
            raise Corrupt(f"{where}: stopped at the {IMAGE_OUTPUT.describe()} limit")


class _Counted(RawStream):
    """The image file, every byte read from it counted against the budget."""

    def __init__(self, stream: BinaryIO, budget: _Budget) -> None:
        super().__init__(stream)
        self._budget = budget

    def _fill(self) -> bytes:
        data = super()._fill()
        self._budget.spend(len(data), self.where(self.pos))
        return data


class _Decoded(ByteSource):
    """The output of one compressed stream of the image, counted against the budget and the ratio."""

    def __init__(
        self, chunks: Generator[bytes, None, None], name: str, raw: RawStream, budget: _Budget
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self.name = name
        self.offset = raw.pos
        self._raw = raw
        self._budget = budget
        self._out = 0

    def _fill(self) -> bytes:
        try:
            chunk = next((c for c in self._chunks if c), b"")
        except Corrupt as exc:
            raise Corrupt(f"{self.name} stream at offset {self.offset}: {exc}") from None
        self._out += len(chunk)
        self._budget.spend(len(chunk), self.where(self.pos))
        # A bomb (20 GiB of zeros in 20 MB of gzip) stops here in a fraction of a second
        # instead of minutes: no real image comes near this ratio (limits.IMAGE_RATIO).
        taken = max(1, self._raw.pos - self.offset)
        if self._out > IMAGE_RATIO_FLOOR.value and self._out > IMAGE_RATIO.value * taken:
            raise Corrupt(
                f"{self.name} stream at offset {self.offset}: stopped at the {IMAGE_RATIO.describe()}"
                f" limit ({self._out} bytes out of {taken}: a decompression bomb?)"
            )
        return chunk

    def where(self, pos: int) -> str:
        return f"byte {pos} of the {self.name} stream at offset {self.offset}"


def _skip_nuls(source: ByteSource) -> None:
    while chunk := source.read1(CHUNK):
        rest = chunk.lstrip(b"\0")
        if rest:
            source.unread(rest)
            return


def _enter_uki(raw: RawStream) -> None:
    """Narrow `raw` to the `.initrd` section of a PE image (systemd-stub's UKI)."""
    dos = raw.read(64)
    (pe,) = struct.unpack_from("<I", dos, 0x3C) if len(dos) == 64 else (0,)
    if not 64 <= pe < 1 << 20 or raw.skip(pe - 64) != pe - 64:
        raise Corrupt("offset 0: MZ file without a PE header (not a UKI)")
    coff = raw.read(24)
    if len(coff) < 24 or coff[:4] != b"PE\0\0":
        raise Corrupt(f"offset {pe}: no PE signature (MZ file, but not a UKI)")
    nsections, optional = struct.unpack_from("<2xH12xH", coff, 4)
    if raw.skip(optional) != optional:
        raise Corrupt(f"offset {raw.pos}: PE optional header cut short")
    table = raw.read(40 * nsections)
    if len(table) < 40 * nsections:
        raise Corrupt(f"offset {raw.pos}: PE section table cut short")
    for i in range(nsections):
        name, vsize, _vaddr, rawsize, rawptr = struct.unpack_from("<8sIIII", table, 40 * i)
        if name.rstrip(b"\0") != b".initrd":
            continue
        # SizeOfRawData is padded to FileAlignment; VirtualSize is the initrd's own length.
        size = min(vsize, rawsize) if vsize else rawsize
        gap = rawptr - raw.pos
        if gap < 0 or raw.skip(gap) != gap:
            raise Corrupt(f"offset {rawptr}: PE .initrd section out of reach of the file")
        raw.window(rawptr + size)
        return
    raise Corrupt("offset 0: PE file without an .initrd section (a kernel image, not a UKI?)")


@dataclass
class _LinkGroup:
    """Names of one hard-linked file in one archive (the kernel links them: maybe_link)."""

    names: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    keep: bool = False
    size: int = 0
    data: bytes | None = None


class _Reader:
    def __init__(self, wanted: Callable[[str], bool]) -> None:
        self.wanted = wanted
        self.entries: list[Entry] = []
        self.files: dict[str, bytes] = {}
        self.archives: list[Archive] = []
        self.error: str | None = None
        self.budget = _Budget()
        self.kept = 0  # bytes of names, link targets and file data held (IMAGE_KEPT)

    def hold(self, n: int, where: str) -> None:
        self.kept += n
        if self.kept > IMAGE_KEPT.value:
            raise Corrupt(f"{where}: stopped at the {IMAGE_KEPT.describe()} limit")

    def read_image(self, raw: RawStream) -> None:
        while True:
            _skip_nuls(raw)
            head = raw.peek(6)
            if not head:
                return
            at = raw.pos
            if head.startswith(b"0707"):
                self._archive(raw, at, "none")
                continue
            name = compression_of(head)
            if name is None:
                raise Corrupt(
                    f"offset {at}: neither a cpio archive nor a known compression (starts {head.hex(' ')})"
                )
            chunks = DECODERS[name](raw)
            try:
                decoded = _Decoded(chunks, name, raw, self.budget)
                while True:
                    _skip_nuls(decoded)
                    if not (first := decoded.peek(4)):
                        break
                    if not first.startswith(b"0707"):
                        where = decoded.where(decoded.pos)
                        raise Corrupt(f"{where}: junk inside the stream ({first.hex(' ')})")
                    self._archive(decoded, at, name)
            finally:
                chunks.close()

    def _archive(self, source: ByteSource, offset: int, compression: str) -> None:
        index = len(self.archives)
        self.archives.append(Archive(offset, compression))
        links: dict[tuple[int, int, int, int], _LinkGroup] = {}
        while True:
            at = source.pos
            where = source.where(at)
            if len(self.entries) >= IMAGE_ENTRIES.value:
                raise Corrupt(f"{where}: stopped at the {IMAGE_ENTRIES.describe()} limit")
            if (at - source.base) % 4:
                raise Corrupt(f"{where}: cpio header not 4-byte aligned (the kernel rejects it)")
            header = source.read(110)
            if len(header) < 110:
                raise Corrupt(f"{where}: cpio archive cut short (no TRAILER!!!)")
            if header[:6] not in (b"070701", b"070702"):
                raise Corrupt(f"{where}: not a cpio newc header ({header[:6]!r})")
            if not _HEX.fullmatch(header, 6):
                raise Corrupt(f"{where}: cpio header field is not hex")
            ino, mode, _, _, nlink, _, size, major, minor, _, _, namesize, _ = (
                int(header[i : i + 8], 16) for i in range(6, 110, 8)
            )
            if not 0 < namesize <= _PATH_MAX:
                raise Corrupt(f"{where}: cpio name size {namesize} out of range")
            raw_name = source.read(namesize)
            if len(raw_name) < namesize:
                raise Corrupt(f"{where}: cpio archive cut short in a name")
            source.skip(-(source.pos - source.base) % 4)
            # dracut pads names with NULs; the kernel reads up to the first one.
            name = raw_name.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            if name == "TRAILER!!!":
                self._data(source, size, keep=False, what=name)
                for group in links.values():
                    for i in group.indices:
                        self.entries[i] = replace(self.entries[i], size=group.size)
                return
            name = _normalise(name)
            self.hold(len(name), where)
            target: str | None = None
            if stat.S_ISREG(mode) and nlink >= 2:
                group = links.setdefault((ino, major, minor, mode), _LinkGroup())
                group.keep = group.keep or self.wanted(name)
                group.names.append(name)
                group.indices.append(len(self.entries))
                if size:  # newc carries the data once, on the last name (gen_init_cpio, cpio)
                    group.size = size
                    group.data = self._data(source, size, keep=group.keep, what=name)
                    if group.data is not None:
                        self.files.update(dict.fromkeys(group.names, group.data))
                elif group.data is not None:  # only the new name: all of them each time was quadratic
                    self.files[name] = group.data
            elif stat.S_ISREG(mode):
                data = self._data(source, size, keep=self.wanted(name), what=name)
                if data is None:
                    self.files.pop(name, None)
                else:
                    self.files[name] = data
            else:
                self.files.pop(name, None)
                is_link = stat.S_ISLNK(mode)
                body = self._data(source, size, keep=is_link and size <= _PATH_MAX, what=name)
                if is_link and body is not None:
                    target = body.decode("utf-8", "backslashreplace")
            self.entries.append(Entry(name, mode, size, nlink, target, index, compression))

    def _data(self, source: ByteSource, size: int, *, keep: bool, what: str) -> bytes | None:
        at = source.pos
        if keep and size > IMAGE_WANTED_FILE.value:  # read whole, it could exhaust memory
            raise Corrupt(
                f"{source.where(at)}: {what} is {size} bytes, over the {IMAGE_WANTED_FILE.describe()} limit"
            )
        if keep:
            self.hold(size, source.where(at))
            data = source.read(size)
            got = len(data)
        else:
            data, got = None, source.skip(size)
        if got < size:
            raise Corrupt(f"{source.where(at)}: data of {what} cut short ({got} of {size} bytes)")
        source.skip(-(source.pos - source.base) % 4)
        return data


def _normalise(name: str) -> str:
    if name.startswith("./"):
        name = name[2:]
    return name.lstrip("/") or "."
