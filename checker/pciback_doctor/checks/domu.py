"""PB5xx: the guest side of passthrough."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.facts.domu import FRONTEND
from pciback_doctor.model import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis


@check(
    "PB501",
    Severity.ERROR,
    "PV domU kernel lacks the PCI frontend",
    """A PV guest sees passed-through devices only through xen-pcifront (CONFIG_XEN_PCIDEV_FRONTEND, which
    depends on XEN_PV). Without it the guest boots but never sees the device. HVM guests do not need it.""",
    role="domu",
)
def no_frontend(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel in a.system.domu_kernels:
        if kernel.frontend == "missing":
            yield chk.finding(
                f"{kernel.path}: {FRONTEND} is not set: a PV guest running this kernel never sees passed-through devices",
                evidence=kernel.evidence,
                fixes=[
                    Fix(
                        "kernel", "enable the PCI frontend", commands=(f"scripts/config --module {FRONTEND}",)
                    )
                ],
            )
        elif kernel.frontend == "unknown":
            yield chk.finding(
                f"{kernel.path}: cannot tell whether it has the PCI frontend: {kernel.note}",
                severity=Severity.INFO,
            )


@check(
    "PB507",
    Severity.INFO,
    "Cannot tell whether the domU kernel has the PCI frontend",
    """The kernel was given as something that does not decide it: a bzImage without IKCONFIG whose
    symbols show the frontend is not built in (it may still be a module), or an empty module tree.
    Give its config (boot/config-K) or its module tree as well.""",
    role="domu",
)
def frontend_unknown(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel in a.system.domu_kernels:
        if kernel.frontend == "unknown":
            yield chk.finding(f"{kernel.path}: {kernel.note}")


@check(
    "PB502",
    Severity.WARNING,
    "Frontend is a module the domU may not have",
    """CONFIG_XEN_PCIDEV_FRONTEND=m: xen-pcifront must be in the guest's module tree (and in its initramfs
    if the device is needed early). xenbus autoloads it through its xen:pci alias once it is installed.""",
    role="domu",
)
def frontend_module(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kernel in a.system.domu_kernels:
        if kernel.frontend == "module" and kernel.module_present is False:
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
    for kernel in a.system.domu_kernels:
        if kernel.frontend in ("builtin", "module"):
            how = "built in" if kernel.frontend == "builtin" else "a module"
            yield chk.finding(f"{kernel.path}: the PCI frontend is {how}", evidence=kernel.evidence)


@check(
    "PB503",
    Severity.INFO,
    "Guest type and passthrough",
    """PV guests need the PCI frontend; HVM guests get devices through QEMU and the IOMMU and need no
    frontend; libxl refuses pci= for PVH guests on x86 (there is no PCI passthrough for PVH there).""",
    role="domu",
)
def guest_type(chk: Check, a: Analysis) -> Iterator[Finding]:
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
    from pciback_doctor.boot.analysis import spec_devices

    predictions = {d.bdf: d for d in a.devices}
    known = [d.bdf for d in a.system.devices]
    for config in a.domu_configs:
        for spec in config.pci:
            if spec.seize:
                continue
            for bdf in spec_devices(spec, known):
                dev = predictions.get(bdf)
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
