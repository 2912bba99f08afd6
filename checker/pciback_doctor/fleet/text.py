"""`fleet` on a terminal or in a CI log: one line per host and device, then who would lose what."""

from __future__ import annotations

from pciback_doctor.fleet import Fleet
from pciback_doctor.render.escape import one_line


def _rows(fleet: Fleet) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for h in fleet.hosts:
        if h.report is None:
            rows.append((h.source.name, "-", "error", "-", "-", h.error or ""))
            continue
        if not h.report.devices:
            rows.append((h.source.name, "-", "-", "-", "-", "no device meant for passthrough"))
        for d in h.report.devices:
            p = d.prediction
            rows.append((h.source.name, d.bdf, p.verdict.value, p.winner or "-", p.phase or "-", p.reason))
    return [tuple(one_line(c) for c in row) for row in rows]


def render(fleet: Fleet) -> str:
    head = ("HOST", "DEVICE", "PREDICTION", "WINNER", "PHASE", "WHY")
    rows = _rows(fleet)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in [head, *rows]
    ]
    lines.append("")
    for h in fleet.hosts:
        if h.status == "error":
            lines.append(one_line(f"{h.source.name}: could not be analysed: {h.error}"))
        elif h.status == "fail":
            why = [f"loses {', '.join(h.lost)}"] if h.lost else []
            why += [f"{', '.join(h.failing)} at or above --fail-on {fleet.fail_on}"] if h.failing else []
            lines.append(one_line(f"{h.source.name}: FAIL: {'; '.join(why)}"))
    n = len(fleet.hosts)
    lines.append(
        f"{n} host{'s' if n != 1 else ''}: {fleet.count('fail')} would lose a device, "
        f"{fleet.count('error')} could not be analysed, {fleet.count('pass')} pass; exit status {fleet.exit_code}"
    )
    return "\n".join(lines) + "\n"
