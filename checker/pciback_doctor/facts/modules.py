"""A kernel's module tree: modules.builtin(.modinfo), modules.alias/dep/softdep and `.ko` modinfo."""

from __future__ import annotations

import fnmatch
import functools
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from pciback_doctor.facts.compression import decompress_bytes
from pciback_doctor.facts.limits import ALIAS_GLOB, MODULE_FILE
from pciback_doctor.model import Evidence

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def normalize(name: str) -> str:
    """kmod's modname_normalize: `-` and `_` are the same in module names."""
    return name.replace("-", "_")


def module_name(path: str) -> str:
    """`kernel/drivers/xen/xen-pciback/xen-pciback.ko.xz` -> `xen_pciback`."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            return normalize(base[: -len(suffix)])
    return normalize(base)


@dataclass(frozen=True)
class Alias:
    pattern: str
    module: str
    evidence: Evidence

    def matches(self, name: str) -> bool:
        """fnmatch(pattern, name) as kmod calls it (case-sensitive); the literal head of the
        pattern is checked first, so 25,000 modules.alias globs are not all compiled."""
        head = _GLOB.split(self.pattern, 1)[0]
        return name.startswith(head) and self._regex.match(name) is not None

    @functools.cached_property
    def _regex(self) -> re.Pattern[str]:
        # compiled once per alias: fnmatch's own cache holds 32,768 and thrashes beyond
        return re.compile(fnmatch.translate(self.pattern))


_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ModuleTree:
    release: str
    path: str  # directory relative to the root
    builtin: Mapping[str, Evidence]  # module name -> modules.builtin line
    builtin_aliases: tuple[Alias, ...]  # from modules.builtin.modinfo (where the kernel records them)
    builtin_params: Mapping[str, tuple[str, ...]]  # module -> parameter names
    aliases: tuple[Alias, ...]  # modules.alias
    files: Mapping[str, str]  # module name -> path relative to the module dir
    softdep_text: str = ""  # modules.softdep: modprobe.d syntax, read after the config files
    has_index: bool = True  # modules.dep / modules.alias present (depmod has run)
    problems: tuple[Evidence, ...] = field(default=())

    @property
    def records_builtin_pci_ids(self) -> bool:
        """modules.builtin.modinfo lists the PCI ids of built-in drivers (kernels that record
        built-in modaliases); otherwise only the kernel image itself has them."""
        return any(a.pattern.startswith("pci:") for a in self.builtin_aliases)

    def is_builtin(self, module: str) -> bool:
        return normalize(module) in self.builtin

    def has_file(self, module: str) -> bool:
        return normalize(module) in self.files

    def lookup_modalias(self, modalias: str) -> tuple[list[Alias], list[Alias]]:
        """(modules, built-ins) whose alias globs match: kmod matches with fnmatch, case-sensitively."""
        mods = [a for a in self.aliases if a.matches(modalias)]
        builtins = [a for a in self.builtin_aliases if a.matches(modalias)]
        return mods, builtins


def parse_builtin(text: str, path: str) -> dict[str, Evidence]:
    result: dict[str, Evidence] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line:
            result[module_name(line)] = Evidence(path, number, line)
    return result


def parse_builtin_modinfo(data: bytes, path: str) -> tuple[tuple[Alias, ...], dict[str, tuple[str, ...]]]:
    """`module.key=value` records separated by NULs (kernel: scripts/link-vmlinux.sh)."""
    aliases: list[Alias] = []
    params: dict[str, list[str]] = {}
    for record in data.split(b"\0"):
        text = record.decode("utf-8", "replace")
        module, dot, rest = text.partition(".")
        key, eq, value = rest.partition("=")
        if not (dot and eq):
            continue
        module = normalize(module)
        if key == "alias" and len(value) <= ALIAS_GLOB.value:
            aliases.append(Alias(value, module, Evidence(path, None, text)))
        elif key == "parmtype":
            params.setdefault(module, []).append(value.split(":", 1)[0])
    return tuple(aliases), {m: tuple(p) for m, p in params.items()}


def parse_alias_file(text: str, path: str, prefix: str = "pci:") -> tuple[Alias, ...]:
    """`alias GLOB module` lines of modules.alias; only PCI ones by default (the doctor resolves
    nothing else, and skipping the other ~70% keeps a real tree's 26,000 lines cheap)."""
    result = []
    wanted = f"alias {prefix}"
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(wanted):
            parts = line.split()
            if len(parts) == 3 and len(parts[1]) <= ALIAS_GLOB.value:
                result.append(Alias(parts[1], normalize(parts[2]), Evidence(path, number, line)))
    return tuple(result)


def parse_dep(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        head, colon, _ = line.partition(":")
        if colon:
            result.setdefault(module_name(head.strip()), head.strip())
    return result


class ModinfoError(ValueError):
    pass


@dataclass(frozen=True)
class ModuleInfo:
    """A `.ko`'s `.modinfo` section: `key=value` strings (params as `parm`/`parmtype`)."""

    path: str
    fields: tuple[tuple[str, str], ...]

    def values(self, key: str) -> list[str]:
        return [v for k, v in self.fields if k == key]

    @property
    def params(self) -> dict[str, str]:
        """Parameter name -> type (`charp`, `bool`, …) from `parmtype=name:type`."""
        out: dict[str, str] = {}
        for value in self.values("parmtype"):
            name, _, kind = value.partition(":")
            out[name] = kind
        return out


_MODULE_COMPRESSIONS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def decompress_module(data: bytes) -> bytes:
    """A module file's ELF bytes: plain, xz, gzip or zstd (kmod: libkmod-file.c), at most
    MODULE_FILE of them: a module that decompresses to more is a bomb, not a driver."""
    kind = next((name for magic, name in _MODULE_COMPRESSIONS if data.startswith(magic)), None)
    if kind is None:
        return data
    out, error = decompress_bytes(data, kind, MODULE_FILE.value + 1)
    if error is not None:
        raise ModinfoError(f"corrupt compressed module: {error}")
    if len(out) > MODULE_FILE.value:
        raise ModinfoError(f"decompresses to more than the {MODULE_FILE.describe()} limit")
    return out


def _modinfo_section(elf: bytes) -> bytes:
    """The raw `.modinfo` section, found the way kmod does (libkmod-elf.c): the section table and
    every section must lie inside the file, or the module is refused. Sections are not
    decompressed (SHF_COMPRESSED): neither kmod nor the kernel's module loader does."""
    if elf[:4] != b"\x7fELF" or elf[4:5] not in (b"\1", b"\2") or elf[5:6] not in (b"\1", b"\2"):
        raise ModinfoError("not a kernel module ELF: bad ELF identification")
    wide, end = elf[4] == 2, "<" if elf[5] == 1 else ">"
    # e_shoff, e_shentsize, e_shnum, e_shstrndx; then sh_name, sh_offset, sh_size, sh_link
    header, section = (f"{end}40xQ10xHHH", f"{end}I20xQQI") if wide else (f"{end}32xI10xHHH", f"{end}I12xIII")
    try:
        shoff, entsize, count, strndx = struct.unpack_from(header, elf)
        if entsize < struct.calcsize(section) or shoff > len(elf):
            raise ModinfoError("not a kernel module ELF: bad section table")

        def entry(i: int) -> tuple[int, int, int, int]:
            name, offset, size, link = struct.unpack_from(section, elf, shoff + i * entsize)
            return name, offset, size, link

        first = entry(0) if len(elf) - shoff >= entsize else (0, 0, 0, 0)
        count = count or first[2]  # e_shnum 0: the count is section 0's sh_size (gABI)
        strndx = first[3] if strndx == 0xFFFF else strndx  # SHN_XINDEX: it is in sh_link
        if count * entsize > len(elf) - shoff or strndx >= count:
            raise ModinfoError("not a kernel module ELF: section table outside the file")

        def body(offset: int, size: int) -> bytes:
            if offset > len(elf) or size > len(elf) - offset:
                raise ModinfoError("not a kernel module ELF: a section lies outside the file")
            return elf[offset : offset + size]

        names = body(*entry(strndx)[1:3])
        for i in range(count):
            name, offset, size, _ = entry(i)
            if names[name : name + 9] == b".modinfo\0":
                return body(offset, size)
    except struct.error as exc:
        raise ModinfoError(f"not a kernel module ELF: {exc}") from None
    raise ModinfoError("no .modinfo section: not a kernel module")


def read_modinfo(data: bytes, path: str) -> ModuleInfo:
    raw = _modinfo_section(decompress_module(data))
    fields = []
    for record in raw.split(b"\0"):
        key, eq, value = record.decode("utf-8", "replace").partition("=")
        if eq:
            fields.append((key, value))
    return ModuleInfo(path, tuple(fields))
