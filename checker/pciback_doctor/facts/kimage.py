"""Kernel images: a bzImage or a vmlinux ELF → its embedded config, symbols and version.

bzImage layout from arch/x86/boot/header.S (boot protocol, Documentation/arch/x86/boot.rst); the
payload is what arch/x86/boot/compressed/Makefile built: `objcopy -S vmlinux` compressed, with the
uncompressed size appended as 4 bytes. The embedded config is kernel/configs.c's
`IKCFG_ST` + gzip + `IKCFG_ED` (what scripts/extract-ikconfig looks for). The payload vmlinux has no
`.symtab` (`objcopy -S`), so symbols come from the kernel's own kallsyms tables
(scripts/kallsyms.c), decoded from the raw bytes; an unstripped vmlinux gives its `.symtab`.
The vmlinux is never held whole: it is scanned in one pass as it is decompressed, with a window of
the last few MiB, and the pass stops once the kallsyms tables are read; what is decompressed is
bounded by the kernel image size limit (facts/limits.py).
Pure and total: any bytes in, a `KernelImage` out (`error` says what went wrong), never an exception
(but the OSError of reading an open file).
"""

from __future__ import annotations

import bisect
import io
import re
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import BinaryIO

from pciback_doctor.facts.compression import DECODERS, OUT, Corrupt, RawStream, decompress_bytes
from pciback_doctor.facts.kconfig import ConfigError, KernelConfig, decode_config, parse_config
from pciback_doctor.facts.limits import KERNEL_IMAGE, TEXT_FILE

_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"

# Payload magics, the order scripts/extract-vmlinux tries them in.
_MAGICS: tuple[tuple[str, bytes], ...] = (
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),  # props 0x5d, then the dictionary size
    ("lzo", b"\x89LZO"),
    ("lz4", _LZ4_LEGACY_MAGIC),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("none", b"\x7fELF"),
)
_BANNER = re.compile(rb"Linux version (\d[^\s\x00]*) \(")


@dataclass(frozen=True)
class KernelImage:
    path: str
    kind: str  # bzImage | vmlinux | unknown
    compression: str | None  # gzip xz lzma bzip2 lz4 zstd lzo none (bzImage payload)
    config: KernelConfig | None  # from IKCONFIG, if the image embeds it
    symbols: AbstractSet[str]  # a frozenset, or kallsyms `Symbols` (expanded when first needed)
    symbol_source: str | None  # symtab | kallsyms | None
    version: str | None  # from the `Linux version` banner (or the bzImage header)
    error: str | None = None  # why the image could not be read (fully)
    notes: tuple[str, ...] = field(default=())  # e.g. "no IKCONFIG"

    @property
    def has_ikconfig(self) -> bool:
        return self.config is not None


def inspect_kernel_image(data: bytes, path: str) -> KernelImage:
    return inspect_kernel_file(io.BytesIO(data), path)


def inspect_kernel_file(stream: BinaryIO, path: str) -> KernelImage:
    """The same from an open file, read in pieces: memory stays bounded by the scan window and
    the decompressor, whatever the size of the image or of its payload."""
    try:
        return _inspect(stream, path)
    except MemoryError:
        return KernelImage(path, "unknown", None, None, frozenset(), None, None, "out of memory")


def _read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    return stream.read(size)


def _inspect(stream: BinaryIO, path: str) -> KernelImage:
    head = _read_at(stream, 0, 0x1000)
    if head[0x202:0x206] == b"HdrS":
        return _bzimage(stream, head, path)
    if head[:4] == b"\x7fELF":
        stream.seek(0)
        return _vmlinux(stream, path)
    stream.seek(0)
    scan = _Scan(path, stop_early=True)
    scan.run(_pieces(stream, KERNEL_IMAGE.value))
    return KernelImage(
        path,
        "unknown",
        None,
        None,
        frozenset(),
        None,
        scan.banner,
        "neither a bzImage (no HdrS at 0x202) nor an ELF vmlinux",
    )


def _pieces(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    """An uncompressed input in the decoders' chunk size, up to `limit` bytes (and one more, so
    that the scan can tell the limit was passed)."""
    left = limit + 1
    while left > 0 and (piece := stream.read(min(OUT, left))):
        left -= len(piece)
        yield piece


# --- bzImage ------------------------------------------------------------------------------------


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes | bytearray, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _header_version(stream: BinaryIO, head: bytes) -> str | None:
    """header.S `kernel_version`: a pointer (minus 0x200) to `UTS_RELEASE (user@host) #...`."""
    ptr = _u16(head, 0x20E)
    if ptr == 0:
        return None
    text = _read_at(stream, ptr + 0x200, 256)
    end = text.find(b"\0")
    if end < 0:
        return None
    words = text[:end].decode("ascii", "replace").split()
    return words[0] if words else None


def _payload(stream: BinaryIO, head: bytes) -> tuple[int, int, str | None]:
    """(start, end, compression) of a bzImage's payload."""
    setup_sects = head[0x1F1] or 4  # header.S / boot.rst: 0 means 4
    pm_start = (setup_sects + 1) * 512
    protocol = _u16(head, 0x206)
    size = stream.seek(0, io.SEEK_END)
    compression: str | None = None
    start = end = 0
    if protocol >= 0x208:  # payload_offset/payload_length exist since boot protocol 2.08
        off, length = _u32(head, 0x248), _u32(head, 0x24C)
        start, end = pm_start + off, pm_start + off + length
        if length and end <= size:
            compression = _compression(_read_at(stream, start, 8))
    if compression is None:
        # Old protocol or a bad header: scan like scripts/extract-vmlinux does.
        start, compression = _scan_payload(stream, pm_start)
        end = size
    return start, end, compression


def _payload_pieces(stream: BinaryIO, start: int, end: int, compression: str) -> Iterator[bytes]:
    stream.seek(start)
    raw = RawStream(stream)
    raw.window(end - start)
    # CONFIG_KERNEL_UNCOMPRESSED: the payload is the ELF itself
    return _raw_pieces(raw) if compression == "none" else DECODERS[compression](raw)


def _bzimage(stream: BinaryIO, head: bytes, path: str) -> KernelImage:
    version = _header_version(stream, head)
    start, end, compression = _payload(stream, head)
    if compression is None:
        return KernelImage(path, "bzImage", None, None, frozenset(), None, version, "no known payload found")
    # One pass over the payload as it is decompressed (lib/decompress.c's decoders, as for the
    # initramfs); it stops once the kallsyms tables are read, the last thing it looks for.
    chunks = _payload_pieces(stream, start, end, compression)
    scan = _Scan(f"{path} (IKCONFIG)", stop_early=True)
    error = scan.run(chunks)
    if scan.size == 0:
        problem = (
            f"{compression} payload corrupt: {error}"
            if error
            else f"{compression} payload decompressed to nothing"
        )
        return KernelImage(path, "bzImage", compression, None, frozenset(), None, version, problem)
    if not scan.over_limit:
        # the kernel build appends the uncompressed size after the stream; a decoder that reads it
        # as more data stops there, with the whole vmlinux already out
        error = None
    symbols: AbstractSet[str] = scan.symbols or frozenset()
    source = "kallsyms" if scan.symbols else None
    if scan.symbols is None and scan.head[:4] == b"\x7fELF":
        # arch/x86/boot/compressed/Makefile strips the payload (objcopy -S); a hand-made one may
        # keep a .symtab, found if it lies in the last part the scan kept
        symbols, source = scan.symtab()
    return scan.image(path, "bzImage", compression, symbols, source, scan.banner or version, error)


def vmlinux_of(data: bytes) -> tuple[bytes | bytearray | None, str | None]:
    """The vmlinux ELF of a kernel image (a bzImage's payload decompressed, or the ELF itself) up to
    the end of its last writable data segment — where static driver structs and, before them, the
    read-only data they point at lie — or None and why not. Bounded by the kernel image size limit."""
    head = data[:0x1000]
    if head[:4] == b"\x7fELF":
        return data[: KERNEL_IMAGE.value], None
    if head[0x202:0x206] != b"HdrS":
        return None, "neither a bzImage (no HdrS at 0x202) nor an ELF vmlinux"
    stream = io.BytesIO(data)
    start, end, compression = _payload(stream, head)
    if compression is None:
        return None, "no known payload found"
    out = bytearray()
    need: int | None = None
    try:
        for piece in _payload_pieces(stream, start, end, compression):
            out += piece
            if need is None:
                need = _data_end(out)
            if need is not None and len(out) >= need:
                del out[need:]  # in place: the only copy of tens of MiB
                return out, None
            if len(out) > KERNEL_IMAGE.value:
                return None, f"decompressed past the {KERNEL_IMAGE.describe()} limit; read stopped there"
    except Corrupt as exc:
        if not out:
            return None, f"{compression} payload corrupt: {exc}"
    except MemoryError:
        return None, "out of memory"
    return (out, None) if out else (None, f"{compression} payload decompressed to nothing")


def _data_end(elf: bytearray) -> int | None:
    """Where the last writable, non-executable PT_LOAD segment of an ELF64 ends in the file, once
    the program headers are in `elf` (None until then; the whole file when there is none)."""
    if len(elf) < 64:
        return None
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return KERNEL_IMAGE.value
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize, phnum = _u16(bytes(elf[0x36:0x38]), 0), _u16(bytes(elf[0x38:0x3A]), 0)
    if phentsize < 56 or phoff + phnum * phentsize > KERNEL_IMAGE.value:
        return KERNEL_IMAGE.value
    if len(elf) < phoff + phnum * phentsize:
        return None
    ends = []
    for i in range(phnum):
        p_type, p_flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type == 1 and p_flags & 2 and not p_flags & 1:  # PT_LOAD, PF_W, not PF_X
            ends.append(p_offset + p_filesz)
    return min(max(ends), KERNEL_IMAGE.value) if ends else KERNEL_IMAGE.value


def _raw_pieces(raw: RawStream) -> Iterator[bytes]:
    while piece := raw.read(OUT):
        yield piece


def _compression(payload: bytes) -> str | None:
    for name, magic in _MAGICS:
        if payload.startswith(magic):
            return name
    return None


def _scan_payload(stream: BinaryIO, start: int) -> tuple[int, str | None]:
    """The first payload magic after `start` (within the kernel image size limit)."""
    best: tuple[int, str] | None = None
    pos, tail = start, b""
    stream.seek(start)
    while best is None and pos - start <= KERNEL_IMAGE.value and (piece := stream.read(OUT)):
        region = tail + piece
        base = pos - len(tail)
        for name, magic in _MAGICS:
            at = region.find(magic)
            if at >= 0 and (best is None or base + at < best[0]):
                best = (base + at, name)
        pos += len(piece)
        tail = region[-8:]
    if best is None:
        return 0, None
    return best


def _vmlinux(stream: BinaryIO, path: str) -> KernelImage:
    """An uncompressed vmlinux: scanned whole (no early stop: its .symtab comes first)."""
    scan = _Scan(f"{path} (IKCONFIG)", stop_early=False)
    error = scan.run(_pieces(stream, KERNEL_IMAGE.value))
    stream.seek(0)
    symtab, source = _elf_symtab(stream)
    symbols: AbstractSet[str] = symtab
    if not symtab:
        symbols, source = scan.symbols or frozenset(), "kallsyms" if scan.symbols else None
    return scan.image(path, "vmlinux", None, symbols, source, scan.banner, error)


# --- one pass over a (decompressed) vmlinux -------------------------------------------------------
#
# IKCONFIG, the banner and the kallsyms tables all sit in the plain `.rodata` of the kernel
# (kernel/configs.c pushes IKCONFIG into .rodata, init/version-timestamp.c has linux_banner), and
# scripts/link-vmlinux.sh links the kallsyms object last: once its tables are decoded, nothing
# this reader looks for can follow. Debian's 66 MB amd64 vmlinux has them ~22 MB in.

# Bytes kept behind the newest piece: kallsyms_names + markers + seqs take 1.5 MiB in Debian 6.1's
# 94,000-symbol kernel, so 4 MiB holds a kernel with ~250,000; an IKCONFIG blob is ~100 KiB. Each MiB
# here is ~2 MiB of peak memory (the window and its copy when a table is tried).
HISTORY = 4 << 20
_LOOKAHEAD = 32 << 10  # after the digit tokens: the rest of the token table and the token index
_OVERLAP = 4096  # searched again with the next piece: a banner or a marker cut by a piece boundary
_TRIES = 64  # candidate token tables tried before giving up on kallsyms


class _Scan:
    def __init__(self, config_path: str, *, stop_early: bool) -> None:
        self._config_path = config_path
        self._stop_early = stop_early
        self._pieces: deque[bytes] = deque()
        self._start = 0  # offset of the first piece kept
        self.size = 0  # bytes seen
        self.head = b""  # the first bytes (the ELF header)
        self.over_limit = False
        self.banner: str | None = None
        self.config: KernelConfig | None = None
        self.config_note = "no IKCONFIG (CONFIG_IKCONFIG not built in)"
        self.symbols: Symbols | None = None
        self._tables: _Tables | None = None
        self._config_starts: list[int] = []  # IKCFG_ST not yet decided
        self._config_ends: list[int] = []
        self._digits: list[int] = []  # candidate kallsyms token tables
        self._tries = 0

    def run(self, chunks: Iterable[bytes]) -> str | None:
        """Feed the decompressed pieces; the decoder's error, if it stopped on one."""
        iterator = iter(chunks)
        try:
            for chunk in iterator:
                # lz4's legacy blocks are 8 MiB: kept as 1 MiB pieces, the window stays small
                if any(self._feed(chunk[i : i + OUT]) for i in range(0, len(chunk), OUT)):
                    break
                del chunk
        except Corrupt as exc:
            self._finish()
            return str(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # frees the decompressor (xz's is 33 MiB) before the names are built
        self._finish()
        if self.over_limit:
            return f"decompressed past the {KERNEL_IMAGE.describe()} limit; read stopped there"
        return None

    def _feed(self, chunk: bytes) -> bool:
        if not chunk:
            return False
        if self.size + len(chunk) > KERNEL_IMAGE.value:
            chunk = chunk[: KERNEL_IMAGE.value - self.size]
            self.over_limit = True
        if len(self.head) < 4096:
            self.head += chunk[: 4096 - len(self.head)]
        # What straddles the boundary with the previous piece first, then the piece itself (no copy).
        previous = self._slice(self.size - _OVERLAP, self.size)
        old_end = self.size
        self._search(previous + chunk[:_OVERLAP], old_end - len(previous), old_end, straddling=True)
        self._search(chunk, old_end, old_end, straddling=False)
        self._pieces.append(chunk)
        self.size += len(chunk)
        done = self._decide(final=False)
        self._trim()
        return done or self.over_limit

    def _search(self, region: bytes, base: int, boundary: int, *, straddling: bool) -> None:
        """Record the markers in `region` (at offset `base`): all of them, or only those that
        straddle `boundary` (the others are found in the pieces on either side)."""

        def wanted(at: int, length: int) -> bool:
            return not straddling or base + at < boundary < base + at + length

        if self.banner is None:
            m = _BANNER.search(region)
            if m is not None and wanted(m.start(), m.end() - m.start()):
                self.banner = m.group(1).decode("ascii", "replace")
        # IKCFG_ST and IKCFG_ED in one search: bytes.find is most of this scan's time
        at = region.find(b"IKCFG_")
        while at >= 0:
            kind = region[at + 6 : at + 8]
            found = self._config_starts if kind == b"ST" else self._config_ends if kind == b"ED" else None
            if found is not None and len(found) < _TRIES and wanted(at, 8):  # more: hostile, not a kernel
                found.append(base + at)
            at = region.find(b"IKCFG_", at + 1)
        at = region.find(_DIGITS)
        while at >= 0 and len(self._digits) < _TRIES:
            if wanted(at, len(_DIGITS)):
                self._digits.append(base + at)
            at = region.find(_DIGITS, at + 1)

    def _slice(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the vmlinux, from the pieces kept."""
        parts: list[bytes] = []
        at = self._start
        for piece in self._pieces:
            lo, hi = max(start, at), min(end, at + len(piece))
            if lo < hi:
                parts.append(piece[lo - at : hi - at])
            at += len(piece)
        return b"".join(parts)

    def _trim(self) -> None:
        # a pending candidate keeps its window; an IKCONFIG blob longer than it is dropped
        keep_from = min([self.size, *self._digits[:1]]) - HISTORY
        while self._pieces and self._start + len(self._pieces[0]) <= keep_from:
            self._start += len(self._pieces.popleft())
        del self._config_ends[: bisect.bisect_left(self._config_ends, self._start)]

    def _decide(self, *, final: bool) -> bool:
        """Settle what the pieces so far allow; True when nothing more is needed."""
        self._decide_config(final)
        while self._tables is None and self._digits and self._tries < _TRIES:
            at = self._digits[0]
            if not final and self.size < at + _LOOKAHEAD:
                break
            self._digits.pop(0)
            self._tries += 1
            low = max(self._start, at - HISTORY)
            low -= low % 8  # the tables are 8-aligned: keep the window aligned the same way
            low = max(low, self._start + (-self._start % 8))
            window = self._slice(low, self.size)
            try:
                self._tables = _kallsyms_at(window, at - low)
            except (IndexError, ValueError, struct.error):
                self._tables = None
        return self._stop_early and self._tables is not None

    def _decide_config(self, final: bool) -> None:
        while self.config is None and self._config_starts:
            start = self._config_starts[0]
            blob_start = start + 8
            if start < self._start:  # dropped from the window before its end was seen
                self.config_note = f"IKCONFIG present but unreadable: longer than {HISTORY >> 20} MiB"
                self._config_starts.pop(0)
                continue
            if self.size < blob_start + 2 and not final:
                return
            end = next((e for e in self._config_ends if e > blob_start), None)
            if self._slice(blob_start, blob_start + 2) != b"\x1f\x8b" or (end is None and final):
                self._config_starts.pop(0)
                continue
            if end is None:
                return
            self._config_starts.pop(0)
            self._ikconfig(self._slice(blob_start, end))

    def _ikconfig(self, blob: bytes) -> None:
        """kernel/configs.c: `IKCFG_ST`, the gzip of .config, `IKCFG_ED` (scripts/extract-ikconfig);
        inflated within the text file size limit (a bomb there stays a note)."""
        text, error = decompress_bytes(blob, "gzip", TEXT_FILE.value + 1)
        if error is not None:
            self.config_note = f"IKCONFIG present but unreadable: {error}"
            return
        if len(text) > TEXT_FILE.value:
            self.config_note = f"IKCONFIG present but unreadable: over the {TEXT_FILE.describe()} limit"
            return
        try:
            self.config = parse_config(decode_config(text), self._config_path)
            self.config_note = "IKCONFIG found"
        except ConfigError as exc:
            self.config_note = f"IKCONFIG present but unreadable: {exc}"

    def _finish(self) -> None:
        self._decide(final=True)
        if self._tables is not None:  # after the decompressor is gone: the names take ~10 MB
            self._pieces.clear()
            symbols = Symbols(self._tables.compact())
            self.symbols = symbols if symbols else None
            self._tables = None

    def symtab(self) -> tuple[frozenset[str], str | None]:
        """The .symtab of a vmlinux that fit whole in the window (a hand-made payload)."""
        if self._start > len(self.head):
            return frozenset(), None
        return _elf_symtab(io.BytesIO(self.head[: self._start] + self._slice(self._start, self.size)))

    def image(
        self,
        path: str,
        kind: str,
        compression: str | None,
        symbols: AbstractSet[str],
        source: str | None,
        version: str | None,
        error: str | None,
    ) -> KernelImage:
        notes = [self.config_note]
        if not symbols:
            source = None
            notes.append("no symbol table and no kallsyms found")
        return KernelImage(
            path, kind, compression, self.config, symbols, source, version, error, tuple(notes)
        )


def _elf_symtab(stream: BinaryIO) -> tuple[frozenset[str], str | None]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    if stream.read(4) != b"\x7fELF":
        return frozenset(), None
    stream.seek(0)
    try:
        elf = ELFFile(stream)
        section = elf.get_section_by_name(".symtab")
        if not isinstance(section, SymbolTableSection):
            return frozenset(), None
        names = frozenset(s.name for s in section.iter_symbols() if s.name)
    except Exception:  # pyelftools raises many kinds of error on corrupt ELF
        return frozenset(), None
    return names, "symtab" if names else None


# --- kallsyms (scripts/kallsyms.c) --------------------------------------------------------------
#
# In .rodata, each table 8-aligned (4 on 32-bit): kallsyms_num_syms, kallsyms_names (per symbol:
# length as ULEB128 of up to two bytes since 6.1, one byte before; then that many token indexes;
# the first expanded character is the symbol type), kallsyms_markers (offset into names of every
# 256th symbol; .long, or a pointer on older kernels), [kallsyms_seqs_of_names since 6.2],
# kallsyms_token_table (256 NUL-terminated strings), kallsyms_token_index (256 u16 offsets into
# the token table). Digits stay literal in
# symbol names, so the token table holds "0\0" ... "9\0" at indexes 0x30..0x39: that finds it.

_MARKER_WINDOW = 6 << 20
_DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")


def kallsyms_names(data: bytes) -> frozenset[str]:
    """All symbol names in the kernel's kallsyms tables, or an empty set when none are found."""
    scan = _Scan("", stop_early=True)
    scan.run(data[i : i + OUT] for i in range(0, len(data), OUT))
    return frozenset(scan.symbols or ())


@dataclass(frozen=True)
class _Tables:
    """Where kallsyms_names lies in `data`, checked against every marker; expanded later."""

    data: bytes
    names_at: int
    end: int
    tokens: list[bytes]
    uleb: bool

    def compact(self) -> _Tables:
        """The same tables without the rest of the scan window."""
        return _Tables(
            self.data[self.names_at : self.end], 0, self.end - self.names_at, self.tokens, self.uleb
        )

    def _table(self) -> list[str]:
        return [token.decode("ascii", "replace") for token in self.tokens]

    def _spans(self) -> Iterator[tuple[int, int]]:
        """(start, length) of each name's token indexes."""
        data, pos, end = self.data, self.names_at, self.end
        while pos < end:
            length = data[pos]
            pos += 1
            if self.uleb and length & 0x80 and pos < end:
                length = (length & 0x7F) | (data[pos] << 7)
                pos += 1
            yield pos, length
            pos += length

    def has(self, symbol: str) -> bool:
        """Whether `symbol` is one of the names, expanding only those whose first tokens can start
        it (after the type letter): a few hundred instead of 90,000. A first token that is the type
        letter alone (`t`, `T`, `d` often are: half the names) leaves it to the second token."""
        table = self._table()
        # per token index, as a name's first token: can it start `symbol`? None: the next decides
        first = [symbol.startswith(t[1:]) if len(t) > 1 else None if t else True for t in table]
        second = [symbol.startswith(t) for t in table]
        data, size = self.data, len(self.data)
        for start, length in self._spans():
            if not length or start >= size:
                continue
            ok = first[data[start]]
            if ok is None:
                ok = length < 2 or start + 1 >= size or second[data[start + 1]]
            if ok:
                name = data[start : start + length].decode("latin-1").translate(table)
                if name[1:] == symbol and len(name) > 1:
                    return True
        return False

    def any_name(self) -> bool:
        """Whether some name has more than its type letter (an empty set of names otherwise)."""
        table = self._table()
        data = self.data
        return any(
            len(data[start : start + length].decode("latin-1").translate(table)) > 1
            for start, length in self._spans()
        )

    def names(self) -> frozenset[str]:
        # One str.translate per name (the table, a list, maps token index → token text) instead of
        # a join of token bytes: a third faster on 90,000 names.
        table = self._table()
        text, base = self.data[self.names_at : self.end].decode("latin-1"), self.names_at
        expanded = (text[start - base : start - base + n].translate(table) for start, n in self._spans())
        return frozenset(name[1:] for name in expanded if len(name) > 1)  # name[0] is the symbol type


class Symbols(AbstractSet[str]):
    """The names in a kernel's kallsyms tables, expanded when first needed: `domu` asks whether one
    symbol is there, which needs a few hundred of the ~90,000 names (expanding them all costs as
    much as a fifth of decompressing the kernel)."""

    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self._names: frozenset[str] | None = None

    def _all(self) -> frozenset[str]:
        if self._names is None:
            self._names = self._tables.names()
        return self._names

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        return item in self._names if self._names is not None else self._tables.has(item)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:
        if self._names is not None:
            return bool(self._names)
        return self._tables.any_name()

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return f"Symbols({len(self)} kallsyms names)"


def _kallsyms_at(data: bytes, digits_at: int) -> _Tables | None:
    # Walk back over the strings before "0" (index 0x30) to the start of entry 1. Entry 0 may
    # touch whatever precedes the table with no NUL between: kallsyms_token_index says where
    # it starts (index[i] is entry i's offset, index[0] == 0).
    entry1 = digits_at
    for _ in range(0x2F):
        entry1 = data.rfind(b"\0", 0, entry1 - 1) + 1
        if entry1 <= 1:
            return None
    rel: list[int] = []
    tokens: list[bytes] = []
    pos = entry1
    for _ in range(255):
        end = data.find(b"\0", pos)
        if end < 0 or end - pos > 64:
            return None
        rel.append(pos - entry1)
        tokens.append(data[pos:end])
        pos = end + 1
    for first_len in range(1, 65):
        offsets = [0] + [first_len + 1 + r for r in rel]
        if _token_index_at(data, pos, offsets) is None:
            continue
        table_at = entry1 - first_len - 1
        markers, markers_at = _markers_before(data, table_at)
        if markers is None:
            return None
        first = data[table_at : entry1 - 1]
        return _decode_names(data, [first, *tokens], markers, markers_at)
    return None


def _token_index_at(data: bytes, pos: int, offsets: list[int]) -> int | None:
    if max(offsets) >= 0x10000:
        return None
    want = struct.pack("<256H", *offsets)
    # Right after the table, `.balign`ed: within 8 bytes whatever the file offset's alignment.
    at = data.find(want, pos, pos + 8 + 512)
    return None if at < 0 else at


_BLOCK = 64 << 10  # words unpacked at a time when searching backwards for the markers


def _markers_before(data: bytes, table_at: int) -> tuple[list[int] | None, int]:
    """kallsyms_markers: 0, then offsets growing by a few KiB per 256 names. Right before the
    token table, or (since 6.2, and in backports) before kallsyms_seqs_of_names (3 bytes a
    symbol) that sits between them: search the few MiB before the token table, nearest first
    (a block of words at a time: the whole window as Python ints would take ~50 MB)."""
    for width, fmt in ((4, "I"), (8, "Q")):
        low = max(0, table_at - _MARKER_WINDOW)
        low -= low % width
        count = (table_at - low) // width

        def word(i: int, width: int = width, fmt: str = fmt, low: int = low) -> int:
            return int(struct.unpack_from(f"<{fmt}", data, low + i * width)[0])

        hi = count
        while hi > 0:
            lo = max(0, hi - _BLOCK // width)
            block = struct.unpack_from(f"<{hi - lo}{fmt}", data, low + lo * width)
            for k in range(len(block) - 1, -1, -1):
                i = lo + k
                if block[k] != 0 or i > count - 3 or not _plausible_step(word(i + 1)):
                    continue
                values = [0]
                j = i + 1
                while j < count and _plausible_step((w := word(j)) - values[-1]):
                    values.append(w)
                    j += 1
                if len(values) >= 3:
                    return values, low + i * width
            hi = lo
    return None, 0


def _plausible_step(step: int) -> bool:
    return 256 * 2 <= step <= 256 * 300  # 256 names of 2..300 bytes each


def _decode_names(data: bytes, tokens: list[bytes], markers: list[int], markers_at: int) -> _Tables | None:
    last = markers[-1]
    high = markers_at - last - 2
    low = max(0, high - 256 * 300)
    for names_at in range(high - high % 4, low, -4):
        count = _u32(data, names_at - 8) or _u32(data, names_at - 4)
        if not (len(markers) - 1) * 256 < count <= len(markers) * 256:
            continue
        for uleb in (True, False):
            end = _walk(data, names_at, count, markers, uleb)
            if end is not None:
                return _Tables(data, names_at, end, tokens, uleb)
    return None


def _walk(data: bytes, names_at: int, count: int, markers: list[int], uleb: bool) -> int | None:
    """The end of `count` names from `names_at`, if every 256th starts where its marker says."""
    pos = names_at
    for i in range(count):
        if i % 256 == 0 and markers[i >> 8] != pos - names_at:
            return None
        length = data[pos]
        pos += 1
        if uleb and length & 0x80:
            length = (length & 0x7F) | (data[pos] << 7)
            pos += 1
        if length == 0:
            return None
        pos += length
    return min(pos, len(data))
