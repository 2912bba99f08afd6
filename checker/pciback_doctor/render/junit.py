"""`--format junit`: JUnit XML for CI test dashboards.

One testsuite; a testcase per finding, named by check (classname) and device ("system" when the finding is
about no device), and a passing testcase for every check that ran and found nothing, so the dashboard shows
what was checked. Errors and warnings fail; info is printed (system-out); a waived finding is skipped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pciback_doctor.model import Finding, Report, Severity
from pciback_doctor.render.escape import map_strings, visible

if TYPE_CHECKING:
    from pciback_doctor.checks import Check

SUITE = "pciback-doctor"


def _details(f: Finding) -> str:
    lines = [f"{f.severity.label.upper()} {f.id} {f.title}" + (f"  [{f.device}]" if f.device else "")]
    lines += f.message.splitlines()
    lines += [f"at {e}" for e in f.evidence]
    for fix in f.fixes:
        lines.append(f"fix ({fix.strategy}): {fix.description}")
        for change in fix.files:
            lines.append(f"  {change.path}:")
            lines += [f"    {line}" for line in change.content.splitlines()]
        lines += [f"  $ {command}" for command in fix.commands]
    return "\n".join(lines) + "\n"


def _names(findings: tuple[Finding, ...]) -> list[str]:
    """device or "system"; several findings of one check on one subject are told apart by their evidence."""
    subjects = [f.device or "system" for f in findings]
    repeated = Counter(zip((f.id for f in findings), subjects, strict=True))
    names: list[str] = []
    seen: set[tuple[str, str]] = set()
    for f, subject in zip(findings, subjects, strict=True):
        name = subject
        if repeated[f.id, subject] > 1 and f.evidence:
            e = f.evidence[0]
            name = f"{subject} @ {e.path}" + (f":{e.line}" if e.line is not None else "")
        base, n = name, 2
        while (f.id, name) in seen:
            name, n = f"{base} #{n}", n + 1
        seen.add((f.id, name))
        names.append(name)
    return names


def _testcase(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")


def to_element(report: Report, catalogue: Mapping[str, Check]) -> ET.Element:
    # XML 1.0 has no way to carry most C0 controls, even as references: they are shown escaped
    report = map_strings(report, visible)
    failures = skipped = 0
    suite = ET.Element("testsuite", name=SUITE)
    properties = ET.SubElement(suite, "properties")
    t = report.target
    for key, value in (
        ("scope", report.scope),
        ("root", t.root),
        ("kernel", t.kernel),
        ("backend", report.backend.mode),
    ):
        if value is not None:
            ET.SubElement(properties, "property", name=key, value=value)
    for f, name in zip(report.findings, _names(report.findings), strict=True):
        case = _testcase(suite, f.id, name)
        if f.waiver is not None:
            ET.SubElement(case, "skipped", message=f"waived: {f.waiver}")
            ET.SubElement(case, "system-out").text = _details(f)
            skipped += 1
        elif f.severity >= Severity.WARNING:
            ET.SubElement(case, "failure", message=f.message, type=f.severity.label).text = _details(f)
            failures += 1
        else:
            ET.SubElement(case, "system-out").text = _details(f)
    found = {f.id for f in report.findings}
    passed = [id for id in sorted(catalogue) if id not in found]
    for id in passed:
        _testcase(suite, id, "system")
    tests = len(report.findings) + len(passed)
    for key, count in (("tests", tests), ("failures", failures), ("errors", 0), ("skipped", skipped)):
        suite.set(key, str(count))
    suite.set("time", "0")
    suites = ET.Element("testsuites", name=SUITE, tests=str(tests), failures=str(failures), errors="0")
    suites.set("skipped", str(skipped))
    suites.append(suite)
    return suites


def render(report: Report, catalogue: Mapping[str, Check]) -> str:
    """`catalogue`: the checks that ran (id -> Check); those without findings become passing testcases."""
    root = to_element(report, catalogue)
    ET.indent(root)
    # the CLI writes UTF-8 whatever the locale; ElementTree would declare the locale's encoding
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
