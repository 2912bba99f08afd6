"""PB6xx: is the doctor looking at the next boot, and what does the hypervisor allow?"""

from __future__ import annotations

from collections.abc import Iterator

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.checks import Check, check
from pciback_doctor.model import Finding, Severity


@check(
    "PB604",
    Severity.INFO,
    "Command line of the current boot, not the next",
    """No boot entry or --cmdline said what the next boot's dom0 command line will be, so the doctor used
    /proc/cmdline: the command line this system booted with. If the bootloader configuration changed since,
    the prediction may be off; pass --cmdline or --cmdline-file to be sure.""",
)
def current_cmdline(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.system.cmdline_kind == "proc" and a.system.cmdline is not None:
        yield chk.finding(
            "using proc/cmdline, the command line of the current boot",
            evidence=[a.system.cmdline.evidence(a.system.cmdline.params[0])]
            if a.system.cmdline.params
            else [],
        )
