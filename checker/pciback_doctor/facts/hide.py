"""The backend's `hide` parameter, parsed exactly as pcistub_init() in
drivers/xen/xen-pciback/pci_stub.c does with sscanf.

The kernel tries, at each position, `" (%x:%x:%x.%x) %n"` (with the `.*` and `*.*` wildcard
variants) and then the domain-less `" (%x:%x.%x) %n"` forms. Whitespace around entries is
allowed, nothing else separates them (a comma is a parse error). One bad entry makes init return
-EINVAL: the built-in driver never registers and a module load fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HIDE_MAX = 1024  # param_set_charp: longer values are -ENOSPC
_HEX = "0123456789abcdefABCDEF"


@dataclass(frozen=True)
class HideEntry:
    domain: int
    bus: int
    slot: int | None  # None: `*` (all slots)
    func: int | None  # None: `*` (all functions)
    start: int
    end: int

    @property
    def wildcard(self) -> bool:
        return self.slot is None or self.func is None

    def matches(self, domain: int, bus: int, slot: int, func: int) -> bool:
        return (
            self.domain == domain
            and self.bus == bus
            and self.slot in (None, slot)
            and self.func in (None, func)
        )

    def __str__(self) -> str:
        slot = "*" if self.slot is None else f"{self.slot:02x}"
        func = "*" if self.func is None else f"{self.func:x}"
        return f"{self.domain:04x}:{self.bus:02x}:{slot}.{func}"


@dataclass(frozen=True)
class HideError:
    position: int  # offset of the offending character in the value
    message: str

    def caret(self, value: str) -> str:
        return f"{value}\n{' ' * self.position}^ {self.message}"


@dataclass(frozen=True)
class HideSpec:
    value: str
    entries: tuple[HideEntry, ...]
    error: HideError | None

    @property
    def valid(self) -> bool:
        return self.error is None

    def matches(self, domain: int, bus: int, slot: int, func: int) -> bool:
        return self.valid and any(e.matches(domain, bus, slot, func) for e in self.entries)

    def intended(self) -> tuple[HideEntry, ...]:
        """What the admin meant to hide, even past a syntax error: each parenthesised group parsed on
        its own. The kernel hides none of it when the value is malformed; this is for reporting."""
        if self.valid:
            return self.entries
        found: list[HideEntry] = []
        for m in re.finditer(r"\([^()]*\)", self.value):
            single = parse_hide(m.group(0))
            found.extend(single.entries)
        return tuple(found)


class _Scan:
    """A cursor with the kernel vsscanf's rules; `far` remembers the furthest point reached."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos, self.far = text, pos, pos

    def _mark(self) -> None:
        self.far = max(self.far, self.pos)

    def spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        self._mark()

    def literal(self, ch: str) -> bool:
        if self.pos < len(self.text) and self.text[self.pos] == ch:
            self.pos += 1
            self._mark()
            return True
        return False

    def hex(self) -> int | None:
        # vsscanf skips white space before a number; simple_strtoull takes an optional 0x.
        self.spaces()
        text, i = self.text, self.pos
        if text[i : i + 2].lower() == "0x" and i + 2 < len(text) and text[i + 2] in _HEX:
            i += 2
        j = i
        while j < len(text) and text[j] in _HEX:
            j += 1
        if j == i:
            return None
        self.pos = j
        self._mark()
        return int(text[i:j], 16)


def _entry(text: str, pos: int, with_domain: bool) -> tuple[HideEntry | None, int, str]:
    """Try one sscanf form at pos: (entry or None, furthest offset reached, what was expected)."""
    s = _Scan(text, pos)
    s.spaces()
    start = s.pos
    if not s.literal("("):
        return None, s.far, "expected '(' to start an entry"
    domain = 0
    if with_domain:
        got = s.hex()
        if got is None or not s.literal(":"):
            return None, s.far, "expected a hex domain followed by ':'"
        domain = got
    bus = s.hex()
    if bus is None or not s.literal(":"):
        return None, s.far, "expected a hex bus followed by ':'"
    slot: int | None = None
    func: int | None = None
    if s.literal("*"):
        # `*.*` is the only form with a wildcard slot
        if not (s.literal(".") and s.literal("*")):
            return None, s.far, "a wildcard slot must be written '*.*'"
    else:
        slot = s.hex()
        if slot is None or not s.literal("."):
            return None, s.far, "expected a hex slot followed by '.'"
        if not s.literal("*"):
            func = s.hex()
            if func is None:
                return None, s.far, "expected a hex function or '*'"
    if not s.literal(")"):
        return None, s.far, "expected ')' to close the entry"
    end = s.pos
    s.spaces()
    entry = HideEntry(domain, bus, slot, func, start, end)
    return entry, s.pos, ""


def _range_error(e: HideEntry, text: str) -> HideError | None:
    # pcistub_device_id_add() rejects what does not fit a PCI address.
    if e.domain > 0xFFFF:
        return HideError(e.start + 1, f"domain {e.domain:#x} is above 0xffff")
    if e.bus > 0xFF:
        return HideError(e.start + 1, f"bus {e.bus:#x} is above 0xff")
    if e.slot is not None and e.slot >= 32:
        return HideError(e.start + 1, f"slot {e.slot:#x} is not below 0x20")
    if e.func is not None and e.func >= 8:
        return HideError(e.start + 1, f"function {e.func:#x} is not below 8")
    return None


def parse_hide(value: str) -> HideSpec:
    entries: list[HideEntry] = []
    if len(value) > HIDE_MAX:
        return HideSpec(value, (), HideError(HIDE_MAX, f"longer than {HIDE_MAX} characters"))
    pos = 0
    while pos < len(value):
        best_far, best_why = pos, ""
        for with_domain in (True, False):
            entry, far, why = _entry(value, pos, with_domain)
            if entry is not None:
                break
            if far > best_far or not best_why:
                best_far, best_why = far, why
        if entry is None:
            at = min(best_far, len(value)) if value.strip() else 0
            return HideSpec(value, tuple(entries), HideError(at, best_why))
        if error := _range_error(entry, value):
            return HideSpec(value, tuple(entries), error)
        entries.append(entry)
        pos = far
    return HideSpec(value, tuple(entries), None)
