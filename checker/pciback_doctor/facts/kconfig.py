"""Kernel `.config` files: `CONFIG_X=value` and `# CONFIG_X is not set`, each with its line."""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass

from pciback_doctor.model import Evidence

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class KernelConfig:
    path: str
    values: dict[str, tuple[str, int]]  # name -> (value, line); "n" for "is not set"

    def get(self, name: str) -> str:
        """`y`, `m`, a string/number value, or `n` when unset or absent (Kconfig's own default)."""
        value = self.values.get(name)
        return "n" if value is None else value[0]

    def evidence(self, name: str) -> Evidence:
        value = self.values.get(name)
        if value is None:
            return Evidence(self.path, None, f"{name} absent (= n)")
        text = f"# {name} is not set" if value[0] == "n" else f"{name}={value[0]}"
        return Evidence(self.path, value[1], text)


def decode_config(data: bytes) -> str:
    """Plain or gzip-compressed (`config.gz`) config text."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"corrupt gzip: {exc}") from None
    if b"\0" in data[:4096]:
        raise ConfigError("binary data, not a kernel config")
    return data.decode("utf-8", "replace")


def parse_config(text: str, path: str) -> KernelConfig:
    values: dict[str, tuple[str, int]] = {}
    recognised = 0
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
        elif line and not line.startswith("#"):
            raise ConfigError(f"line {number} is not a kernel config line: {line[:60]!r}")
    if recognised == 0:
        raise ConfigError("no CONFIG_ lines: not a kernel config")
    return KernelConfig(path, values)
