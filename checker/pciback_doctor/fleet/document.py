"""Reads a `pciback-doctor/1` document (what `check --format json` writes, SPEC §6) back into the
`Report` every renderer takes. A host's document arrives from elsewhere (Ansible's fetch, a CI
artifact): it is checked field by field, and anything else is a one-line `DocumentError`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

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
from pciback_doctor.render.json import SCHEMA_ID

T = TypeVar("T")
_SEVERITIES = {s.label: s for s in Severity}


class DocumentError(Exception):
    """Not a `pciback-doctor/1` document; the message says what is wrong, on one line."""


def read_document(data: bytes) -> tuple[dict[str, Any], Report]:
    """The parsed document (kept as is: the fleet report embeds it) and the `Report` it describes."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DocumentError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DocumentError(f"not a {SCHEMA_ID} document: the JSON is not an object")
    if document.get("schema") != SCHEMA_ID:
        raise DocumentError(f"not a {SCHEMA_ID} document: its schema is {document.get('schema')!r:.60}")
    return document, _report(document)


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON's true is no exit code
        raise DocumentError(f"{where}.{key}: missing or of the wrong type")
    return value


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DocumentError(f"{where}.{key}: not a string or null")
    return value


def _strings(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = _get(obj, key, list, where)
    if not all(isinstance(i, str) for i in items):
        raise DocumentError(f"{where}.{key}: not a list of strings")
    return tuple(items)


def _objects(
    obj: dict[str, Any], key: str, where: str, read: Callable[[dict[str, Any], str], T]
) -> tuple[T, ...]:
    items = _get(obj, key, list, where)
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise DocumentError(f"{where}.{key}[{n}]: not an object")
        out.append(read(item, f"{where}.{key}[{n}]"))
    return tuple(out)


def _evidence(obj: dict[str, Any], where: str) -> Evidence:
    line = obj.get("line")
    if line is not None and (not isinstance(line, int) or isinstance(line, bool)):
        raise DocumentError(f"{where}.line: not an integer or null")
    return Evidence(_get(obj, "path", str, where), line, _get(obj, "text", str, where))


def _change(obj: dict[str, Any], where: str) -> FileChange:
    return FileChange(
        _get(obj, "path", str, where), _get(obj, "content", str, where), bool(obj.get("executable"))
    )


def _fix(obj: dict[str, Any], where: str) -> Fix:
    return Fix(
        _get(obj, "strategy", str, where),
        _get(obj, "description", str, where),
        _objects(obj, "files", where, _change),
        _strings(obj, "commands", where),
    )


def _finding(obj: dict[str, Any], where: str) -> Finding:
    severity = _SEVERITIES.get(obj.get("severity"))  # type: ignore[arg-type]
    if severity is None:
        raise DocumentError(f"{where}.severity: not one of error, warning, info")
    return Finding(
        id=_get(obj, "id", str, where),
        severity=severity,
        title=_get(obj, "title", str, where),
        message=_get(obj, "message", str, where),
        device=_opt_str(obj, "device", where),
        evidence=_objects(obj, "evidence", where, _evidence),
        fixes=_objects(obj, "fixes", where, _fix),
        waiver=_opt_str(obj, "waived", where),
    )


def _device(obj: dict[str, Any], where: str) -> DeviceReport:
    try:
        verdict = Verdict(str(obj.get("prediction")))
        phase = None if obj.get("phase") is None else Phase(str(obj.get("phase")))
    except ValueError:
        raise DocumentError(f"{where}: unknown prediction or phase") from None
    return DeviceReport(
        bdf=_get(obj, "bdf", str, where),
        id=_opt_str(obj, "id", where),
        wanted_by=_strings(obj, "wanted_by", where),
        native_driver=_opt_str(obj, "native_driver", where),
        native_mode=_get(obj, "native_mode", str, where),
        prediction=Prediction(
            verdict,
            phase,
            _opt_str(obj, "winner", where),
            _get(obj, "reason", str, where),
            _objects(obj, "evidence", where, _evidence),
        ),
    )


def _report(doc: dict[str, Any]) -> Report:
    target = _get(doc, "target", dict, "$")
    backend = _get(doc, "backend", dict, "$")
    exit_code = _get(doc, "exit_code", int, "$")
    return Report(
        target=Target(
            root=_get(target, "root", str, "$.target"),
            kernel=_opt_str(target, "kernel", "$.target"),
            config=_opt_str(target, "config", "$.target"),
            initramfs=_opt_str(target, "initramfs", "$.target"),
            cmdline=_opt_str(target, "cmdline", "$.target"),
            cmdline_source=_opt_str(target, "cmdline_source", "$.target"),
            boot_entry=_opt_str(target, "boot_entry", "$.target"),
            xen_cmdline=_opt_str(target, "xen_cmdline", "$.target"),
        ),
        backend=Backend(
            _get(backend, "mode", str, "$.backend"),
            _get(backend, "module", str, "$.backend"),
            _objects(backend, "evidence", "$.backend", _evidence),
        ),
        devices=_objects(doc, "devices", "$", _device),
        findings=_objects(doc, "findings", "$", _finding),
        exit_code=exit_code,
    )
