"""Text for people: the target, one row per device, then the findings with evidence and fixes."""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pciback_doctor.model import Report, Severity, Verdict
from pciback_doctor.render.escape import map_strings, visible

_VERDICT_STYLE = {Verdict.CLAIMED: "green", Verdict.NOT_CLAIMED: "red", Verdict.UNKNOWN: "yellow"}
_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal that can show it: never with NO_COLOR set to something
    (no-color.org), nor for TERM=dumb (Emacs shells, serial consoles: terminfo `dumb` has no colours)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def render(report: Report, colour: bool = False, width: int | None = None) -> str:
    report = map_strings(report, visible)  # every string from the system: shown, never interpreted
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=colour,
        no_color=not colour,
        color_system="standard" if colour else None,
        width=width or (_terminal_width() if colour else 110),
        highlight=False,
        markup=False,  # file contents are not rich markup: "[/]" in a command line is text
        emoji=False,  # nor emoji codes: ":thumbs_up:" in a comment is text
        soft_wrap=not colour,  # logs and pipes get whole lines, for grep
    )
    t = report.target
    if report.scope == "dom0":
        # paths and command lines, to copy: whole lines, the terminal wraps them if it must
        console.print(Text("pciback-doctor", style="bold"), Text(f"— root {t.root}"), soft_wrap=True)
        header = [
            *([f"  platform   {t.platform_name} [{t.platform}]"] if t.platform else []),
            f"  kernel     {t.kernel or '?'}" + (f"  (config {t.config})" if t.config else "  (no config)"),
            *(
                [f"  arch       {t.arch}" + (f"  [{t.arch_evidence}]" if t.arch_evidence else "")]
                if t.arch
                else []
            ),
            f"  backend    {report.backend.mode} ({report.backend.module})",
            f"  cmdline    {t.cmdline if t.cmdline is not None else '-'}"
            + (f"  [{t.cmdline_source}]" if t.cmdline_source else ""),
        ]
        if t.xen_cmdline is not None:
            header.append(f"  xen        {t.xen_cmdline}")
        header.append(
            f"  initramfs  {t.initramfs or '-'}" + ("  (runs systemd)" if t.initramfs_systemd else "")
        )
        if t.boot_entry:
            header.append(f"  boot entry {t.boot_entry}")
        for line in header:
            console.print(Text(line), soft_wrap=True)
        console.print()
        _devices(console, report)
    elif report.scope == "kernel":
        console.print(
            Text("pciback-doctor kernel", style="bold"),
            Text(f"— {t.config}: " + (f"{t.arch}, " if t.arch else "") + f"backend {report.backend.mode}"),
        )
    else:
        console.print(Text("pciback-doctor domu", style="bold"))
    console.print()
    for f in report.findings:
        head = Text()
        head.append(f"{f.severity.label.upper():7} ", style=_SEVERITY_STYLE[f.severity])
        head.append(f"{f.id} ", style="bold")
        head.append(f.title)
        if f.device:
            head.append(f"  [{f.device}]")
        console.print(head)
        for line in f.message.splitlines():
            console.print(Text("    " + line))
        if f.waiver is not None:
            console.print(Text(f"    waived: {f.waiver}", style="dim"))
        for e in f.evidence:  # a quoted line of a file: whole, like the file bodies below
            console.print(Text(f"    at {e}", style="dim"), soft_wrap=True)
        for fix in f.fixes:
            console.print(Text(f"    fix ({fix.strategy}): {fix.description}", style="green"))
            for change in fix.files:
                console.print(Text(f"      {change.path}:", style="green"))
                # a file body is pasted as it is: never wrapped or cut at the terminal's width
                for line in change.content.splitlines():
                    console.print(Text(f"        {line}"), soft_wrap=True)
            for command in fix.commands:
                console.print(Text(f"      $ {command}"), soft_wrap=True)
    counts = ", ".join(
        f"{report.count(s)} {s.label}{'s' if report.count(s) != 1 else ''}"
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    )
    waived = sum(1 for f in report.findings if f.waiver is not None)
    counts += f" ({waived} waived)" if waived else ""
    console.print(Text(f"{counts}; exit status {report.exit_code}", style="bold"))
    return buffer.getvalue()


def _devices(console: Console, report: Report) -> None:
    if not report.devices:
        console.print("No device is meant for passthrough (no hide value, no xl pci= entry, no --device).")
        return
    table = Table(show_header=True, header_style="bold", show_lines=False)
    for column in ("device", "id", "native driver", "prediction", "phase"):
        table.add_column(column, overflow="fold")
    for d in report.devices:
        p = d.prediction
        native = f"{d.native_driver or '-'} ({d.native_mode})"
        won = f" → {p.winner}" if p.verdict is Verdict.NOT_CLAIMED and p.winner else ""
        verdict = Text(p.verdict.value + won, style=_VERDICT_STYLE[p.verdict])
        table.add_row(d.bdf, d.id or "?", native, verdict, p.phase.value if p.phase else "-")
    console.print(table)
    for d in report.devices:  # the reasons are sentences: below the table, not squeezed into it
        console.print(Text(f"  {d.bdf}:", style="bold"), Text(d.prediction.reason))


def _terminal_width() -> int:
    try:
        columns = os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 110
    return columns if columns >= 40 else 110  # serial consoles often report 0 columns
