"""From analysis and findings to the `Report` every renderer gets: filtering, exit status."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pciback_doctor.arches import machine_name
from pciback_doctor.facts.platform import UNKNOWN
from pciback_doctor.model import DeviceReport, Finding, Report, Severity, Target

if TYPE_CHECKING:  # annotations only: `--help` needs FAIL_ON without the whole boot model
    from pciback_doctor.boot.analysis import Analysis

FAIL_ON = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO, "never": None}


def selected(check_id: str, select: Sequence[str], ignore: Sequence[str]) -> bool:
    """`--select` / `--ignore` take IDs or prefixes (`PB3` = the whole PB3xx range)."""
    if select and not any(check_id.startswith(s) for s in select):
        return False
    return not any(check_id.startswith(s) for s in ignore)


def exit_code(findings: Iterable[Finding], fail_on: str) -> int:
    threshold = FAIL_ON[fail_on]
    if threshold is None:
        return 0
    # a waived finding stays visible but never fails the gate
    return 1 if any(f.severity >= threshold and f.waiver is None for f in findings) else 0


def target_of(analysis: Analysis) -> Target:
    s = analysis.system
    return Target(
        root=str(s.root.path),
        kernel=s.release,
        config=s.config.path if s.config else None,
        initramfs=analysis.image.path if analysis.image else None,
        cmdline=s.cmdline.text if s.cmdline else None,
        cmdline_source=s.cmdline_source,
        boot_entry=_entry(analysis),
        xen_cmdline=s.xen_cmdline.text if s.xen_cmdline else None,
        # a bare kernel or domU input is no system: it has no platform
        platform=None if s.platform is UNKNOWN else s.platform.id,
        platform_name=None if s.platform is UNKNOWN else s.platform.name,
        arch=machine_name(analysis.backend.arch, s.config) if analysis.backend.arch else None,
        arch_evidence=analysis.backend.arch_evidence,
        initramfs_systemd=(
            analysis.image.systemd
            if analysis.image is not None and not analysis.image.error
            else s.platform.initramfs_systemd
        ),
    )


def build_report(
    analysis: Analysis,
    findings: Iterable[Finding],
    *,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    fail_on: str = "error",
    scope: str = "dom0",
) -> Report:
    kept = tuple(
        sorted(
            (f for f in findings if selected(f.id, select, ignore)),
            key=lambda f: (-f.severity, f.id, f.device or ""),
        )
    )
    devices = tuple(
        DeviceReport(
            bdf=str(d.bdf),
            id=d.device.id if d.device else None,
            wanted_by=d.wanted_by,
            native_driver=d.native.name,
            native_mode=d.native.mode,
            prediction=d.prediction,
        )
        for d in analysis.devices
    )
    return Report(
        target=target_of(analysis),
        backend=analysis.backend.backend,
        devices=devices,
        findings=kept,
        exit_code=exit_code(kept, fail_on),
        scope=scope,
    )


def _entry(analysis: Analysis) -> str | None:
    nb = analysis.system.next_boot
    if nb is None or nb.entry is None:
        return None
    return f"{nb.entry.title} ({nb.why})"
