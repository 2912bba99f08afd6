"""PB5xx: the guest side of passthrough."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePath
from typing import TYPE_CHECKING

from pciback_doctor.arches import arch_named, arch_of, names_arch, pv_symbol
from pciback_doctor.checks import Check, check
from pciback_doctor.facts.domu import FRONTEND, DomuKernel
from pciback_doctor.facts.pci import Bdf
from pciback_doctor.model import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis
    from pciback_doctor.facts.xl import PciSpec, XlConfig

_RELEASE = re.compile(r"^\d+\.\d+(\.\d+)?([-+.~_][\w.+~-]*)?$")


def kernel_verdict(kernel: DomuKernel) -> tuple[str, str]:
    """One verdict per domU kernel, and why: `lacks` (a PV kernel without the frontend), `has`,
    `not-needed` (it cannot run PV: no XEN_PV, or an Arm kernel) or `unknown`. Every PB50x finding on a
    kernel comes from here, so no two of them contradict each other."""
    config = kernel.config
    told = kernel.machine is not None and (config is None or not names_arch(config))
    if told and kernel.machine is not None and arch_named(kernel.machine.arch).pv is None:
        # the kernel's bytes (or the gate's --arch) show an architecture without PV guests (Arm),
        # where no config says which architecture it is
        return "not-needed", f"{_an(kernel.machine.arch)} guest is never PV: it needs no PCI frontend"
    if config is not None:
        arch = arch_of(config)
        pv = pv_symbol(arch, config)
        if pv is None:
            return "not-needed", f"{_an(arch.name)} guest is never PV: it needs no PCI frontend"
        if not config.known(pv):
            return "unknown", f"a defconfig-form config without {pv}: give the expanded .config"
        if config.get(pv) != "y":
            return "not-needed", (
                f"{_said(config.evidence(pv).text)}: it runs only as an HVM or PVH guest, whose devices "
                "pass through QEMU and the IOMMU without a frontend"
            )
    if kernel.frontend in ("builtin", "module"):
        return "has", "built in" if kernel.frontend == "builtin" else "a module"
    if kernel.frontend == "missing":
        if config is not None:
            pv = pv_symbol(arch_of(config), config)
            return "lacks", f"{_said(config.evidence(FRONTEND).text)} in a PV-capable kernel ({pv}=y)"
        return "lacks", "no xen-pcifront in it, built in or as a module"
    return "unknown", kernel.note


def _an(arch: str) -> str:
    """`an arm64`, `an x86_64`, `an s390`, `a riscv`: the article as the name is spoken."""
    return f"{'an' if arch[:1] in 'aeiosx' else 'a'} {arch}"


def _said(line: str) -> str:
    """An evidence line as a clause: `# CONFIG_X is not set` -> `CONFIG_X is not set`."""
    return line.removeprefix("# ")


def _release(path: str) -> str:
    """The kernel a domU input belongs to: `vmlinuz-R`, `vmlinux-R`, `config-R` and a module tree
    `.../R` are one kernel R (Debian's and kernel-install's names); anything else is itself."""
    name = PurePath(path).name
    for prefix in ("vmlinuz-", "vmlinux-", "config-", "bzImage-"):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name if _RELEASE.match(name) else path


def _kernels(a: Analysis) -> list[tuple[DomuKernel, str, str]]:
    """One entry per domU kernel: the inputs that name the same kernel (its image, config and
    module tree) give one verdict, from the most decisive of them: a config (it knows XEN_PV), then
    whatever decides the frontend, then the rest."""
    groups: dict[str, list[tuple[DomuKernel, str, str]]] = {}
    for kernel in a.system.domu_kernels:
        groups.setdefault(_release(kernel.path), []).append((kernel, *kernel_verdict(kernel)))
    chosen = []
    for release, group in groups.items():
        kernel, verdict, why = min(group, key=lambda k: (k[0].config is None, k[1] == "unknown"))
        others = [PurePath(k.path).name for k, _, _ in group if k.path != kernel.path]
        if others:
            why += f" (one verdict for kernel {release}, also given as {', '.join(dict.fromkeys(others))})"
        chosen.append((kernel, verdict, why))
    return chosen


@check(
    "PB501",
    Severity.ERROR,
    "PV domU kernel lacks the PCI frontend",
    """A PV guest sees passed-through devices only through xen-pcifront (CONFIG_XEN_PCIDEV_FRONTEND, which
    depends on XEN_PV). Without it the guest boots but never sees the device. A kernel without XEN_PV (HVM or
    PVH only) and Arm kernels need no frontend (PB503).""",
    role="domu",
)
def no_frontend(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel, verdict, why in _kernels(a):
        if verdict == "lacks":
            yield chk.finding(
                f"{kernel.path}: {why}: a PV guest running this kernel never sees passed-through devices",
                evidence=kernel.evidence,
                fixes=[
                    Fix(
                        "kernel",
                        "enable the PCI frontend",
                        commands=(f"scripts/config --module {FRONTEND.removeprefix('CONFIG_')}",),
                    )
                ],
            )


@check(
    "PB507",
    Severity.INFO,
    "Cannot tell whether the domU kernel has the PCI frontend",
    """The kernel was given as something that does not decide it: a bzImage without IKCONFIG whose
    symbols show the frontend is not built in (it may still be a module), an empty module tree, a
    defconfig-form config, or an xl config's kernel= that is not in the root. Give its (full) config
    (boot/config-K) or its module tree as well.""",
    role="domu",
)
def frontend_unknown(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel, verdict, why in _kernels(a):
        if verdict == "unknown":
            yield chk.finding(f"{kernel.path}: cannot tell whether it has the PCI frontend: {why}")


@check(
    "PB502",
    Severity.WARNING,
    "Frontend is a module the domU may not have",
    """CONFIG_XEN_PCIDEV_FRONTEND=m: xen-pcifront must be in the guest's module tree (and in its initramfs
    if the device is needed early). xenbus autoloads it through its xen:pci alias once it is installed.""",
    role="domu",
)
def frontend_module(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel, verdict, _ in _kernels(a):
        if verdict == "has" and kernel.frontend == "module" and kernel.module_present is False:
            yield chk.finding(
                f"{kernel.path}: xen-pcifront is a module but not in the domU's module tree",
                evidence=kernel.evidence,
            )


@check(
    "PB506",
    Severity.INFO,
    "domU kernel has the PCI frontend",
    """The kernel has xen-pcifront built in or as a module: a PV guest running it can see passed-through
    devices (as a module, it must be installed in the guest; PB502).""",
    role="domu",
)
def has_frontend(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel, verdict, why in _kernels(a):
        if verdict == "has":
            yield chk.finding(f"{kernel.path}: the PCI frontend is {why}", evidence=kernel.evidence)


@check(
    "PB503",
    Severity.INFO,
    "Guest type and passthrough",
    """PV guests need the PCI frontend; HVM guests get devices through QEMU and the IOMMU and need no
    frontend, so a kernel without XEN_PV (or an Arm kernel, whose guests are never PV) passes the domU gate;
    libxl refuses pci= for PVH guests on x86 (there is no PCI passthrough for PVH there).""",
    role="domu",
)
def guest_type(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel, verdict, why in _kernels(a):
        if verdict == "not-needed" and kernel.config is not None and kernel.machine is None:
            pv = pv_symbol(arch_of(kernel.config), kernel.config)
            yield chk.finding(
                f"{kernel.path}: {why}",
                evidence=[kernel.config.evidence(pv)] if pv else list(kernel.evidence),
            )
        elif verdict == "not-needed" and kernel.machine is not None:
            yield chk.finding(f"{kernel.path}: {why}", evidence=[kernel.machine.evidence])
    for config in a.domu_configs:
        if not config.pci:
            continue
        if config.guest_type == "pvh":
            yield chk.finding(
                f"{config.path}: a PVH guest with pci=: libxl refuses to start it",
                evidence=[config.guest_type_evidence],
                severity=Severity.ERROR,
                fixes=[Fix("xl", 'use type = "hvm" for a guest that needs PCI passthrough')],
            )
        elif config.guest_type == "hvm":
            yield chk.finding(
                f"{config.path}: HVM guest: devices pass through QEMU and the IOMMU, no frontend needed",
                evidence=[config.guest_type_evidence],
            )


@check(
    "PB504",
    Severity.ERROR,
    "Device in a domU's pci= will not be pciback's",
    """xl assigns only devices pciback holds ('assignable'); when the boot leaves the device to its native
    driver the domain fails to start with 'not assignable'. Make the boot claim it (see the device's
    prediction), or add seize=1 to the pci= entry so xl takes it from its driver at domain start.""",
    role="domu",
)
def not_assignable(chk: Check, a: Analysis) -> Iterator[Finding]:
    from pciback_doctor.boot.analysis import spec_devices  # `explain` does not need the model

    predictions = {d.bdf: d for d in a.devices}
    known = [d.bdf for d in a.system.devices]
    absent = set(_absent(a))
    for config in a.domu_configs:
        for spec in config.pci:
            if spec.seize:
                continue
            for bdf in spec_devices(spec, known):
                dev = predictions.get(bdf)
                if bdf in absent:
                    continue  # PB508: no boot and no seize=1 gives xl a device that is not there
                if dev is not None and dev.prediction.verdict is not Verdict.CLAIMED:
                    yield chk.finding(
                        f"{config.path} passes {bdf} through, but the next boot leaves it {dev.prediction.verdict.value}"
                        + (f" ({dev.prediction.winner})" if dev.prediction.winner else ""),
                        device=str(bdf),
                        evidence=[spec.evidence],
                        fixes=[
                            Fix(
                                "xl",
                                f"add seize=1 to the entry: xl then takes {bdf} from its driver at domain start",
                            )
                        ],
                    )


@check(
    "PB505",
    Severity.ERROR,
    "Malformed xl config or pci= entry",
    """xl refuses to start a domain whose config it cannot parse, and a pci= entry must follow
    xl-pci-configuration(5): [DDDD:]BB:SS.F[@VSLOT][,KEY=VALUE...], F may be *.""",
    role="domu",
)
def malformed_xl(chk: Check, a: Analysis) -> Iterator[Finding]:
    for config in a.domu_configs:
        for error in config.errors:
            yield chk.finding(f"{config.path}: {error.message}", evidence=[error.evidence])


@check(
    "PB508",
    Severity.WARNING,
    "Device in a domU's pci= does not exist",
    """The device is not in sys/bus/pci/devices: a typo in the address, a card moved to another slot or
    renumbered after a BIOS change, or one that is powered down. pciback cannot hold a device that is
    not there, so xl cannot assign it and the domain does not start; hiding it at boot changes
    nothing. Find the device's address now (lspci -D) and correct the pci= entry.""",
    role="domu",
)
def absent_device(chk: Check, a: Analysis) -> Iterator[Finding]:
    for config, spec, bdf in _absent_entries(a):
        yield chk.finding(
            f"{config.path} passes {bdf} through, but there is no such device in sys/bus/pci/devices",
            device=str(bdf),
            evidence=[spec.evidence],
        )


def _absent_entries(a: Analysis) -> Iterator[tuple[XlConfig, PciSpec, Bdf]]:
    """xl pci= entries naming one function that the live sysfs does not list (--device counts as present)."""
    if not a.system.sysfs:
        return
    present = {d.bdf for d in (*a.system.devices, *a.system.offline_devices)}
    for config in a.domu_configs:
        for spec in config.pci:
            if spec.domain is None or spec.bus is None or spec.slot is None or spec.func is None:
                continue  # `name=` entries and `F = *` name what is there
            bdf = Bdf(spec.domain, spec.bus, spec.slot, spec.func)
            if bdf not in present:
                yield config, spec, bdf


def _absent(a: Analysis) -> Iterator[Bdf]:
    return (bdf for _, _, bdf in _absent_entries(a))
