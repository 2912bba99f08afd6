"""Every renderer on hypothesis-generated reports whose strings come from a hostile system (controls,
lone surrogates, markup, backticks, `]]>`, `::`): none raises, and each output stays well-formed."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from importlib import resources
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from pciback_doctor.checks import Check, all_checks
from pciback_doctor.model import (
    Backend,
    DeviceReport,
    Evidence,
    FileChange,
    Finding,
    Fix,
    Phase,
    Prediction,
    Report,
    Severity,
    Target,
    Verdict,
)
from pciback_doctor.render import github, junit, markdown, sarif, text
from pciback_doctor.render import json as json_render
from pciback_doctor.render.escape import map_strings
from pciback_doctor.support import html as support_html
from pciback_doctor.support import markdown as support_markdown
from pciback_doctor.support.facts import SupportReport
from pciback_doctor.support.redact import redact as redact_report
from test_support_report import parse

# what a hostile file, file name or cpio entry can carry, mixed into arbitrary text
NASTY = [
    "\x1b[31m",
    "\x1b]0;title\x07",
    "\x9b2J",
    "\r",
    "\n",
    "\x00",
    "\x0b\x0c",
    "\u202e",
    "\u2066",
    "\u2028",
    "\udce9",
    "\ud800",
    "\ufffe",
    "```",
    "    ```",
    "`",
    "]]>",
    "<!--",
    "<script>",
    "&amp;",
    "::",
    "::error::",
    "%0A",
    ",",
    "[bold]",
    "[/]",
    ":thumbs_up:",
    "|",
    "# ",
    "> ",
    "* ",
    "\\",
]
# arbitrary code points, surrogates included (hypothesis leaves out category Cs unless asked)
CHARS = st.characters(codec=None, categories=None)
hostile = st.lists(st.one_of(st.sampled_from(NASTY), st.text(CHARS, max_size=8)), max_size=6).map("".join)
maybe = st.none() | hostile
hexes = st.text("0123456789abcdef", min_size=2, max_size=2)
bdf = st.builds(lambda b, s, f: f"0000:{b}:{s:02x}.{f}", hexes, st.integers(0, 31), st.integers(0, 7))
evidence = st.builds(Evidence, hostile, st.none() | st.integers(1, 10**6), hostile)
fix = st.builds(
    Fix,
    hostile,
    hostile,
    st.lists(st.builds(FileChange, hostile, hostile, st.booleans()), max_size=2).map(tuple),
    st.lists(hostile, max_size=2).map(tuple),
)
finding = st.builds(
    Finding,
    st.from_regex(r"PB[1-7][0-9]{2}", fullmatch=True),
    st.sampled_from(list(Severity)),
    hostile,
    hostile,
    st.none() | bdf,
    st.lists(evidence, max_size=3).map(tuple),
    st.lists(fix, max_size=2).map(tuple),
    maybe,
)
device = st.builds(
    DeviceReport,
    bdf,
    st.none() | st.from_regex(r"[0-9a-f]{4}:[0-9a-f]{4}", fullmatch=True),
    st.lists(hostile, min_size=1, max_size=2).map(tuple),
    maybe,
    st.sampled_from(["builtin", "module", "none", "unknown"]),
    st.builds(
        Prediction,
        st.sampled_from(list(Verdict)),
        st.none() | st.sampled_from(list(Phase)),
        maybe,
        hostile,
        st.lists(evidence, max_size=2).map(tuple),
    ),
)
report = st.builds(
    Report,
    st.builds(Target, hostile, maybe, maybe, maybe, maybe, maybe, maybe, maybe),
    st.builds(
        Backend,
        st.sampled_from(["builtin", "module", "missing", "unknown"]),
        st.just("xen_pciback"),
        st.lists(evidence, max_size=2).map(tuple),
    ),
    st.lists(device, max_size=3).map(tuple),
    st.lists(finding, max_size=4).map(tuple),
    st.sampled_from([0, 1]),
    st.sampled_from(["dom0", "kernel", "domu"]),
)

# what no text, Markdown or annotation output may carry raw: a terminal or a viewer would act on it
OBEYED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("pciback_doctor").joinpath(f"schema/{name}").read_text()
    )
    return loaded


JSON_SCHEMA = _schema("pciback-doctor-1.schema.json")
SARIF_SCHEMA = _schema("sarif-2.1.0.json")
CATALOGUE: dict[str, Check] = dict(all_checks())


def _validate(document: Any, schema: dict[str, Any]) -> None:
    validator = jsonschema.validators.validator_for(schema)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(document)


def _utf8(out: str) -> None:
    out.encode("utf-8")  # no lone surrogate: every output can be written as UTF-8


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(r=report)
def test_every_format_renders_any_report_well_formed(r: Report) -> None:
    document = json_render.render(r)
    _utf8(document)
    _validate(json.loads(document), JSON_SCHEMA)

    document = sarif.render(r, CATALOGUE)
    _utf8(document)
    _validate(json.loads(document), SARIF_SCHEMA)

    document = junit.render(r, CATALOGUE)
    _utf8(document)
    ET.fromstring(document.encode("utf-8"))

    for out in (text.render(r), text.render(r, colour=True, width=80), markdown.render(r), github.render(r)):
        _utf8(out)
        assert not OBEYED.search(_without_sgr(out))

    lines = github.render(r).splitlines()  # one workflow command per finding, nothing else
    assert len(lines) == sum(1 for f in r.findings if f.waiver is None)
    assert all(re.match(r"::(error|warning|notice) [^:]*::", line) for line in lines)

    # Markdown: exactly the blocks the renderer makes; nothing from the report opened or closed one
    tokens = MarkdownIt("commonmark").parse(markdown.render(r))
    assert not any(t.type == "html_block" for t in tokens)
    active = [f for f in r.findings if f.waiver is None]
    groups = {f.severity for f in active} | ({"waived"} if len(active) < len(r.findings) else set())
    headings = 2 + (r.scope == "dom0") + len(groups) + len(r.findings)
    assert sum(t.type == "heading_open" for t in tokens) == headings
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == sum(len(x.files) + bool(x.commands) for f in r.findings for x in f.fixes)


def _without_sgr(out: str) -> str:
    """The colours the text renderer itself writes (SGR sequences) are its own, not the report's."""
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


# -- the support report: a real one, every string in it replaced by a hostile one ----------------


@pytest.fixture(scope="module")
def support_report(tmp_path_factory: pytest.TempPathFactory) -> SupportReport:
    from test_support_report import make_root, support_report

    return support_report(make_root(tmp_path_factory.mktemp("fuzz") / "root"), redact=False)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_support_report_renders_any_strings_well_formed(
    support_report: SupportReport, data: st.DataObject
) -> None:
    sr = map_strings(support_report, lambda _s: data.draw(hostile))
    for redact in (False, True):
        shown = redact_report(sr) if redact else sr
        page = support_html.render(shown)
        _utf8(page)
        assert not OBEYED.search(page)
        parser = parse(page)
        assert parser.doctype and not parser.errors and parser.stack == []
        assert "<script" not in page.lower()

        document = support_markdown.render(shown)
        _utf8(document)
        assert not OBEYED.search(document)
        html = MarkdownIt("commonmark").enable("table").render(document)
        assert "<script" not in html and "<a " not in html and "<img" not in html
