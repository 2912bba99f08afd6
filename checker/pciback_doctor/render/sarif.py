"""`--format sarif`: SARIF 2.1.0 for code-scanning dashboards (schema vendored in schema/sarif-2.1.0.json).

One run; the rules are the catalogue the CLI ran, the results are the findings. Evidence becomes physical
locations relative to the root (uriBaseId ROOT); a file inside an initramfs (`IMAGE!inner`) is located at
the image, with the inner path in a logical location, since a line number there means the inner file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from pciback_doctor import __version__
from pciback_doctor.model import Evidence, Finding, Report, Severity
from pciback_doctor.render.escape import json_text, map_strings, uri_path

if TYPE_CHECKING:
    from pciback_doctor.checks import Check

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
ROOT_BASE = "ROOT"

LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _rule_name(title: str) -> str:
    """SARIF wants a name that reads like an identifier: 'Broken install rule' -> BrokenInstallRule."""
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", title))


def _rule(id: str, severity: Severity, title: str, explanation: str) -> dict[str, Any]:
    return {
        "id": id,
        "name": _rule_name(title),
        "shortDescription": {"text": title},
        "fullDescription": {"text": explanation or title},
        "help": {"text": explanation or title},
        "defaultConfiguration": {"level": LEVEL[severity]},
    }


def _location(e: Evidence) -> dict[str, Any]:
    image, _, inner = e.path.partition("!")
    path = PurePosixPath(image)
    # evidence is relative to the root; a file the user named outside it (--waivers F) is absolute
    artifact: dict[str, Any] = (
        {"uri": "file://" + uri_path(image)}
        if path.is_absolute()
        else {"uri": uri_path(image), "uriBaseId": ROOT_BASE}
    )
    physical: dict[str, Any] = {"artifactLocation": artifact}
    location: dict[str, Any] = {"physicalLocation": physical, "message": {"text": str(e)}}
    if inner:
        where = inner if e.line is None else f"{inner}:{e.line}"
        location["logicalLocations"] = [{"name": where, "fullyQualifiedName": e.path, "kind": "resource"}]
    elif e.line is not None:
        region: dict[str, Any] = {"startLine": e.line}
        if e.text:
            region["snippet"] = {"text": e.text}
        physical["region"] = region
    return location


def _result(f: Finding, index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.id,
        "ruleIndex": index,
        "level": LEVEL[f.severity],
        "message": {"text": f.message},
    }
    if f.evidence:
        result["locations"] = [_location(e) for e in f.evidence]
    properties: dict[str, Any] = {}
    if f.device:
        properties["device"] = f.device
    if f.fixes:
        properties["fixes"] = [f"{fix.strategy}: {fix.description}" for fix in f.fixes]
    if properties:
        result["properties"] = properties
    if f.waiver is not None:
        result["suppressions"] = [{"kind": "external", "justification": f.waiver}]
    return result


def to_document(report: Report, catalogue: Mapping[str, Check]) -> dict[str, Any]:
    rules = {
        c.id: _rule(c.id, c.severity, c.title, c.explanation)
        for c in sorted(catalogue.values(), key=lambda c: c.id)
    }
    for f in report.findings:  # a finding from outside the catalogue still needs its rule
        rules.setdefault(f.id, _rule(f.id, f.severity, f.title, ""))
    index = {id: i for i, id in enumerate(rules)}
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "pciback-doctor",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": list(rules.values()),
            }
        },
        "invocations": [{"executionSuccessful": True, "exitCode": report.exit_code}],
        "results": [_result(f, index[f.id]) for f in report.findings],
        "properties": {"scope": report.scope, "backend": report.backend.mode},
    }
    root = PurePosixPath(report.target.root)
    if root.is_absolute():
        uri = "file://" + uri_path(str(root))
        run["originalUriBaseIds"] = {ROOT_BASE: {"uri": uri if uri.endswith("/") else uri + "/"}}
    document = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return map_strings(document, json_text)  # a byte that was not UTF-8: `\xe9`, never a lone surrogate


def render(report: Report, catalogue: Mapping[str, Check]) -> str:
    """`catalogue`: the checks that ran (id -> Check), so a dashboard knows what passed too."""
    return json.dumps(to_document(report, catalogue), indent=2) + "\n"
