"""The compressions the kernel unpacks initramfs images (and bzImage payloads) in, as streams.

One decoder per format (lib/decompress.c names them by magic), each a generator of decompressed
chunks of bounded size reading from a `RawStream` and handing back the bytes after its stream, so
a caller can go on with whatever follows. Used by the initramfs reader and the kernel image reader,
both streaming (memory flat). Where a faster well-kept library than the standard one exists for a
codec (ISA-L for gzip, compression.zstd / backports.zstd for zstd) it is chosen here, once, with the
standard one as the fallback.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Generator
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import bz2
    import lzma

    from backports.zstd import ZstdDecompressor

    Bounded = bz2.BZ2Decompressor | lzma.LZMADecompressor | ZstdDecompressor

# The other codecs' modules are imported by their decoders: most runs meet gzip (or nothing) only,
# and start-up pays for every import (lz4 and zstandard alone take ~10 ms).

CHUNK = 64 << 10  # bytes read from the input at a time
OUT = 1 << 20  # bound on one decompressed chunk
_EXTRA_MAX = 4096  # a sane lzop header extra field

# lib/decompress.c: the kernel itself looks at two bytes only.
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
)


class Corrupt(Exception):
    """Bad bytes: reading stops with this one-line message."""


class ByteSource:
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
        while n > 0 and (part := self.read1(min(n, OUT))):
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


class RawStream(ByteSource):
    """The image file, optionally only the window [base, end) of it (a UKI's .initrd section)."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._taken = 0  # bytes read from the stream so far
        self._end: int | None = None

    def _fill(self) -> bytes:
        n = CHUNK if self._end is None else min(CHUNK, self._end - self._taken)
        data = self._stream.read(n) if n > 0 else b""
        self._taken += len(data)
        return data

    def window(self, end: int) -> None:
        """From here (`pos`) up to `end` only."""
        self.base, self._end = self.pos, end
        self._buf, self._at = self._buf[self._at :][: max(0, end - self.pos)], 0


def gzip_backend() -> tuple[str, ModuleType]:
    """The inflater for gzip, chosen here once: ISA-L's (python-isal) inflates a dracut image in
    about half the time of zlib with the same `decompressobj` API; the standard library's zlib
    when the wheel is missing for this machine (or ISA-L cannot run on its CPU)."""
    try:
        from isal import isal_zlib
    except (ImportError, OSError):
        return "zlib", zlib
    return "isal", isal_zlib


GZIP_BACKEND, _ZLIB = gzip_backend()


def compression_of(head: bytes) -> str | None:
    return next((name for magic, name in MAGICS if head.startswith(magic)), None)


# Decoders: generators of decompressed chunks that hand the bytes after their stream back to `raw`.


def _gzip(raw: RawStream) -> Generator[bytes, None, None]:
    decoder = _ZLIB.decompressobj(16 + zlib.MAX_WBITS)
    while not decoder.eof:
        data = decoder.unconsumed_tail or raw.read1(CHUNK)
        if not data:
            raise Corrupt("compressed data cut short")
        try:
            yield decoder.decompress(data, OUT)  # max_length keeps zeros from exploding
        except _ZLIB.error as exc:
            raise Corrupt(f"corrupt compressed data ({exc})") from None
    raw.unread(decoder.unused_data)


def _bounded(
    raw: RawStream, decoder: Bounded, error: type[Exception] = OSError
) -> Generator[bytes, None, None]:
    """A decoder with lzma's API: `decompress(data, max_length)`, `needs_input`, `eof`, `unused_data`."""
    while not decoder.eof:
        data = b""
        if decoder.needs_input and not (data := raw.read1(CHUNK)):
            raise Corrupt("compressed data cut short")
        try:
            out = decoder.decompress(data, OUT)
        except (OSError, EOFError, error) as exc:  # bz2 reports bad data as OSError
            raise Corrupt(f"corrupt compressed data ({exc})") from None
        yield out
    raw.unread(decoder.unused_data)


def _bzip2(raw: RawStream) -> Generator[bytes, None, None]:
    import bz2

    return _bounded(raw, bz2.BZ2Decompressor())


def _xz(raw: RawStream) -> Generator[bytes, None, None]:
    import lzma

    return _bounded(raw, lzma.LZMADecompressor(lzma.FORMAT_XZ), lzma.LZMAError)


def _lzma(raw: RawStream) -> Generator[bytes, None, None]:
    import lzma

    return _bounded(raw, lzma.LZMADecompressor(lzma.FORMAT_ALONE), lzma.LZMAError)


def zstd_backend() -> str:
    """The zstd decoder, chosen here: `compression.zstd` (Python 3.14) or its backport inflate with
    a bound on each output (`max_length`, like lzma) at about twice the speed of zstandard, which
    has no such bound and must be fed in slices; zstandard when neither is installed."""
    try:
        import compression.zstd  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        try:
            import backports.zstd  # noqa: F401
        except ImportError:
            return "zstandard"
        return "backports.zstd"
    return "compression.zstd"


ZSTD_BACKEND: str | None = None  # chosen at the first zstd stream: the import costs start-up time


def _zstd(raw: RawStream) -> Generator[bytes, None, None]:
    # The kernel reads one frame (lib/decompress_unzstd.c); a following frame is a new stream.
    global ZSTD_BACKEND
    if ZSTD_BACKEND is None:
        ZSTD_BACKEND = zstd_backend()
    if ZSTD_BACKEND == "compression.zstd":
        from compression.zstd import (  # type: ignore[import-not-found,unused-ignore]
            ZstdDecompressor,
            ZstdError,
        )
    elif ZSTD_BACKEND == "backports.zstd":
        from backports.zstd import ZstdDecompressor, ZstdError
    else:
        return _zstd_sliced(raw)
    return _bounded(raw, ZstdDecompressor(), ZstdError)


_ZSTD_FEED = 128  # a zstd RLE block turns 4 bytes into 128 KiB: 128 in → at most 4 MiB out


def _zstd_sliced(raw: RawStream) -> Generator[bytes, None, None]:
    # zstandard's decompressobj has no max_length: feed it small slices.
    import zstandard

    decoder = zstandard.ZstdDecompressor().decompressobj()
    out: list[bytes] = []
    size = 0
    while not decoder.eof:
        data = raw.read1(CHUNK)
        if not data:
            raise Corrupt("compressed data cut short")
        for start in range(0, len(data), _ZSTD_FEED):
            try:
                piece = decoder.decompress(data[start : start + _ZSTD_FEED])
            except zstandard.ZstdError as exc:
                raise Corrupt(f"corrupt compressed data ({exc})") from None
            out.append(piece)
            size += len(piece)
            if decoder.eof:
                raw.unread(decoder.unused_data + data[start + _ZSTD_FEED :])
                break
            if size >= OUT:
                yield b"".join(out)
                out, size = [], 0
    yield b"".join(out)


_LZ4_MAGIC = 0x184C2102
_LZ4_BLOCK = 8 << 20  # lib/decompress_unlz4.c: uncomp_chunksize
_LZ4_BOUND = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16  # LZ4_compressBound


def _lz4(raw: RawStream) -> Generator[bytes, None, None]:
    # Legacy frame (lz4 -l): magic, then blocks of <le32 size><data>; the magic may repeat. The
    # stream ends at the end of input or at a "size" no block can have (lz4io.c does the same).
    import lz4.block

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
            raise Corrupt("compressed data cut short")
        try:
            yield lz4.block.decompress(block, uncompressed_size=_LZ4_BLOCK)
        except lz4.block.LZ4BlockError as exc:
            raise Corrupt(f"corrupt compressed data ({exc})") from None


def _lzo(raw: RawStream) -> Generator[bytes, None, None]:
    # No lzo in Python's standard library: copy exactly this stream (its length is known only by
    # walking the lzop block framing) to a temporary file and let `lzop -dc` decompress it.
    import shutil
    import subprocess
    import tempfile

    lzop = shutil.which("lzop")
    if lzop is None:
        raise Corrupt("reading lzo needs the lzop program, which is not installed")
    with tempfile.TemporaryFile() as packed, tempfile.TemporaryFile() as errors:
        complete = _copy_lzop(raw, packed)
        packed.seek(0)
        with subprocess.Popen([lzop, "-dc"], stdin=packed, stdout=subprocess.PIPE, stderr=errors) as proc:
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(CHUNK):
                    yield chunk
            except BaseException:  # the reader stopped early (GeneratorExit) or failed
                proc.kill()
                raise
            status = proc.wait()
        if not complete:
            raise Corrupt("compressed data cut short")
        if status != 0:
            errors.seek(0)
            message = errors.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            raise Corrupt(f"lzop failed: {message}")


_F_ADLER32_D, _F_ADLER32_C, _F_H_EXTRA_FIELD = 0x1, 0x2, 0x40
_F_CRC32_D, _F_CRC32_C, _F_H_FILTER = 0x100, 0x200, 0x800


def _copy_lzop(raw: RawStream, out: BinaryIO) -> bool:
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
            if extra > _EXTRA_MAX:
                raise Corrupt("corrupt lzop header (extra field too long)")
            take(extra + 4)
        while dst := be(4):
            src = be(4)
            if src == 0 or src > dst or dst > 64 << 20:
                raise Corrupt("corrupt lzop block sizes")
            take(4 * (bool(flags & _F_ADLER32_D) + bool(flags & _F_CRC32_D)))
            if src < dst:
                take(4 * (bool(flags & _F_ADLER32_C) + bool(flags & _F_CRC32_C)))
            while src:
                src -= len(take(min(src, CHUNK)))
    except EOFError:
        return False
    return True


DECODERS: dict[str, Callable[[RawStream], Generator[bytes, None, None]]] = {
    "gzip": _gzip,
    "zstd": _zstd,
    "xz": _xz,
    "lzma": _lzma,
    "bzip2": _bzip2,
    "lz4": _lz4,
    "lzo": _lzo,
}


def decompress_bytes(data: bytes, kind: str, limit: int) -> tuple[bytes, str | None]:
    """A whole compressed buffer (an embedded IKCONFIG): the output, cut at `limit`, and the error
    that ended it early, if any (what was decoded before it is kept)."""
    raw = RawStream(io.BytesIO(data))
    out: list[bytes] = []
    size = 0
    chunks = DECODERS[kind](raw)
    try:
        for chunk in chunks:
            out.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except Corrupt as exc:
        return b"".join(out)[:limit], str(exc)
    finally:
        chunks.close()
    return b"".join(out)[:limit], None
