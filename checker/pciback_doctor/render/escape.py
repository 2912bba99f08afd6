"""Text from the inspected system, made safe for each output format: one policy, used by every renderer.

Bytes in, text out. Readers decode once (facts/decode.py): text for display with a byte that is not
UTF-8 as U+FFFD (a cpio name as a visible `\\xe9`), and the files `fix --write` may rewrite with
`surrogateescape`, so that writing them back loses no byte. Nothing is rendered raw:

- `visible`: what no output may carry is shown, never interpreted: a byte that was not UTF-8 (a
  surrogateescape surrogate) as `\\xe9`, C0 controls but tab and newline (ESC, CR, ...) and DEL as
  `\\x1b`, C1 controls, bidi overrides and isolates, invisible characters (zero-width, BOM, soft
  hyphen), U+2028/U+2029 and other lone surrogates as `\\u202e`. XML 1.0 forbids the same C0
  characters, and JSON's consumers reject lone surrogates.
- per format, on top of `visible`: Markdown (inline specials, table cells, code spans and fences longer
  than any backtick run inside), GitHub workflow commands (the toolkit's escaping), HTML.

A renderer applies its escaping to the whole report first (`map_strings`), so a field added later cannot
reach the output raw.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import re
from collections.abc import Callable
from pathlib import PurePath
from typing import TypeVar, cast
from urllib.parse import quote

T = TypeVar("T")

# C0 but tab/newline, DEL, C1, soft hyphen, ALM, zero-width and bidi marks, LS/PS, LRE..RLO, word
# joiner and invisible operators, LRI..PDI, surrogates, BOM, U+FFFE/U+FFFF. The invisible ones matter
# here: `xen\u200b-pciback` looks like the module name and is not one to kmod
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ud800-\udfff\ufeff\ufffe\uffff]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _show(m: re.Match[str]) -> str:
    n = ord(m.group())
    if 0xDC80 <= n <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"\\x{n - 0xDC00:02x}"
    return f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}"


def visible(text: str) -> str:
    """Every character a terminal, a browser or an XML parser would act on shown as an escape;
    tabs and newlines kept (file bodies stay file bodies)."""
    return _UNSAFE.sub(_show, text)


def one_line(text: str) -> str:
    """`visible`, and a newline shown too: for a field that must stay one line (a listing's name)."""
    return visible(text).replace("\n", "\\x0a")


def json_text(text: str) -> str:
    """JSON escapes controls itself; a lone surrogate is valid `json.dumps` output but not Unicode."""
    return _SURROGATE.sub(_show, text)


# a surrogate that surrogateescape did not make: no byte of any file name
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def uri_path(path: str) -> str:
    """A path as a URI path (RFC 3986): percent-encoded UTF-8, and a byte of the file's name that was
    not UTF-8 as itself (`%E9`), so the URI names the file the system has."""
    return quote(_NOT_A_BYTE.sub("\ufffd", path), safe="/", errors="surrogateescape")


def map_strings(value: T, fn: Callable[[str], str]) -> T:
    """The same frozen structure with `fn` applied to every string in it (enums stay as they are)."""
    return cast(T, _map(value, fn))


def _map(value: object, fn: Callable[[str], str]) -> object:
    if isinstance(value, enum.Enum) or value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, frozenset | set):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, PurePath):
        return type(value)(fn(str(value)))
    if isinstance(value, dict):
        return {_map(k, fn): _map(v, fn) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map(getattr(value, f.name), fn) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    raise TypeError(f"cannot map the strings of a {type(value).__name__}")


# -- HTML ---------------------------------------------------------------------------------------


def html_text(text: str) -> str:
    return html.escape(visible(text))


# -- Markdown (CommonMark / GitHub-flavoured) ---------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


_MD_LINE_START = re.compile(r"^([ \t]*\d*)([#+=>.)-])", re.MULTILINE)


def md_text(text: str) -> str:
    """Prose: every inline special backslash-escaped (`|` too, so it can go in a table cell)."""
    return _MD_SPECIAL.sub(r"\\\1", visible(text))


def md_para(text: str) -> str:
    """Lines of prose: also what is special only at a line start (heading, list, quote, rule)."""
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), md_text(text))


def md_line(text: str) -> str:
    """Prose on one line (a heading, a list item, a label): line breaks and runs of blanks become one
    space, so no value can end the block it is in and start another."""
    return md_para(" ".join(text.split()))


def md_code(text: str) -> str:
    """A code span on one line whose fence is longer than any backtick run inside (CommonMark 6.1).
    In a GFM table cell, `|` still needs `md_cell_code`: the table ends the cell there even in a span."""
    one = " ".join(visible(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one)), default=0) + 1)
    pad = " " if one.startswith(("`", " ")) or one.endswith("`") else ""
    return f"{fence}{pad}{one}{pad}{fence}"


def md_cell_code(span: str) -> str:
    """A code span (`md_code`) in a GFM table cell: the table ends the cell at `|` even inside it."""
    return span.replace("|", "\\|")


def md_fence(content: str) -> str:
    """The fence for a code block holding `content`: longer than any backtick run anywhere in it.
    CommonMark 4.5 closes a fence at a run at least as long, indented up to three spaces; counting
    every run (not just those at a line start) also covers tabs and any later indentation rule."""
    return "`" * max(3, max((len(run) + 1 for run in re.findall(r"`+", content)), default=0))


def md_block(content: str, info: str = "") -> str:
    body = visible(content).rstrip("\n")
    fence = md_fence(body)
    return f"{fence}{info}\n{body}\n{fence}\n"


# -- GitHub Actions workflow commands -----------------------------------------------------------
# @actions/core (toolkit packages/core/src/command.ts): escapeData / escapeProperty


def annotation_data(text: str) -> str:
    # CR is the toolkit's to escape (%0D): the runner never sees it raw; every other control is ours
    shown = "\r".join(visible(part) for part in text.split("\r"))
    return shown.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotation_property(text: str) -> str:
    return annotation_data(text).replace(":", "%3A").replace(",", "%2C")
