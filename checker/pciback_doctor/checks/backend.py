"""PB1xx: does the target kernel have the PCI backend, and under which name?"""

from __future__ import annotations

from collections.abc import Iterator

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.checks import Check, check
from pciback_doctor.model import Evidence, Finding, Fix, Severity


@check(
    "PB101",
    Severity.ERROR,
    "The kernel has no PCI backend",
    """Passthrough needs the xen-pciback driver in dom0 (CONFIG_XEN_PCIDEV_BACKEND, drivers/xen/xen-pciback).
    Without it nothing can hold a device for a guest. Build the kernel with CONFIG_XEN_PCIDEV_BACKEND=m (or =y),
    or boot a distribution kernel that has it (Debian's amd64 flavour does; its cloud flavour has no dom0 support).""",
)
def backend_missing(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode == "missing":
        yield chk.finding(
            f"{_kernel(a)} has no xen-pciback, neither built in nor as a module",
            evidence=a.backend.backend.evidence,
            fixes=[
                Fix(
                    "kernel",
                    "enable the backend in the kernel build",
                    commands=("scripts/config --module CONFIG_XEN_PCIDEV_BACKEND",),
                )
            ],
        )


@check(
    "PB102",
    Severity.INFO,
    "The backend is built into the kernel",
    """A built-in xen-pciback reads its hide list once, at fs_initcall, from the kernel command line
    (xen-pciback.hide=...). Options for it in modprobe.d are never applied: kmod does not apply options to
    built-in modules. In exchange it claims devices before any driver, built-in ones included.""",
)
def backend_builtin(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode == "builtin":
        yield chk.finding(
            "xen-pciback is built in: hide must be on the dom0 kernel command line",
            evidence=a.backend.backend.evidence,
        )


@check(
    "PB103",
    Severity.INFO,
    "The backend is a module",
    """A modular xen-pciback claims only devices that are still unbound when it loads; the driver core never
    takes a bound device from its driver. So it must load before the native driver, in the initramfs when the
    native driver is there, and its hide option must reach it (modprobe.d options or xen-pciback.hide= on the
    command line). See PB301-PB305.""",
)
def backend_module(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode == "module":
        yield chk.finding(
            "xen-pciback is a module: it must load before the devices' native drivers",
            evidence=a.backend.backend.evidence,
        )


@check(
    "PB104",
    Severity.WARNING,
    "Kernel config and module tree disagree about the backend",
    """The config says one thing about CONFIG_XEN_PCIDEV_BACKEND and modules.builtin / the module files say
    another: the config probably belongs to another build, or the module tree was not installed from the same
    build. The doctor follows the config; check which kernel will really boot.""",
)
def backend_disagreement(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.disagreement:
        yield chk.finding(
            "the kernel config, modules.builtin and the module files do not agree on xen-pciback",
            evidence=a.backend.disagreement,
        )


@check(
    "PB105",
    Severity.ERROR,
    "Classic 'pciback' name on a kernel whose backend is xen_pciback",
    """Before Linux 3.1 (XenLinux) the backend module was called pciback, and guides still say pciback.hide=
    or 'options pciback hide=...'. Mainline kernels name the module xen_pciback (file xen-pciback.ko): the kernel
    and kmod both ignore parameters for a module called pciback, so the devices are silently not hidden. Write
    xen-pciback.hide= on the command line or 'options xen-pciback hide=...' in modprobe.d.""",
)
def classic_name(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode == "missing":
        return
    aliased = any(d.args.replace("-", "_") == "xen_pciback" for d in a.system.modprobe.aliases_for("pciback"))
    for source in a.hides:
        if not source.classic:
            continue
        spelled = "pciback.hide=" if source.origin == "cmdline" else "options pciback"
        fixed = f"write '{source.evidence.text.replace('pciback', 'xen-pciback', 1)}' instead"
        if a.backend.backend.mode == "builtin" and source.origin != "cmdline":
            # a built-in backend reads the command line only (kmod never applies options to it)
            fixed = f"put 'xen-pciback.hide={source.value}' on the dom0 kernel command line (a built-in backend reads no modprobe.d)"
        note = (
            " (an 'alias pciback xen_pciback' exists, so it applies only when something runs 'modprobe pciback')"
            if aliased and a.backend.backend.mode == "module"
            else ""
        )
        yield chk.finding(
            f"'{spelled}' is ignored: the backend module is xen_pciback{note}",
            evidence=[source.evidence],
            fixes=[Fix("rename", fixed)],
        )


@check(
    "PB106",
    Severity.ERROR,
    "The kernel cannot serve as dom0",
    """Xen's control domain needs CONFIG_XEN_DOM0 (and with it CONFIG_XEN_BACKEND, which the PCI backend
    depends on). Kernels built for guests only (Debian's cloud flavour, for example) boot under Xen as a domU
    but not as dom0.""",
)
def not_dom0(chk: Check, a: Analysis) -> Iterator[Finding]:
    config = a.system.config
    if config is None:
        return
    missing = [s for s in ("CONFIG_XEN_DOM0", "CONFIG_XEN_BACKEND") if config.get(s) != "y"]
    if missing:
        yield chk.finding(
            f"{' and '.join(missing)} not set: {_kernel(a)} cannot be Xen's dom0",
            evidence=[config.evidence(s) for s in missing],
        )


@check(
    "PB107",
    Severity.WARNING,
    "No kernel config for the target kernel",
    """Without the kernel's config (boot/config-K, lib/modules/K/config, /proc/config.gz or IKCONFIG in the
    image) the doctor falls back to modules.builtin and the module files; dom0 support (PB106) cannot be
    checked. Pass --config to name it.""",
)
def no_config(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.system.config is None:
        yield chk.finding(
            f"no kernel config found for {a.system.release or 'the target kernel'}; using the module tree only",
            evidence=list(a.system.problems),
        )


@check(
    "PB108",
    Severity.WARNING,
    "modprobe configuration that kmod ignores",
    """kmod reads only *.conf files in etc/modprobe.d, run/modprobe.d, usr/local/lib/modprobe.d,
    usr/lib/modprobe.d and lib/modprobe.d. It does not read /etc/modprobe.conf, skips a line whose first word
    is not a command (a '#' is a comment only in the first column), and ignores 'include'. Settings written
    there have no effect.""",
)
def ignored_modprobe(chk: Check, a: Analysis) -> Iterator[Finding]:
    by_file: dict[str, list[Evidence]] = {}
    for problem in a.system.modprobe.problems:
        by_file.setdefault(problem.path, []).append(problem)
    for path, problems in by_file.items():
        if len(problems) <= 3:
            yield from (chk.finding(p.text, evidence=[p]) for p in problems)
        else:  # a binary or foreign file: one finding, not one per line
            yield chk.finding(
                f"{path}: kmod ignores {len(problems)} lines of it (is it a modprobe.d file?)",
                evidence=problems[:3],
            )


@check(
    "PB110",
    Severity.ERROR,
    "Part of the system could not be read",
    """A file or directory the doctor needs exists under the root but could not be read (permissions,
    I/O error), is not a regular file (a FIFO or a device is never opened), or is over one of the doctor's
    size limits (the message names it). The answer was worked out without it and may be wrong: a modprobe.d file, a bootloader
    configuration or a kernel config that cannot be read changes everything. Run as root, or fix the
    permissions, and check again.""",
)
def unreadable(chk: Check, a: Analysis) -> Iterator[Finding]:
    for path, why in sorted(a.system.root.unreadable.items()):
        yield chk.finding(f"{path}: {why}", evidence=[Evidence(path, None, why)])


def _kernel(a: Analysis) -> str:
    return f"kernel {a.system.release}" if a.system.release else "this kernel"
