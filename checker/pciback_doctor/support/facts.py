"""The facts a support ticket needs, gathered once from System + Analysis + Report into plain frozen
data (like sos' `setup`). Nothing here hides anything: redaction is its own pass (redact.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pciback_doctor import __version__
from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.facts.image import ImageFacts
from pciback_doctor.facts.modprobe import ModprobeConfig
from pciback_doctor.facts.modules import normalize
from pciback_doctor.facts.system import BACKEND, System
from pciback_doctor.model import Evidence, Finding, Report, Severity

# The config symbols a passthrough question turns on: Xen itself, the PCI backend/frontend, the
# IOMMU (Xen needs it for HVM passthrough), and whether the kernel carries its own config.
RELEVANT_CONFIG = re.compile(
    r"^CONFIG_(?:XEN\w*|\w*IOMMU\w*|\w*DMAR\w*|IRQ_REMAP|IKCONFIG\w*|PCI|PCI_STUB|PCI_MSI|PCI_IOV)$"
)
BACKEND_NAMES = frozenset({BACKEND, "pciback"})  # kmod: `-` and `_` are one; `pciback` is the old name
XL_PCI_SETTINGS = ("pci_permissive", "pci_seize", "pci_msitranslate", "pci_power_mgmt", "passthrough")


@dataclass(frozen=True)
class HostFacts:
    hostname: str | None  # etc/hostname; shown only so an unredacted ticket names the machine
    machine_id: str | None  # etc/machine-id; BLS entries and ESP paths carry it


@dataclass(frozen=True)
class PlatformFacts:
    """The root's platform profile (facts/platform.py) and the commands its fixes name. os-release
    names the distribution, never the machine: redaction leaves it as it is (redact.py)."""

    id: str
    name: str  # PRETTY_NAME
    family: str  # whose tools the fixes name
    evidence: tuple[Evidence, ...]
    os_name: str  # NAME, as boot menu titles spell the system ("Debian GNU/Linux")
    grub_update: str  # how this platform regenerates grub.cfg
    rebuild: str  # how it rebuilds the target kernel's initramfs


@dataclass(frozen=True)
class KernelFacts:
    release: str | None
    why: str
    running: str | None
    config_path: str | None
    config_lines: tuple[Evidence, ...]
    backend_mode: str  # builtin | module | missing | unknown
    backend_module: str
    backend_evidence: tuple[Evidence, ...]
    modules_path: str | None
    arch: str | None = None  # the target kernel's architecture (x86_64, arm64, ...)
    arch_evidence: Evidence | None = None  # the config line or header that says so


@dataclass(frozen=True)
class CmdlineFacts:
    dom0: str | None
    dom0_source: str | None  # path:line, or the option that gave it
    dom0_kind: str  # option | boot-entry | proc | none
    xen: str | None
    xen_source: str | None
    running: str | None  # proc/cmdline, when it differs from the next boot's


@dataclass(frozen=True)
class BootFacts:
    bootloader: str | None
    title: str | None
    entry_id: str | None
    menu_path: str | None
    kernel: str | None
    xen: str | None
    initrds: tuple[str, ...]
    why: str
    notes: tuple[Evidence, ...]  # staleness and problems the bootloader reader met


@dataclass(frozen=True)
class ImageSummary:
    path: str
    generator: str
    releases: tuple[str, ...]
    backend_present: bool
    native_present: tuple[tuple[str, bool], ...]  # each device's native module: in the image?
    hostonly: bool | None
    modprobe: tuple[Evidence, ...]
    cmdline_d: tuple[Evidence, ...]
    early_modules: tuple[Evidence, ...]
    hooks: tuple[str, ...]
    pciback_hook: Evidence | None
    error: str | None


@dataclass(frozen=True)
class DeviceFacts:
    bdf: str
    id: str | None
    pci_class: str | None
    current_driver: str | None
    driver_override: str | None
    wanted_by: tuple[str, ...]
    native_driver: str | None
    native_mode: str
    verdict: str  # claimed | not-claimed | unknown
    phase: str | None
    winner: str | None
    reason: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class DomuFacts:
    path: str
    guest_type: str
    kernel: str | None
    pci: tuple[Evidence, ...]
    settings: tuple[Evidence, ...]  # the pci_* defaults and `passthrough`
    errors: tuple[Evidence, ...]


@dataclass(frozen=True)
class DomuKernelFacts:
    path: str
    frontend: str
    module_present: bool | None
    note: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class SupportReport:
    tool: str
    redacted: bool
    scope: str
    root: str
    host: HostFacts
    platform: PlatformFacts
    kernel: KernelFacts
    cmdline: CmdlineFacts
    boot: BootFacts | None
    modprobe: tuple[Evidence, ...]
    modprobe_problems: tuple[Evidence, ...]
    image: ImageSummary | None
    image_problem: str | None
    devices: tuple[DeviceFacts, ...]
    domu_configs: tuple[DomuFacts, ...]
    domu_kernels: tuple[DomuKernelFacts, ...]
    findings: tuple[Finding, ...]
    errors: int
    warnings: int
    infos: int
    exit_code: int
    problems: tuple[Evidence, ...]  # discovered inputs that could not be read
    redactions: tuple[tuple[str, int], ...] = ()  # (kind, how many distinct values) once redacted


def collect(system: System, analysis: Analysis, report: Report) -> SupportReport:
    natives = frozenset(normalize(d.native.name) for d in analysis.devices if d.native.name)
    return SupportReport(
        tool=f"pciback-doctor {__version__}",
        redacted=False,
        scope=report.scope,
        root=report.target.root,
        host=_host(system),
        platform=_platform(analysis),
        kernel=_kernel(system, report),
        cmdline=_cmdline(system),
        boot=_boot(system),
        modprobe=_relevant(system.modprobe, natives),
        modprobe_problems=system.modprobe.problems,
        image=_image(analysis.image, natives, report.backend.mode) if analysis.image else None,
        image_problem=analysis.image_problem if analysis.image is None else None,
        devices=_devices(analysis, report),
        domu_configs=_domus(system),
        domu_kernels=tuple(
            DomuKernelFacts(k.path, k.frontend, k.module_present, k.note, k.evidence)
            for k in system.domu_kernels
        ),
        findings=report.findings,
        errors=report.count(Severity.ERROR),
        warnings=report.count(Severity.WARNING),
        infos=report.count(Severity.INFO),
        exit_code=report.exit_code,
        problems=system.problems,
    )


def where(e: Evidence) -> str:
    return e.path if e.line is None else f"{e.path}:{e.line}"


def _first_line(text: str | None) -> str | None:
    if text is None:
        return None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else None


def _host(system: System) -> HostFacts:
    return HostFacts(
        _first_line(system.root.read_text("etc/hostname")),
        _first_line(system.root.read_text("etc/machine-id")),
    )


def _platform(analysis: Analysis) -> PlatformFacts:
    from pciback_doctor.fixes import grub_update, rebuild_command  # the fix layer's own wording

    p = analysis.system.platform
    return PlatformFacts(
        p.id, p.name, p.family, p.evidence, p.os_name, grub_update(analysis), rebuild_command(analysis)
    )


def _kernel(system: System, report: Report) -> KernelFacts:
    config = system.config
    lines: tuple[Evidence, ...] = ()
    if config is not None:
        names = sorted(
            (n for n in config.values if RELEVANT_CONFIG.match(n)), key=lambda n: config.values[n][1]
        )
        lines = tuple(config.evidence(n) for n in names)
    return KernelFacts(
        release=system.release,
        why=system.release_source,
        running=system.running_release,
        config_path=config.path if config else None,
        config_lines=lines,
        backend_mode=report.backend.mode,
        backend_module=report.backend.module,
        backend_evidence=report.backend.evidence,
        modules_path=system.modules.path if system.modules else None,
        arch=report.target.arch,
        arch_evidence=report.target.arch_evidence,
    )


def _source(path: str | None, line: int | None) -> str | None:
    if path is None:
        return None
    return path if line is None else f"{path}:{line}"


def _cmdline(system: System) -> CmdlineFacts:
    dom0, xen, proc = system.cmdline, system.xen_cmdline, system.proc_cmdline
    running = proc.text if proc is not None and (dom0 is None or proc.text != dom0.text) else None
    return CmdlineFacts(
        dom0=dom0.text if dom0 else None,
        dom0_source=_source(dom0.source, dom0.line) if dom0 else None,
        dom0_kind=system.cmdline_kind,
        xen=xen.text if xen else None,
        xen_source=_source(xen.source, xen.line) if xen else None,
        running=running,
    )


def _boot(system: System) -> BootFacts | None:
    nb = system.next_boot
    if nb is None:
        return None
    notes = [Evidence(e.path, e.line, s.message) for s in nb.stale for e in s.evidence[:1]]
    notes += [Evidence(p.evidence.path, p.evidence.line, p.message) for p in nb.problems]
    entry = nb.entry
    return BootFacts(
        bootloader=nb.bootloader,
        title=entry.title if entry else None,
        entry_id=entry.id if entry else None,
        menu_path=entry.menu_path or None if entry else None,
        kernel=entry.kernel_path if entry else None,
        xen=entry.xen_path if entry else None,
        initrds=entry.initrd_paths if entry else (),
        why=nb.why,
        notes=tuple(notes),
    )


def _words(text: str) -> set[str]:
    return {normalize(w.rstrip(":;")) for w in re.split(r"[\s;|&]+", text) if w}


def _relevant(config: ModprobeConfig, natives: Iterable[str]) -> tuple[Evidence, ...]:
    """The directives that concern the backend or a passthrough device's native driver."""
    names = BACKEND_NAMES | set(natives)
    found = []
    for d in config.directives:
        module = normalize(d.module)
        # an install command names programs by path: /sbin/modprobe xen-pciback
        words = _words(d.args) | {normalize(w.rsplit("/", 1)[-1]) for w in d.args.split()}
        if module in names or words & names:
            found.append(d.evidence)
    return tuple(found)


def _image(image: ImageFacts, natives: frozenset[str], backend_mode: str) -> ImageSummary:
    return ImageSummary(
        path=image.path,
        generator=image.generator,
        releases=image.releases,
        backend_present=BACKEND in image.modules or backend_mode == "builtin",
        native_present=tuple((n, n in image.modules) for n in sorted(natives)),
        hostonly=image.hostonly,
        modprobe=_relevant(image.modprobe, natives),
        cmdline_d=tuple(Evidence(c.source, c.line, c.text) for c in image.cmdline_d),
        early_modules=tuple(e for _name, e in image.early_modules),
        hooks=image.hooks,
        pciback_hook=image.pciback_hook.hook if image.pciback_hook else None,
        error=image.error,
    )


def _devices(analysis: Analysis, report: Report) -> tuple[DeviceFacts, ...]:
    by_bdf = {str(d.bdf): d for d in analysis.devices}
    out = []
    for d in report.devices:
        found = by_bdf.get(d.bdf)
        pci = found.device if found else None
        p = d.prediction
        out.append(
            DeviceFacts(
                bdf=d.bdf,
                id=d.id,
                pci_class=f"{pci.pci_class:06x}" if pci and pci.pci_class is not None else None,
                current_driver=pci.driver if pci else None,
                driver_override=pci.driver_override if pci else None,
                wanted_by=d.wanted_by,
                native_driver=d.native_driver,
                native_mode=d.native_mode,
                verdict=str(p.verdict),
                phase=str(p.phase) if p.phase else None,
                winner=p.winner,
                reason=p.reason,
                evidence=p.evidence,
            )
        )
    return tuple(out)


def _domus(system: System) -> tuple[DomuFacts, ...]:
    out = []
    for c in system.domu_configs:
        settings = tuple(c.settings[n].evidence for n in XL_PCI_SETTINGS if n in c.settings)
        out.append(
            DomuFacts(
                path=c.path,
                guest_type=c.guest_type,
                kernel=c.kernel,
                pci=tuple(s.evidence for s in c.pci),
                settings=settings,
                errors=tuple(Evidence(e.evidence.path, e.evidence.line, e.message) for e in c.errors),
            )
        )
    return tuple(out)
