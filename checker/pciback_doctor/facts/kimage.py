"""Kernel images: a bzImage or a vmlinux ELF → its embedded config, symbols and version.

bzImage layout from arch/x86/boot/header.S (boot protocol, Documentation/arch/x86/boot.rst); the
payload is what arch/x86/boot/compressed/Makefile built: `objcopy -S vmlinux` compressed, with the
uncompressed size appended as 4 bytes. The embedded config is kernel/configs.c's
`IKCFG_ST` + gzip + `IKCFG_ED` (what scripts/extract-ikconfig looks for). The payload vmlinux has no
`.symtab` (`objcopy -S`), so symbols come from the kernel's own kallsyms tables
(scripts/kallsyms.c), decoded from the raw bytes; an unstripped vmlinux gives its `.symtab`.
Pure and total: any bytes in, a `KernelImage` out (`error` says what went wrong), never an exception.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field

from pciback_doctor.facts.compression import decompress_bytes
from pciback_doctor.facts.kconfig import ConfigError, KernelConfig, decode_config, parse_config

MAX_VMLINUX = 512 << 20  # a decompressed vmlinux is 30-60 MB; anything past this is not one
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
    symbols: frozenset[str]
    symbol_source: str | None  # symtab | kallsyms | None
    version: str | None  # from the `Linux version` banner (or the bzImage header)
    error: str | None = None  # why the image could not be read (fully)
    notes: tuple[str, ...] = field(default=())  # e.g. "no IKCONFIG"

    @property
    def has_ikconfig(self) -> bool:
        return self.config is not None


def inspect_kernel_image(data: bytes, path: str) -> KernelImage:
    try:
        return _inspect(data, path)
    except MemoryError:
        return KernelImage(path, "unknown", None, None, frozenset(), None, None, "out of memory")


def _inspect(data: bytes, path: str) -> KernelImage:
    if data[0x202:0x206] == b"HdrS":
        return _bzimage(data, path)
    if data[:4] == b"\x7fELF":
        return _vmlinux(data, path, "vmlinux", None, None)
    return KernelImage(
        path,
        "unknown",
        None,
        None,
        frozenset(),
        None,
        _banner(data),
        "neither a bzImage (no HdrS at 0x202) nor an ELF vmlinux",
    )


# --- bzImage ------------------------------------------------------------------------------------


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _header_version(data: bytes) -> str | None:
    """header.S `kernel_version`: a pointer (minus 0x200) to `UTS_RELEASE (user@host) #...`."""
    ptr = _u16(data, 0x20E)
    if ptr == 0:
        return None
    start = ptr + 0x200
    end = data.find(b"\0", start, start + 256)
    if end < 0:
        return None
    words = data[start:end].decode("ascii", "replace").split()
    return words[0] if words else None


def _bzimage(data: bytes, path: str) -> KernelImage:
    version = _header_version(data)
    vmlinux, compression, error = bzimage_vmlinux(data)
    if vmlinux is None:
        return KernelImage(path, "bzImage", compression, None, frozenset(), None, version, error)
    return _vmlinux(vmlinux, path, "bzImage", compression, version, error)


def vmlinux_of(data: bytes) -> tuple[bytes | None, str | None]:
    """The vmlinux ELF of a kernel image (a bzImage's decompressed payload, or the ELF itself),
    or None and why not."""
    if data[:4] == b"\x7fELF":
        return data, None
    if data[0x202:0x206] != b"HdrS":
        return None, "neither a bzImage (no HdrS at 0x202) nor an ELF vmlinux"
    try:
        vmlinux, _compression, error = bzimage_vmlinux(data)
    except MemoryError:
        return None, "out of memory"
    return vmlinux, error


def bzimage_vmlinux(data: bytes) -> tuple[bytes | None, str | None, str | None]:
    """(vmlinux, payload compression, error) of a bzImage."""
    setup_sects = data[0x1F1] or 4  # header.S / boot.rst: 0 means 4
    pm_start = (setup_sects + 1) * 512
    protocol = _u16(data, 0x206)
    payload = b""
    if protocol >= 0x208:  # payload_offset/payload_length exist since boot protocol 2.08
        off, length = _u32(data, 0x248), _u32(data, 0x24C)
        start = pm_start + off
        if length and start + length <= len(data):
            payload = data[start : start + length]
    compression = _compression(payload)
    if compression is None:
        # Old protocol or a bad header: scan like scripts/extract-vmlinux does.
        payload, compression = _scan_payload(data[pm_start:])
    if compression is None:
        return None, None, "no known payload found"
    vmlinux, error = _decompress(compression, payload)
    return vmlinux, compression, error


def _compression(payload: bytes) -> str | None:
    for name, magic in _MAGICS:
        if payload.startswith(magic):
            return name
    return None


def _scan_payload(data: bytes) -> tuple[bytes, str | None]:
    best: tuple[int, str] | None = None
    for name, magic in _MAGICS:
        at = data.find(magic)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, name)
    if best is None:
        return b"", None
    return data[best[0] :], best[1]


def _decompress(kind: str, payload: bytes) -> tuple[bytes | None, str | None]:
    """The decompressed vmlinux (or None) and an error/warning message: the same decoders as
    the initramfs reader (lib/decompress.c has one set of them for both too)."""
    if kind == "none":  # CONFIG_KERNEL_UNCOMPRESSED: the payload is the ELF itself
        return payload, None
    out, error = decompress_bytes(payload, kind, MAX_VMLINUX)
    if not out:
        return (
            None,
            f"{kind} payload corrupt: {error}" if error else f"{kind} payload decompressed to nothing",
        )
    if len(out) >= MAX_VMLINUX:
        return out, f"decompressed payload cut at {MAX_VMLINUX >> 20} MiB"
    # the kernel build appends the uncompressed size after the stream; a decoder that reads it
    # as more data stops there, with the whole vmlinux already out
    return out, None


def _banner(data: bytes) -> str | None:
    m = _BANNER.search(data)
    return m.group(1).decode("ascii", "replace") if m else None


def _vmlinux(
    data: bytes,
    path: str,
    kind: str,
    compression: str | None,
    header_version: str | None,
    error: str | None = None,
) -> KernelImage:
    notes: list[str] = []
    config, note = _ikconfig(data, f"{path} (IKCONFIG)")
    notes.append(note)
    symbols, source = _elf_symtab(data)
    if not symbols:
        symbols, source = kallsyms_names(data), "kallsyms"
        if not symbols:
            source = None
            notes.append("no symbol table and no kallsyms found")
    return KernelImage(
        path,
        kind,
        compression,
        config,
        symbols,
        source,
        _banner(data) or header_version,
        error,
        tuple(notes),
    )


def _ikconfig(data: bytes, path: str) -> tuple[KernelConfig | None, str]:
    """kernel/configs.c: `IKCFG_ST`, the gzip of .config, `IKCFG_ED` (scripts/extract-ikconfig)."""
    start = data.find(b"IKCFG_ST")
    problem = "no IKCONFIG (CONFIG_IKCONFIG not built in)"
    while start >= 0:
        blob_start = start + 8
        end = data.find(b"IKCFG_ED", blob_start)
        if data[blob_start : blob_start + 2] == b"\x1f\x8b" and end > blob_start:
            try:
                text = decode_config(data[blob_start:end])
                return parse_config(text, path), "IKCONFIG found"
            except ConfigError as exc:
                problem = f"IKCONFIG present but unreadable: {exc}"
        start = data.find(b"IKCFG_ST", blob_start)
    return None, problem


def _elf_symtab(data: bytes) -> tuple[frozenset[str], str | None]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    if data[:4] != b"\x7fELF":
        return frozenset(), None
    try:
        elf = ELFFile(io.BytesIO(data))
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
    at = data.find(_DIGITS)
    tries = 0
    while at >= 0 and tries < 64:
        tries += 1
        try:
            names = _kallsyms_at(data, at)
        except (IndexError, ValueError, struct.error):
            names = None
        if names:
            return names
        at = data.find(_DIGITS, at + 1)
    return frozenset()


def _kallsyms_at(data: bytes, digits_at: int) -> frozenset[str] | None:
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


def _markers_before(data: bytes, table_at: int) -> tuple[list[int] | None, int]:
    """kallsyms_markers: 0, then offsets growing by a few KiB per 256 names. Right before the
    token table, or (since 6.2, and in backports) before kallsyms_seqs_of_names (3 bytes a
    symbol) that sits between them: search the few MiB before the token table, nearest first."""
    for width, fmt in ((4, "I"), (8, "Q")):
        low = max(0, table_at - _MARKER_WINDOW)
        low -= low % width
        count = (table_at - low) // width
        words = struct.unpack_from(f"<{count}{fmt}", data, low)
        for i in range(count - 3, -1, -1):
            if words[i] != 0 or not _plausible_step(words[i + 1] - words[i]):
                continue
            values = [0]
            j = i + 1
            while j < count and _plausible_step(words[j] - values[-1]):
                values.append(words[j])
                j += 1
            if len(values) >= 3:
                return values, low + i * width
    return None, 0


def _plausible_step(step: int) -> bool:
    return 256 * 2 <= step <= 256 * 300  # 256 names of 2..300 bytes each


def _decode_names(
    data: bytes, tokens: list[bytes], markers: list[int], markers_at: int
) -> frozenset[str] | None:
    last = markers[-1]
    high = markers_at - last - 2
    low = max(0, high - 256 * 300)
    for names_at in range(high - high % 4, low, -4):
        count = _u32(data, names_at - 8) or _u32(data, names_at - 4)
        if not (len(markers) - 1) * 256 < count <= len(markers) * 256:
            continue
        for uleb in (True, False):
            names = _decode_from(data, names_at, count, tokens, markers, uleb)
            if names is not None:
                return names
    return None


def _decode_from(
    data: bytes,
    names_at: int,
    count: int,
    tokens: list[bytes],
    markers: list[int],
    uleb: bool,
) -> frozenset[str] | None:
    pos = names_at
    out: set[str] = set()
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
        name = b"".join([tokens[b] for b in data[pos : pos + length]])
        pos += length
        if len(name) > 1:
            out.add(name[1:].decode("ascii", "replace"))  # name[0] is the symbol type
    return frozenset(out)
