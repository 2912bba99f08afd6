"""The admin's waivers file (`--waivers F`): findings they have accepted, each with a reason and maybe an
expiry date. TOML, one table per waiver:

    [[waiver]]
    id = "PB305"                        # a check ID, or a prefix: "PB3" is the whole PB3xx range
    device = "0000:05:00.0"             # optional: only findings about this device
    path = "etc/modprobe.d/x.conf"      # optional: only findings with evidence in this file
    justification = "xencommons loads it before the guests start"   # required
    expires = 2027-01-31                # optional: from the day after, the waiver covers nothing (PB109)

A waived finding stays in the report, marked with its justification, and does not count toward the exit
status; an expired waiver becomes a PB109 warning pointing at its `[[waiver]]` line."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pciback_doctor.facts.limits import CONFIG_FILE
from pciback_doctor.facts.root import NotReadable, check_lines, read_regular
from pciback_doctor.model import Evidence, Finding, Fix, Severity

EXPIRED_ID = "PB109"
EXPIRED_TITLE = "Expired waiver"

_KEYS = ("id", "device", "path", "justification", "expires")
_ID = re.compile(r"PB[1-9][0-9]{0,2}")
_BDF = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}:[0-1][0-9a-f]\.[0-7])")
# tomllib keeps no line numbers: find the array-of-tables headers ourselves
_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*waiver[ \t]*\]\]", re.MULTILINE)


class WaiverError(ValueError):
    """The waivers file is unusable; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class Waiver:
    id: str  # check ID or prefix
    justification: str
    evidence: Evidence  # the entry's [[waiver]] line
    device: str | None = None
    path: str | None = None
    expires: date | None = None

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires

    def covers(self, f: Finding) -> bool:
        if not f.id.startswith(self.id):
            return False
        if self.device is not None and f.device != self.device:
            return False
        # a path also covers everything inside it when it names an initramfs (IMAGE!inner)
        return self.path is None or any(
            e.path == self.path or e.path.startswith(self.path + "!") for e in f.evidence
        )

    def describe(self) -> str:
        scope = "".join(
            f" {word} {value}"
            for word, value in (("on", self.device), ("in", self.path))
            if value is not None
        )
        return f"waiver for {self.id}{scope}"


def parse_waivers(text: str, source: str) -> tuple[Waiver, ...]:
    """Parse a waivers file; `source` names it in evidence and errors. Raises WaiverError."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WaiverError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib descends once per nested array or inline table
        raise WaiverError(f"{source}: nested deeper than Python's TOML reader can follow") from None
    unknown = sorted(set(document) - {"waiver"})
    if unknown:
        raise WaiverError(
            f"{source}: unknown key '{unknown[0]}' (a waivers file holds only [[waiver]] tables)"
        )
    entries = document.get("waiver", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise WaiverError(f"{source}: 'waiver' must be tables written [[waiver]]")
    headers = []
    line, seen = 1, 0
    for m in _HEADER.finditer(text):  # counted on from the previous header: linear, not quadratic
        line += text.count("\n", seen, m.start())
        seen = m.start()
        headers.append(line)
    lines: list[int | None] = list(headers) if len(headers) == len(entries) else [None] * len(entries)
    return tuple(
        _waiver(entry, Evidence(source, line, "[[waiver]]"))
        for entry, line in zip(entries, lines, strict=True)
    )


def read_waivers(path: str) -> tuple[Waiver, ...]:
    """Read and parse the waivers file at `path` (a host path, as the user named it)."""
    try:
        data = read_regular(path, CONFIG_FILE)
        check_lines(data)
        text = data.decode("utf-8")
    except OSError as exc:
        raise WaiverError(f"{path}: {exc.strerror or exc}") from None
    except NotReadable as exc:
        raise WaiverError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise WaiverError(f"{path}: not UTF-8 text") from None
    return parse_waivers(text, path)


def apply_waivers(
    findings: Iterable[Finding], waivers: Sequence[Waiver], today: date
) -> tuple[list[Finding], list[Finding]]:
    """The findings, each marked with the justification of the first live waiver that covers it, and a
    PB109 finding for every expired waiver (which covers nothing any more)."""
    live = [w for w in waivers if not w.expired(today)]
    marked = []
    for f in findings:
        waiver = next((w for w in live if w.covers(f)), None)
        marked.append(f if waiver is None else dataclasses.replace(f, waiver=waiver.justification))
    expired = [
        Finding(
            EXPIRED_ID,
            Severity.WARNING,
            EXPIRED_TITLE,
            f"{w.describe()} expired on {w.expires}: the findings it covered count again",
            evidence=(w.evidence,),
            fixes=(
                Fix("waiver", "fix what it covered and remove the waiver, or give it a later 'expires' date"),
            ),
        )
        for w in waivers
        if w.expired(today)
    ]
    return marked, expired


def _waiver(entry: dict[str, Any], where: Evidence) -> Waiver:
    at = where.path if where.line is None else f"{where.path}:{where.line}"
    unknown = [k for k in entry if k not in _KEYS]
    if unknown:
        raise WaiverError(f"{at}: unknown key '{unknown[0]}' in a waiver (known: {', '.join(_KEYS)})")
    id = entry.get("id")
    if not isinstance(id, str) or not _ID.fullmatch(id.strip().upper()):
        raise WaiverError(f'{at}: waiver needs an \'id\' like "PB305" or a prefix like "PB3"')
    justification = entry.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        raise WaiverError(f"{at}: waiver for {id} has no justification (say why the finding is accepted)")
    return Waiver(
        id=id.strip().upper(),
        justification=" ".join(justification.split()),
        evidence=where,
        device=_device(entry.get("device"), at),
        path=_path(entry.get("path"), at),
        expires=_expires(entry.get("expires"), at),
    )


def _device(value: object, at: str) -> str | None:
    if value is None:
        return None
    m = _BDF.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if m is None:
        raise WaiverError(f"{at}: 'device' must be a PCI address like \"0000:05:00.0\", not {value!r}")
    return f"{m.group(1) or '0000'}:{m.group(2)}"


def _path(value: object, at: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip("/ "):
        raise WaiverError(f"{at}: 'path' must be a file path like \"etc/modprobe.d/x.conf\"")
    return value.strip().lstrip("/")  # evidence paths are relative to the root


def _expires(value: object, at: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise WaiverError(f"{at}: 'expires' must be a date like 2027-01-31, not {value!r}")
