"""render/escape.py: what each output format is given for text from the inspected system."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from pciback_doctor.facts.decode import display, exact, exact_bytes, name
from pciback_doctor.render.escape import (
    annotation_data,
    annotation_property,
    html_text,
    json_text,
    md_block,
    md_code,
    md_line,
    one_line,
    uri_path,
    visible,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("options xen-pciback hide=(0000:05:00.0)\n", "options xen-pciback hide=(0000:05:00.0)\n"),
        ("tab\tkept", "tab\tkept"),
        ("\x1b[2J\x1b]0;t\x07", "\\x1b[2J\\x1b]0;t\\x07"),
        ("line\r\n", "line\\x0d\n"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("\x9b31m", "\\u009b31m"),  # CSI as one C1 character
        ("caf" + b"\xe9".decode("utf-8", "surrogateescape"), "caf\\xe9"),  # the byte that was not UTF-8
        ("\ud800", "\\ud800"),
        ("abc\u202edef\u2066", "abc\\u202edef\\u2066"),
        ("xen\u200b-pciback", "xen\\u200b-pciback"),  # looks like the name, is not one to kmod
        ("\ufeffoptions", "\\ufeffoptions"),
        ("a\u2028b", "a\\u2028b"),
        ("café ✓ 漢字", "café ✓ 漢字"),  # text is text
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown
    assert visible(shown) == shown  # escaping twice changes nothing


def test_one_line_and_html() -> None:
    assert one_line("a\nb\x1b") == "a\\x0ab\\x1b"
    assert html_text("<b>\x1b&") == "&lt;b&gt;\\x1b&amp;"


def test_json_text_keeps_what_json_escapes_itself() -> None:
    text = "\x1b\n" + b"\xe9".decode("utf-8", "surrogateescape") + "\ud800"
    assert json_text(text) == "\x1b\n\\xe9\\ud800"
    json.dumps(json_text(text)).encode("utf-8")


def test_annotations_escape_like_the_toolkit_and_show_controls() -> None:
    assert annotation_data("100%\r\nnext\x1b") == "100%25%0D%0Anext\\x1b"
    assert annotation_property("a,b:c\n") == "a%2Cb%3Ac%0A"


def test_uri_path_percent_encodes_the_names_bytes() -> None:
    raw = b"etc/modprobe.d/caf\xe9 x.conf".decode("utf-8", "surrogateescape")
    assert uri_path(raw) == "etc/modprobe.d/caf%E9%20x.conf"
    assert uri_path("é\ud800") == "%C3%A9%EF%BF%BD"


@pytest.mark.parametrize(
    "content",
    [
        "```\nnot closed by this\n```",
        "   ```\nan indented fence closes a block too (CommonMark 4.5)\n",
        "x\n\t````\n",
        "````````````\n",
        "~~~\nno tilde fence either\n",
    ],
)
def test_code_block_holds_any_content(content: str) -> None:
    tokens = MarkdownIt("commonmark").parse(md_block(content + "\n# after"))
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == 1 and len(tokens) == 1
    assert fences[0].content == visible(content + "\n# after") + "\n"


@given(st.text())
def test_code_span_and_line_stay_one_inline(text: str) -> None:
    for inline in (md_code(text), md_line(text)):
        tokens = MarkdownIt("commonmark").parse("x " + inline)
        assert [t.type for t in tokens] in (
            ["paragraph_open", "inline", "paragraph_close"],
            [],
        )


def test_decoding_policy() -> None:
    data = b"caf\xe9 \xff\n"
    assert display(data) == "caf\ufffd \ufffd\n"
    assert name(data) == "caf\\xe9 \\xff\n"
    assert exact_bytes(exact(data)) == data
    assert visible(exact(data)) == "caf\\xe9 \\xff\n"


def test_map_strings_reaches_every_string_of_a_structure() -> None:
    from dataclasses import dataclass
    from pathlib import PurePosixPath

    from pciback_doctor.model import Severity
    from pciback_doctor.render.escape import map_strings

    @dataclass(frozen=True)
    class Inner:
        path: PurePosixPath
        tags: frozenset[str]

    @dataclass(frozen=True)
    class Outer:
        name: str
        severity: Severity
        items: tuple[Inner, ...]
        table: dict[str, list[str | None]]

    value = Outer(
        "\x1b",
        Severity.ERROR,
        (Inner(PurePosixPath("/a\x1b"), frozenset({"\x07"})),),
        {"k\x1b": ["\x1b", None]},
    )
    assert map_strings(value, visible) == Outer(
        "\\x1b",
        Severity.ERROR,
        (Inner(PurePosixPath("/a\\x1b"), frozenset({"\\x07"})),),
        {"k\\x1b": ["\\x1b", None]},
    )
