"""Bytes in, text out: how a reader turns what it read into text, decided once, here.

- `display`: text the doctor parses, quotes and shows (configs, command lines, modprobe.d, xl). A byte
  that is not UTF-8 becomes U+FFFD: no kernel, kmod or GRUB keyword holds one, so parsing is unchanged,
  and the output never carries it raw.
- `name`: a name (a cpio entry, a link target). A byte that is not UTF-8 becomes a visible `\\xe9`, so
  two names that differ only there stay two names.
- `exact`: a file `fix --write` may rewrite (facts/system.py `read_editable`). surrogateescape, so that
  writing the text back (`exact_bytes`) loses no byte. Such text is never rendered raw: every renderer
  shows a surrogate as the byte it stands for, `\\xe9` (render/escape.py `visible`).
"""

from __future__ import annotations


def display(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def name(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def exact(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def exact_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
