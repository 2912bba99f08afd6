"""`--format markdown`: a report to paste into an issue or a pull request, or to publish as a CI job summary.

The target, a table of devices, then the findings by severity with their evidence as `path:line` code
spans and their fixes (files in fenced blocks, commands in sh blocks); waived findings last."""

from __future__ import annotations

from pciback_doctor.model import Finding, Report, Severity, Verdict
from pciback_doctor.render.escape import (
    map_strings,
    md_block,
    md_cell_code,
    md_code,
    md_line,
    md_text,
    visible,
)

_HEADINGS = {Severity.ERROR: "Errors", Severity.WARNING: "Warnings", Severity.INFO: "Notes"}
text, code, block = md_text, md_code, md_block


def cell(s: str) -> str:
    """A table cell is one line: a line break inside it becomes <br>."""
    return text(s).replace("\n", "<br>")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |\n"


def _devices(report: Report) -> str:
    if not report.devices:
        return "No device is meant for passthrough (no hide value, no xl pci= entry, no --device).\n"
    out = _row(["device", "id", "native driver", "prediction", "phase", "reason"])
    out += _row(["---"] * 6)
    for d in report.devices:
        p = d.prediction
        won = f" → {p.winner}" if p.verdict is Verdict.NOT_CLAIMED and p.winner else ""
        out += _row(
            [
                md_cell_code(code(d.bdf)),
                cell(d.id or "?"),
                cell(f"{d.native_driver or '-'} ({d.native_mode})"),
                f"**{cell(p.verdict.value)}**{cell(won)}",
                cell(p.phase.value if p.phase else "-"),
                cell(p.reason),
            ]
        )
    return out


def _finding(f: Finding) -> str:
    out = f"#### {f.id} {md_line(f.title)}" + (f" — {code(f.device)}" if f.device else "") + "\n\n"
    lines = [md_line(line) for line in f.message.splitlines() if line.strip()]
    out += "  \n".join(lines) + "\n\n"  # a hard line break per message line, one paragraph
    if f.waiver is not None:
        out += f"Waived: {md_line(f.waiver)}\n\n"
    if f.evidence:
        for e in f.evidence:
            where = e.path if e.line is None else f"{e.path}:{e.line}"
            out += f"- {code(where)}" + (f" {code(e.text)}" if e.text else "") + "\n"
        out += "\n"
    for fix in f.fixes:
        out += f"**Fix ({md_line(fix.strategy)}):** {md_line(fix.description)}\n\n"
        for change in fix.files:
            mode = " (executable)" if change.executable else ""
            out += f"{code(change.path)}{mode}:\n\n" + block(change.content) + "\n"
        if fix.commands:
            out += block("\n".join(fix.commands), "sh") + "\n"
    return out


def render(report: Report) -> str:
    report = map_strings(report, visible)  # every string from the system: shown, never interpreted
    t = report.target
    out = "# pciback-doctor\n\n"
    facts = [
        ("root", t.root),
        ("platform", t.platform_name and f"{t.platform_name} [{t.platform}]"),
        ("kernel", t.kernel),
        ("arch", t.arch and (f"{t.arch} [{t.arch_evidence}]" if t.arch_evidence else t.arch)),
        ("config", t.config),
        ("backend", f"{report.backend.mode} ({report.backend.module})"),
        ("cmdline", t.cmdline),
        ("initramfs", t.initramfs and t.initramfs + (" (runs systemd)" if t.initramfs_systemd else "")),
        ("boot entry", t.boot_entry),
    ]
    out += "".join(f"- **{name}:** {code(value)}\n" for name, value in facts if value) + "\n"
    if report.scope == "dom0":
        out += "## Devices\n\n" + _devices(report) + "\n"
    active = [f for f in report.findings if f.waiver is None]
    waived = [f for f in report.findings if f.waiver is not None]
    out += "## Findings\n\n"
    if not report.findings:
        out += "None.\n\n"
    for severity in (Severity.ERROR, Severity.WARNING, Severity.INFO):
        these = [f for f in active if f.severity is severity]
        if these:
            out += f"### {_HEADINGS[severity]} ({len(these)})\n\n" + "".join(_finding(f) for f in these)
    if waived:
        out += f"### Waived ({len(waived)})\n\n" + "".join(_finding(f) for f in waived)
    counts = ", ".join(
        f"{report.count(s)} {s.label}{'s' if report.count(s) != 1 else ''}"
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    )
    return out + f"{counts}; exit status {report.exit_code}\n"
