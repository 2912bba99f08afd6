"""`--format github`: GitHub Actions workflow commands, one annotation per finding.

`::error file=F,line=N,title=T::MESSAGE` (warning -> ::warning, info -> ::notice), escaped as @actions/core
does (render/escape.py), with controls from the inspected system shown, not sent to the log. A waived finding
gets no annotation: it was accepted, and an annotation would ask for attention again."""

from __future__ import annotations

from pciback_doctor.model import Finding, Report, Severity
from pciback_doctor.render.escape import annotation_data, annotation_property

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def annotation(f: Finding) -> str:
    properties: list[tuple[str, str]] = []
    located = next((e for e in f.evidence if e.path), None)
    if located is not None:
        image, _, inner = located.path.partition("!")
        properties.append(("file", image))
        if located.line is not None and not inner:  # a line inside an image's file is not a line of the image
            properties.append(("line", str(located.line)))
    properties.append(("title", f"{f.id} {f.title}"))
    lines = [f.message] + ([f"device {f.device}"] if f.device else [])
    lines += [f"at {e}" for e in f.evidence]
    lines += [f"fix ({fix.strategy}): {fix.description}" for fix in f.fixes]
    head = ",".join(f"{key}={annotation_property(value)}" for key, value in properties)
    message = "\n".join(lines)
    return f"::{COMMAND[f.severity]} {head}::{annotation_data(message)}"


def render(report: Report) -> str:
    return "".join(annotation(f) + "\n" for f in report.findings if f.waiver is None)
