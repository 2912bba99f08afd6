"""PB1xx: does the target kernel have the PCI backend, and under which name?"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.arches import backend_exists
from pciback_doctor.checks import Check, check
from pciback_doctor.model import Evidence, Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis


@check(
    "PB101",
    Severity.ERROR,
    "The kernel has no PCI backend",
    """Passthrough needs the xen-pciback driver in dom0 (drivers/xen/xen-pciback). Without it nothing can hold
    a device for a guest. x86 builds it from CONFIG_XEN_PCIDEV_BACKEND, arm64 and arm from CONFIG_XEN_PCIDEV_STUB
    (the same module without its PV half), classic XenLinux trees as the module pciback. Build the kernel with
    that symbol =m (or =y), or boot a distribution kernel that has it (Debian's amd64 and arm64 flavours do; its
    cloud flavour has no dom0 support).""",
)
def backend_missing(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode == "missing":
        yield chk.finding(
            f"{_kernel(a)} has no {_module(a)}, neither built in nor as a module{_why_missing(a)}",
            # without a config, what showed the architecture is evidence too (facts/machine.py)
            evidence=[*a.backend.backend.evidence, *([] if a.system.config else _arch_evidence(a))],
            fixes=_backend_fixes(a),
        )


def _why_missing(a: Analysis) -> str:
    arch, config = a.backend.arch, a.system.config
    if arch is None:
        return ""
    if arch.backend_kind == "none":
        return f" ({arch.name}: Linux has Xen only on x86, arm64 and arm)"
    if config is None:
        return f" (an {arch.name} kernel, whose backend is {arch.backend})"
    if not backend_exists(arch, config):
        return f" (this {arch.name} tree has no {arch.backend})"
    return f" ({arch.backend} is not set)"


def _arch_evidence(a: Analysis) -> list[Evidence]:
    return [a.backend.arch_evidence] if a.backend.arch_evidence is not None else []


def _backend_fixes(a: Analysis) -> list[Fix]:
    """The architecture's own symbol, never one it lacks (XEN_PCIDEV_BACKEND `depends on X86`,
    XEN_PCIDEV_STUB `depends on !X86`: drivers/xen/Kconfig)."""
    arch, config = a.backend.arch, a.system.config
    if arch is None:  # neither a config nor the kernel's bytes say which architecture
        return [
            Fix(
                "kernel",
                "enable the backend in the kernel build: CONFIG_XEN_PCIDEV_BACKEND on x86, "
                "CONFIG_XEN_PCIDEV_STUB on arm64 and arm (give --config to get the exact commands)",
            )
        ]
    if arch.backend_kind == "none":
        return [Fix("kernel", arch.dom0_note)]
    if config is not None and not backend_exists(arch, config):
        return [Fix("kernel", f"use a kernel whose tree has {arch.backend} (Linux 5.16 or later on Arm)")]
    if not arch.dom0_fix and _dom0_lacks(a):
        return [Fix("kernel", arch.dom0_note)]  # no dom0 here: a backend would serve nothing
    what = "enable the backend in the kernel build"
    if _dom0_lacks(a):  # Kconfig drops the backend again while XEN_BACKEND (dom0 support) is off
        what += " after dom0 support (PB106): it depends on CONFIG_XEN_BACKEND"
    return [Fix("kernel", what, commands=(arch.backend_fix, "make olddefconfig"))]


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
            f"{_module(a)} is built in{_kind(a)}: hide must be on the dom0 kernel command line",
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
            f"{_module(a)} is a module{_kind(a)}: it must load before the devices' native drivers",
            evidence=a.backend.backend.evidence,
        )


@check(
    "PB104",
    Severity.WARNING,
    "Kernel config and module tree disagree about the backend",
    """The config says one thing about the backend's symbol (CONFIG_XEN_PCIDEV_BACKEND on x86,
    CONFIG_XEN_PCIDEV_STUB on Arm) and modules.builtin / the module files say another: the config probably belongs to another build, or the module tree was not installed from the same
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
    if a.backend.backend.mode == "missing" or a.backend.backend.module == "pciback":
        return  # no backend, or a classic XenLinux one, whose name *is* pciback
    aliased = any(d.args.replace("-", "_") == "xen_pciback" for d in a.system.modprobe.aliases_for("pciback"))
    claimed = [d for d in a.devices if d.prediction.verdict is Verdict.CLAIMED]
    claimed_at = {(d.bdf.domain, d.bdf.bus, d.bdf.slot, d.bdf.func) for d in claimed}
    for source in a.hides:
        if not source.classic:
            continue
        spelled = "pciback.hide=" if source.origin == "cmdline" else "options pciback"
        # `hide` is a charp: a second value would replace the first, so the rename is ONE value
        # holding every device named anywhere, never a copy of this line next to another
        from pciback_doctor.fixes import hide_value  # the fix layer, only when a finding needs it

        value = hide_value(a, [])
        if a.backend.backend.mode == "builtin" or source.origin == "cmdline":
            # a built-in backend reads the command line only (kmod never applies options to it)
            where = "" if source.origin == "cmdline" else " (a built-in backend reads no modprobe.d)"
            fixed = (
                f"one 'xen-pciback.hide={value}' on the dom0 kernel command line{where}, replacing every "
                "(xen-)pciback.hide= there (`pciback-doctor fix --strategy cmdline` says where it goes)"
            )
        else:
            fixed = (
                f"one 'options xen-pciback hide={value}' in modprobe.d instead of this and any other "
                "hide= line (pciback-doctor fix --strategy modprobe writes it)"
            )
        note = (
            " (an 'alias pciback xen_pciback' exists, so it applies only when something runs 'modprobe pciback')"
            if aliased and a.backend.backend.mode == "module"
            else ""
        )
        # severity follows effect: a line the model used to claim a device applies (kmod picks up
        # `options pciback` when the module is requested as pciback); one whose devices all end up
        # claimed anyway changes no outcome
        used = any(source.evidence in d.prediction.evidence for d in claimed)
        named = [e for e in source.spec.intended() if e.slot is not None and e.func is not None]
        harmless = all((e.domain, e.bus, e.slot, e.func) in claimed_at for e in named)
        if used:
            message = f"'{spelled}' applies only because 'alias pciback xen_pciback' loads it under that name"
        else:
            message = f"'{spelled}' is ignored: the backend module is xen_pciback{note}"
        yield chk.finding(
            message,
            evidence=[source.evidence],
            fixes=[Fix("rename", fixed)],
            severity=Severity.INFO if used else Severity.WARNING if harmless else None,
        )


def _dom0_wrong(a: Analysis) -> list[tuple[str, str]]:
    """The dom0 symbols (of this architecture) whose values rule dom0 out, with the values needed."""
    config, arch = a.system.config, a.backend.arch
    if config is None or arch is None:
        return []
    # a minimal config's absent symbol takes its default: never read as "not set" (the gate expands it)
    return [(s, ok) for s, ok in arch.dom0 if config.known(s) and config.get(s) not in ok]


def _dom0_lacks(a: Analysis) -> bool:
    return bool(_dom0_wrong(a))


@check(
    "PB106",
    Severity.ERROR,
    "The kernel cannot serve as dom0",
    """Xen's control domain needs CONFIG_XEN_DOM0 (and with it CONFIG_XEN_BACKEND, which the PCI backend
    depends on); classic XenLinux trees call it CONFIG_XEN_PRIVILEGED_GUEST (their XEN_BACKEND may be =m). On
    x86 XEN_DOM0 needs XEN_PV (64-bit only since Linux 5.9) or a 64-bit PVH dom0; on Arm it follows CONFIG_XEN.
    Kernels built for guests only (Debian's cloud flavour, for example) boot under Xen as a domU but not as
    dom0.""",
)
def not_dom0(chk: Check, a: Analysis) -> Iterator[Finding]:
    config, arch = a.system.config, a.backend.arch
    wrong = _dom0_wrong(a)
    if wrong and config is not None and arch is not None:
        yield chk.finding(
            f"{'; '.join(_state(config.get(s), s, ok) for s, ok in wrong)}: {_kernel(a)} cannot be Xen's dom0",
            evidence=[config.evidence(s) for s, _ in wrong],
            fixes=[Fix("kernel", f"dom0 support on {arch.name}: {arch.dom0_note}", commands=arch.dom0_fix)],
        )


def _state(value: str, symbol: str, ok: str) -> str:
    """What the config says, in the words of the line it quotes."""
    if value == "n":
        return f"{symbol} is not set"
    return f"{symbol}={value} (dom0 needs {' or '.join(ok)})"


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
    broken = a.system.backend_module_problem
    if broken is not None and broken.path not in a.system.root.unreadable:
        yield chk.finding(
            f"{broken.path}: {broken.text}; whether xen-pciback can load is unknown", evidence=[broken]
        )


# Xen's parse_bool (xen/common/kernel.c): the words a boolean option takes
_XEN_TRUE, _XEN_FALSE = {"1", "on", "yes", "true", "enable"}, {"0", "no", "off", "false", "disable"}


def _xen_pci_passthrough(a: Analysis) -> tuple[bool, Evidence | None]:
    """Whether Xen's command line turns `pci-passthrough` on, and the token that decides: the last
    one wins; `no-` inverts (parse_params in xen/common/kernel.c; names compare exactly, strcmp)."""
    xen = a.system.xen_cmdline
    state, evidence = False, None
    for p in xen.params if xen is not None else ():
        if p.key not in ("pci-passthrough", "no-pci-passthrough"):
            continue
        value = p.value or "1"  # `pci-passthrough=` too: an empty value is true
        evidence = xen.evidence(p) if xen is not None else None
        # parse_bool compares case-sensitively (`ON` is refused); a refused value changes nothing
        if value in _XEN_TRUE | _XEN_FALSE:
            state = (value in _XEN_TRUE) != p.key.startswith("no-")
    return state, evidence


@check(
    "PB111",
    Severity.WARNING,
    "Xen on Arm: PCI passthrough is not switched on",
    """On Arm, pciback (the CONFIG_XEN_PCIDEV_STUB build of xen-pciback) only holds a device: Xen itself
    assigns it. Xen on Arm does that only with `pci-passthrough=on` on its command line (default off,
    xen/arch/arm/pci/pci.c; without it PHYSDEVOP_pci_device_add fails with EOPNOTSUPP unless an IOMMU is
    on) and, since Xen 4.21, a hypervisor built with CONFIG_PCI_PASSTHROUGH (an EXPERT option). Xen's
    SUPPORT.md lists PCI passthrough on Arm as not supported (only non-PCI device passthrough, by the
    `xen,passthrough` device-tree property, which hides a platform device from dom0 without pciback).
    The doctor's prediction says who owns the device in dom0; this says whether Xen can hand it on.""",
)
def arm_pci_passthrough(chk: Check, a: Analysis) -> Iterator[Finding]:
    arch = a.backend.arch
    if arch is None or arch.backend_kind != "stub" or not a.devices:
        return
    on, evidence = _xen_pci_passthrough(a)
    if on:
        return
    fix = Fix(
        "xen-cmdline",
        "add pci-passthrough=on to Xen's command line (GRUB_CMDLINE_XEN_DEFAULT in etc/default/grub, the "
        "options of xen.cfg, or the device tree's xen,xen-bootargs), on a Xen built with CONFIG_PCI_PASSTHROUGH",
    )
    xen = a.system.xen_cmdline
    if xen is None:
        yield chk.finding(
            f"an {arch.name} dom0: Xen's command line was not found, and Xen on Arm assigns PCI devices only "
            "with pci-passthrough=on (default off)",
            evidence=[e for e in (a.backend.arch_evidence,) if e is not None],
            fixes=[fix],
            severity=Severity.INFO,
        )
        return
    said = f"{evidence.text} leaves it off" if evidence is not None else "it has no pci-passthrough=on"
    yield chk.finding(
        f"an {arch.name} dom0 whose Xen command line lacks pci-passthrough=on ({said}): pciback can hold "
        "the devices, but Xen on Arm will not assign them to a guest",
        evidence=[
            e for e in (evidence or Evidence(xen.source, xen.line, xen.text), a.backend.arch_evidence) if e
        ],
        fixes=[fix],
    )


def _module(a: Analysis) -> str:
    return "pciback" if a.backend.backend.module == "pciback" else "xen-pciback"


def _kind(a: Analysis) -> str:
    arch = a.backend.arch
    if arch is None or a.backend.backend.module == "pciback":
        return " (classic XenLinux)" if arch is not None else ""
    if arch.backend_kind == "stub":
        return f" ({arch.backend}: the {arch.name} stub, which holds devices for assignment; no PV backend)"
    return ""


def _kernel(a: Analysis) -> str:
    return f"kernel {a.system.release}" if a.system.release else "this kernel"
