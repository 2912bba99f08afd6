"""`fleet --format json`: the `pciback-doctor-fleet/1` document (schema in schema/). Each host carries
its `pciback-doctor/1` document unchanged, as `check --format json` wrote it on that host."""

from __future__ import annotations

import json
from typing import Any

from pciback_doctor import __version__
from pciback_doctor.fleet import Fleet, HostResult
from pciback_doctor.model import Verdict
from pciback_doctor.render.escape import json_text, map_strings

SCHEMA_ID = "pciback-doctor-fleet/1"


def _host(h: HostResult) -> dict[str, Any]:
    verdicts = {v.value: 0 for v in Verdict}
    for d in h.report.devices if h.report else ():
        verdicts[d.prediction.verdict.value] += 1
    return {
        "name": h.source.name,
        "source": h.source.path,
        "input": h.source.kind,
        "status": h.status,
        "error": h.error,
        "lost_devices": list(h.lost),
        "failing_findings": list(h.failing),
        "devices": verdicts,
        "report": h.document,
    }


def to_document(fleet: Fleet) -> dict[str, Any]:
    document = {
        "schema": SCHEMA_ID,
        "tool": {"name": "pciback-doctor", "version": __version__},
        "fail_on": fleet.fail_on,
        "hosts": [_host(h) for h in fleet.hosts],
        "summary": {
            "hosts": len(fleet.hosts),
            "pass": fleet.count("pass"),
            "fail": fleet.count("fail"),
            "error": fleet.count("error"),
            "devices": {v.value: fleet.devices(v) for v in Verdict},
        },
        "exit_code": fleet.exit_code,
    }
    return map_strings(document, json_text)  # a document read back may hold a lone surrogate


def render(fleet: Fleet) -> str:
    return json.dumps(to_document(fleet), indent=2) + "\n"
