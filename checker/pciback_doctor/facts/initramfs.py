"""initramfs images: cpio "newc" archives, plain or compressed, one after another, maybe in a UKI.

Read the way the kernel unpacks them (init/initramfs.c `unpack_to_rootfs`): NULs between archives
are skipped, a cpio archive starts only at a 4-byte aligned offset, anything else must be a
compressed stream whose magic the kernel knows (lib/decompress.c), and a compressed stream must end
on an archive boundary. The image is streamed: the data of files nobody asked for is decompressed
and dropped in bounded chunks, so memory stays flat however large the image is. Bad bytes never raise:
the result carries a one-line `error` and everything read before it.
"""

from __future__ import annotations

import bz2
import lzma
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from types import MappingProxyType
from typing import BinaryIO

import lz4.block
import zstandard

_CHUNK = 64 << 10  # bytes read from the image at a time
_OUT = 1 << 20  # bound on one decompressed chunk
_PATH_MAX = 4096  # the kernel refuses longer cpio names and symlink bodies
_HEX = re.compile(rb"[0-9A-Fa-f]{104}")

# lib/decompress.c: the kernel itself looks at two bytes only.
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
)


@dataclass(frozen=True)
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
    with open(path, "rb") as stream:
        return read_initramfs(stream, wanted)


def read_initramfs(stream: BinaryIO, wanted: Callable[[str], bool]) -> Initramfs:
    """Every entry of the image; the data of the files `wanted(name)` accepts.

    Only an OSError of `stream` itself propagates; bad bytes end up in `error`.
    """
    reader = _Reader(wanted)
    raw = _Raw(stream)
    try:
        if raw.peek(2) == b"MZ":
            _enter_uki(raw)
        reader.read_image(raw)
    except _Corrupt as exc:
        reader.error = str(exc)
    return Initramfs(
        tuple(reader.entries),
        MappingProxyType(reader.files),
        tuple(reader.archives),
        reader.error,
    )


class _Corrupt(Exception):
    """Bad bytes: reading stops with this one-line message."""


class _Bytes:
    """A byte source with push-back. `pos - base` is what the kernel aligns cpio headers on."""

    def __init__(self) -> None:
        self._buf = b""
        self._at = 0
        self.pos = 0
        self.base = 0

    def _fill(self) -> bytes:
        raise NotImplementedError

    def where(self, pos: int) -> str:
        return f"offset {pos}"

    def read1(self, n: int) -> bytes:
        if self._at == len(self._buf):
            self._buf, self._at = self._fill(), 0
        out = self._buf[self._at : self._at + n]
        self._at += len(out)
        self.pos += len(out)
        return out

    def read(self, n: int) -> bytes:
        """`n` bytes, fewer only at the end."""
        parts = []
        while n > 0 and (part := self.read1(min(n, _OUT))):
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            if self._at == len(self._buf):
                self._buf, self._at = self._fill(), 0
                if not self._buf:
                    break
            step = min(len(self._buf) - self._at, n - done)
            self._at += step
            done += step
        self.pos += done
        return done

    def unread(self, data: bytes) -> None:
        if data:
            self._buf, self._at = data + self._buf[self._at :], 0
            self.pos -= len(data)

    def peek(self, n: int) -> bytes:
        data = self.read(n)
        self.unread(data)
        return data


class _Raw(_Bytes):
    """The image file, optionally only the window [base, end) of it (a UKI's .initrd section)."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._taken = 0  # bytes read from the stream so far
        self._end: int | None = None

    def _fill(self) -> bytes:
        n = _CHUNK if self._end is None else min(_CHUNK, self._end - self._taken)
        data = self._stream.read(n) if n > 0 else b""
        self._taken += len(data)
        return data

    def window(self, end: int) -> None:
        """From here (`pos`) up to `end` only."""
        self.base, self._end = self.pos, end
        self._buf, self._at = self._buf[self._at :][: max(0, end - self.pos)], 0


class _Decoded(_Bytes):
    """The output of one compressed stream of the image."""

    def __init__(self, chunks: Generator[bytes, None, None], name: str, offset: int) -> None:
        super().__init__()
        self._chunks = chunks
        self.name = name
        self.offset = offset

    def _fill(self) -> bytes:
        try:
            for chunk in self._chunks:
                if chunk:
                    return chunk
        except _Corrupt as exc:
            raise _Corrupt(f"{self.name} stream at offset {self.offset}: {exc}") from None
        return b""

    def where(self, pos: int) -> str:
        return f"byte {pos} of the {self.name} stream at offset {self.offset}"


def _skip_nuls(source: _Bytes) -> None:
    while chunk := source.read1(_CHUNK):
        rest = chunk.lstrip(b"\0")
        if rest:
            source.unread(rest)
            return


def _compression(head: bytes) -> str | None:
    return next((name for magic, name in _MAGICS if head.startswith(magic)), None)


def _enter_uki(raw: _Raw) -> None:
    """Narrow `raw` to the `.initrd` section of a PE image (systemd-stub's UKI)."""
    dos = raw.read(64)
    (pe,) = struct.unpack_from("<I", dos, 0x3C) if len(dos) == 64 else (0,)
    if not 64 <= pe < 1 << 20 or raw.skip(pe - 64) != pe - 64:
        raise _Corrupt("offset 0: MZ file without a PE header (not a UKI)")
    coff = raw.read(24)
    if len(coff) < 24 or coff[:4] != b"PE\0\0":
        raise _Corrupt(f"offset {pe}: no PE signature (MZ file, but not a UKI)")
    nsections, optional = struct.unpack_from("<2xH12xH", coff, 4)
    if raw.skip(optional) != optional:
        raise _Corrupt(f"offset {raw.pos}: PE optional header cut short")
    table = raw.read(40 * nsections)
    if len(table) < 40 * nsections:
        raise _Corrupt(f"offset {raw.pos}: PE section table cut short")
    for i in range(nsections):
        name, vsize, _vaddr, rawsize, rawptr = struct.unpack_from("<8sIIII", table, 40 * i)
        if name.rstrip(b"\0") != b".initrd":
            continue
        # SizeOfRawData is padded to FileAlignment; VirtualSize is the initrd's own length.
        size = min(vsize, rawsize) if vsize else rawsize
        gap = rawptr - raw.pos
        if gap < 0 or raw.skip(gap) != gap:
            raise _Corrupt(f"offset {rawptr}: PE .initrd section out of reach of the file")
        raw.window(rawptr + size)
        return
    raise _Corrupt("offset 0: PE file without an .initrd section (a kernel image, not a UKI?)")


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

    def read_image(self, raw: _Raw) -> None:
        while True:
            _skip_nuls(raw)
            head = raw.peek(6)
            if not head:
                return
            at = raw.pos
            if head.startswith(b"0707"):
                self._archive(raw, at, "none")
                continue
            name = _compression(head)
            if name is None:
                raise _Corrupt(
                    f"offset {at}: neither a cpio archive nor a known compression (starts {head.hex(' ')})"
                )
            chunks = _DECODERS[name](raw)
            try:
                decoded = _Decoded(chunks, name, at)
                while True:
                    _skip_nuls(decoded)
                    if not (first := decoded.peek(4)):
                        break
                    if not first.startswith(b"0707"):
                        where = decoded.where(decoded.pos)
                        raise _Corrupt(f"{where}: junk inside the stream ({first.hex(' ')})")
                    self._archive(decoded, at, name)
            finally:
                chunks.close()

    def _archive(self, source: _Bytes, offset: int, compression: str) -> None:
        index = len(self.archives)
        self.archives.append(Archive(offset, compression))
        links: dict[tuple[int, int, int, int], _LinkGroup] = {}
        while True:
            at = source.pos
            where = source.where(at)
            if (at - source.base) % 4:
                raise _Corrupt(f"{where}: cpio header not 4-byte aligned (the kernel rejects it)")
            header = source.read(110)
            if len(header) < 110:
                raise _Corrupt(f"{where}: cpio archive cut short (no TRAILER!!!)")
            if header[:6] not in (b"070701", b"070702"):
                raise _Corrupt(f"{where}: not a cpio newc header ({header[:6]!r})")
            if not _HEX.fullmatch(header, 6):
                raise _Corrupt(f"{where}: cpio header field is not hex")
            ino, mode, _, _, nlink, _, size, major, minor, _, _, namesize, _ = (
                int(header[i : i + 8], 16) for i in range(6, 110, 8)
            )
            if not 0 < namesize <= _PATH_MAX:
                raise _Corrupt(f"{where}: cpio name size {namesize} out of range")
            raw_name = source.read(namesize)
            if len(raw_name) < namesize:
                raise _Corrupt(f"{where}: cpio archive cut short in a name")
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

    def _data(self, source: _Bytes, size: int, *, keep: bool, what: str) -> bytes | None:
        at = source.pos
        if keep:
            data = source.read(size)
            got = len(data)
        else:
            data, got = None, source.skip(size)
        if got < size:
            raise _Corrupt(f"{source.where(at)}: data of {what} cut short ({got} of {size} bytes)")
        source.skip(-(source.pos - source.base) % 4)
        return data


def _normalise(name: str) -> str:
    if name.startswith("./"):
        name = name[2:]
    return name.lstrip("/") or "."


# Decoders: generators of decompressed chunks that hand the bytes after their stream back to `raw`.


def _gzip(raw: _Raw) -> Generator[bytes, None, None]:
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while not decoder.eof:
        data = decoder.unconsumed_tail or raw.read1(_CHUNK)
        if not data:
            raise _Corrupt("compressed data cut short")
        try:
            yield decoder.decompress(data, _OUT)  # max_length keeps zeros from exploding
        except zlib.error as exc:
            raise _Corrupt(f"corrupt compressed data ({exc})") from None
    raw.unread(decoder.unused_data)


def _bounded(raw: _Raw, decoder: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> Generator[bytes, None, None]:
    while not decoder.eof:
        data = b""
        if decoder.needs_input and not (data := raw.read1(_CHUNK)):
            raise _Corrupt("compressed data cut short")
        try:
            out = decoder.decompress(data, _OUT)
        except (OSError, EOFError, lzma.LZMAError) as exc:  # bz2 reports bad data as OSError
            raise _Corrupt(f"corrupt compressed data ({exc})") from None
        yield out
    raw.unread(decoder.unused_data)


def _bzip2(raw: _Raw) -> Generator[bytes, None, None]:
    return _bounded(raw, bz2.BZ2Decompressor())


def _xz(raw: _Raw) -> Generator[bytes, None, None]:
    return _bounded(raw, lzma.LZMADecompressor(lzma.FORMAT_XZ))


def _lzma(raw: _Raw) -> Generator[bytes, None, None]:
    return _bounded(raw, lzma.LZMADecompressor(lzma.FORMAT_ALONE))


_ZSTD_FEED = 128  # a zstd RLE block turns 4 bytes into 128 KiB: 128 in → at most 4 MiB out


def _zstd(raw: _Raw) -> Generator[bytes, None, None]:
    # zstandard's decompressobj has no max_length: feed it small slices. The kernel reads one
    # frame (lib/decompress_unzstd.c); a following frame is a new stream.
    decoder = zstandard.ZstdDecompressor().decompressobj()
    out: list[bytes] = []
    size = 0
    while not decoder.eof:
        data = raw.read1(_CHUNK)
        if not data:
            raise _Corrupt("compressed data cut short")
        for start in range(0, len(data), _ZSTD_FEED):
            try:
                piece = decoder.decompress(data[start : start + _ZSTD_FEED])
            except zstandard.ZstdError as exc:
                raise _Corrupt(f"corrupt compressed data ({exc})") from None
            out.append(piece)
            size += len(piece)
            if decoder.eof:
                raw.unread(decoder.unused_data + data[start + _ZSTD_FEED :])
                break
            if size >= _OUT:
                yield b"".join(out)
                out, size = [], 0
    yield b"".join(out)


_LZ4_MAGIC = 0x184C2102
_LZ4_BLOCK = 8 << 20  # lib/decompress_unlz4.c: uncomp_chunksize
_LZ4_BOUND = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16  # LZ4_compressBound


def _lz4(raw: _Raw) -> Generator[bytes, None, None]:
    # Legacy frame (lz4 -l): magic, then blocks of <le32 size><data>; the magic may repeat. The
    # stream ends at the end of input or at a "size" no block can have (lz4io.c does the same).
    raw.read(4)
    while True:
        head = raw.read(4)
        size = int.from_bytes(head, "little")
        # A gzip header reads as a plausible size (0x00088b1f): it starts a new stream.
        if size == _LZ4_MAGIC:
            continue
        if len(head) < 4 or size == 0 or size > _LZ4_BOUND or head.startswith(b"\x1f\x8b"):
            raw.unread(head)
            return
        block = raw.read(size)
        if len(block) < size:
            raise _Corrupt("compressed data cut short")
        try:
            yield lz4.block.decompress(block, uncompressed_size=_LZ4_BLOCK)
        except lz4.block.LZ4BlockError as exc:
            raise _Corrupt(f"corrupt compressed data ({exc})") from None


def _lzo(raw: _Raw) -> Generator[bytes, None, None]:
    # No lzo in Python's standard library: copy exactly this stream (its length is known only by
    # walking the lzop block framing) to a temporary file and let `lzop -dc` decompress it.
    lzop = shutil.which("lzop")
    if lzop is None:
        raise _Corrupt("reading lzo needs the lzop program, which is not installed")
    with tempfile.TemporaryFile() as packed, tempfile.TemporaryFile() as errors:
        complete = _copy_lzop(raw, packed)
        packed.seek(0)
        with subprocess.Popen([lzop, "-dc"], stdin=packed, stdout=subprocess.PIPE, stderr=errors) as proc:
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(_CHUNK):
                    yield chunk
            except BaseException:  # the reader stopped early (GeneratorExit) or failed
                proc.kill()
                raise
            status = proc.wait()
        if not complete:
            raise _Corrupt("compressed data cut short")
        if status != 0:
            errors.seek(0)
            message = errors.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            raise _Corrupt(f"lzop failed: {message}")


_F_ADLER32_D, _F_ADLER32_C, _F_H_EXTRA_FIELD = 0x1, 0x2, 0x40
_F_CRC32_D, _F_CRC32_C, _F_H_FILTER = 0x100, 0x200, 0x800


def _copy_lzop(raw: _Raw, out: BinaryIO) -> bool:
    """Copy one lzop file (lzop's own format, as lib/decompress_unlzo.c reads it); False if cut."""

    def take(n: int) -> bytes:
        data = raw.read(n)
        out.write(data)
        if len(data) < n:
            raise EOFError
        return data

    def be(n: int) -> int:
        return int.from_bytes(take(n), "big")

    try:
        take(9)
        version = be(2)
        take(2)  # library version
        take(3 if version >= 0x0940 else 1)  # [version needed to extract,] method
        take(1 if version >= 0x0940 else 0)  # level
        flags = be(4)
        take(4 if flags & _F_H_FILTER else 0)
        take(12 if version >= 0x0940 else 8)  # mode, mtime (low[, high])
        take(be(1) + 4)  # name, header checksum
        if flags & _F_H_EXTRA_FIELD:
            extra = be(4)
            if extra > _PATH_MAX:
                raise _Corrupt("corrupt lzop header (extra field too long)")
            take(extra + 4)
        while dst := be(4):
            src = be(4)
            if src == 0 or src > dst or dst > 64 << 20:
                raise _Corrupt("corrupt lzop block sizes")
            take(4 * (bool(flags & _F_ADLER32_D) + bool(flags & _F_CRC32_D)))
            if src < dst:
                take(4 * (bool(flags & _F_ADLER32_C) + bool(flags & _F_CRC32_C)))
            while src:
                src -= len(take(min(src, _CHUNK)))
    except EOFError:
        return False
    return True


_DECODERS: dict[str, Callable[[_Raw], Generator[bytes, None, None]]] = {
    "gzip": _gzip,
    "zstd": _zstd,
    "xz": _xz,
    "lzma": _lzma,
    "bzip2": _bzip2,
    "lz4": _lz4,
    "lzo": _lzo,
}
