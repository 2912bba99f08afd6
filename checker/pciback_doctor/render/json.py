"""`--format json`: the stable `pciback-doctor/1` document (SPEC §6; schema in schema/)."""

from __future__ import annotations

import json
from typing import Any

from pciback_doctor import __version__
from pciback_doctor.model import Evidence, Finding, Report, Severity
from pciback_doctor.render.escape import json_text, map_strings

SCHEMA_ID = "pciback-doctor/1"


def _evidence(e: Evidence) -> dict[str, Any]:
    return {"path": e.path, "line": e.line, "text": e.text}


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id,
        "severity": f.severity.label,
        "title": f.title,
        "message": f.message,
        "device": f.device,
        "evidence": [_evidence(e) for e in f.evidence],
        "fixes": [
            {
                "strategy": fix.strategy,
                "description": fix.description,
                "files": [
                    {"path": c.path, "content": c.content, "executable": c.executable} for c in fix.files
                ],
                "commands": list(fix.commands),
            }
            for fix in f.fixes
        ],
        "waived": f.waiver,
    }


def to_document(report: Report) -> dict[str, Any]:
    t = report.target
    document = {
        "schema": SCHEMA_ID,
        "tool": {"name": "pciback-doctor", "version": __version__},
        "target": {
            "root": t.root,
            "kernel": t.kernel,
            "config": t.config,
            "initramfs": t.initramfs,
            "cmdline": t.cmdline,
            "cmdline_source": t.cmdline_source,
            "boot_entry": t.boot_entry,
            "xen_cmdline": t.xen_cmdline,
            "platform": None if t.platform is None else {"id": t.platform, "name": t.platform_name},
            "arch": None
            if t.arch is None
            else {
                "name": t.arch,
                "evidence": None if t.arch_evidence is None else _evidence(t.arch_evidence),
            },
            "initramfs_systemd": t.initramfs_systemd,
        },
        "backend": {
            "mode": report.backend.mode,
            "module": report.backend.module,
            "evidence": [_evidence(e) for e in report.backend.evidence],
        },
        "devices": [
            {
                "bdf": d.bdf,
                "id": d.id,
                "wanted_by": list(d.wanted_by),
                "native_driver": d.native_driver,
                "native_mode": d.native_mode,
                "prediction": d.prediction.verdict.value,
                "phase": d.prediction.phase.value if d.prediction.phase else None,
                "winner": d.prediction.winner,
                "reason": d.prediction.reason,
                "evidence": [_evidence(e) for e in d.prediction.evidence],
            }
            for d in report.devices
        ],
        "findings": [_finding(f) for f in report.findings],
        "summary": {s.label: report.count(s) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)},
        "exit_code": report.exit_code,
    }
    return map_strings(document, json_text)  # a byte that was not UTF-8: `\xe9`, never a lone surrogate


def render(report: Report) -> str:
    return json.dumps(to_document(report), indent=2) + "\n"
