"""Kernel `.config` files: `CONFIG_X=value` and `# CONFIG_X is not set`, each with its line.

Two forms exist. A full `.config` (scripts/kconfig/confdata.c `conf_write`) lists every visible
symbol and always carries comment lines (its "Automatically generated file" header, menu titles);
a symbol absent from it is `n`. A minimal one (`make savedefconfig`, `conf_write_defconfig`; Alpine's
aports keep configs so) lists only what differs from Kconfig's defaults and has no other comment:
an absent symbol there takes its *default*, which only the kernel tree's Kconfig files know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pciback_doctor.facts.compression import compression_of, decompress_bytes
from pciback_doctor.facts.limits import TEXT_FILE
from pciback_doctor.model import Evidence

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
# conf_write's header: "# Linux/x86 6.1.0 Kernel Configuration"; 2.6-era: "# Linux kernel version: 2.6.18"
_HEADER = re.compile(r"^# Linux/(\S+) (\S+) Kernel Configuration$")
_OLD_HEADER = re.compile(r"^# Linux kernel version: (\S+)$")
_BOM = b"\xef\xbb\xbf"
# the compressions a config is kept in (/proc/config.gz, config.xz in packages, .zst/.bz2 archives)
_COMPRESSIONS = ("gzip", "xz", "zstd", "bzip2")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class KernelConfig:
    path: str
    values: dict[str, tuple[str, int]]  # name -> (value, line); "n" for "is not set"
    minimal: bool = False  # defconfig form: an absent symbol takes its Kconfig default
    header_arch: str | None = None  # from the header line: x86, arm64, arm, ...
    version: str | None = None  # kernel version from the header line
    # set when Kconfig expanded a minimal file: how; values the file did not write came from there
    expanded_by: str | None = None

    def get(self, name: str) -> str:
        """`y`, `m`, a string/number value, or `n` when unset or absent. Absent means `n` only in a
        full config: ask `known()` first when the config may be minimal."""
        value = self.values.get(name)
        return "n" if value is None else value[0]

    def known(self, name: str) -> bool:
        """Does the file itself decide this symbol's value (written, or absent from a full config)?"""
        return name in self.values or not self.minimal

    def evidence(self, name: str) -> Evidence:
        value = self.values.get(name)
        if value is not None and value[1] == 0:  # a default Kconfig filled in (see `expanded`)
            shown = f"# {name} is not set" if value[0] == "n" else f"{name}={value[0]}"
            return Evidence(self.path, None, f"{shown} (Kconfig's default, {self.expanded_by})")
        if value is None:
            if self.expanded_by:
                return Evidence(self.path, None, f"{name} absent after {self.expanded_by} (= n)")
            if self.minimal:
                return Evidence(self.path, None, f"{name} absent (defconfig form: Kconfig's default applies)")
            return Evidence(self.path, None, f"{name} absent (= n)")
        text = f"# {name} is not set" if value[0] == "n" else f"{name}={value[0]}"
        return Evidence(self.path, value[1], text)

    def expanded(self, full: KernelConfig, how: str) -> KernelConfig:
        """This minimal config with Kconfig's expansion of it (`full`, e.g. from `make olddefconfig`):
        a value the file wrote keeps its line here; the rest cite the expansion (line 0)."""
        values = {
            name: (value, mine[1] if (mine := self.values.get(name)) and mine[0] == value else 0)
            for name, (value, _) in full.values.items()
        }
        return KernelConfig(self.path, values, False, full.header_arch, full.version, how)


def decode_config(data: bytes) -> str:
    """Plain or compressed (gzip, xz, zstd, bzip2) config text, a UTF-8 BOM dropped. Decompression
    stops at the text-file limit: a bomb is refused, never held in memory."""
    kind = compression_of(data[:8])
    if kind in _COMPRESSIONS:
        assert kind is not None
        out, error = decompress_bytes(data, kind, TEXT_FILE.value + 1)
        if len(out) > TEXT_FILE.value:
            raise ConfigError(f"decompresses to more than the {TEXT_FILE.describe()} limit")
        if error is not None:
            raise ConfigError(f"corrupt {kind} data: {error}")
        data = out
    data = data.removeprefix(_BOM)
    if b"\0" in data[:4096]:
        raise ConfigError("binary data, not a kernel config")
    return data.decode("utf-8", "replace")


def parse_config(text: str, path: str) -> KernelConfig:
    values: dict[str, tuple[str, int]] = {}
    recognised = 0
    comments = 0
    header_arch = version = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if m := _SET.match(line):
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values[m.group(1)] = (value, number)
            recognised += 1
        elif m := _UNSET.match(line):
            values[m.group(1)] = ("n", number)
            recognised += 1
        elif line.startswith("#"):
            comments += 1
            if m := _HEADER.match(line):
                header_arch, version = m.group(1), m.group(2)
            elif m := _OLD_HEADER.match(line):
                version = m.group(1)
        elif line:
            raise ConfigError(f"line {number} is not a kernel config line: {line[:60]!r}")
    if recognised == 0:
        raise ConfigError("no CONFIG_ lines: not a kernel config")
    return KernelConfig(path, values, comments == 0, header_arch, version)
