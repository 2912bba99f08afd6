"""PB5xx: the guest side of passthrough."""

from __future__ import annotations

from collections.abc import Iterator

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.checks import Check, check
from pciback_doctor.model import Finding, Fix, Severity

FRONTEND = "CONFIG_XEN_PCIDEV_FRONTEND"


@check(
    "PB501",
    Severity.ERROR,
    "PV domU kernel lacks the PCI frontend",
    """A PV guest sees passed-through devices only through xen-pcifront (CONFIG_XEN_PCIDEV_FRONTEND, which
    depends on XEN_PV). Without it the guest boots but never sees the device. HVM guests do not need it.""",
    role="domu",
)
def no_frontend(chk: Check, a: Analysis) -> Iterator[Finding]:
    config = a.system.config
    if config is None:
        return
    if config.get(FRONTEND) not in ("y", "m"):
        yield chk.finding(
            f"{FRONTEND} is not set: a PV guest running this kernel never sees passed-through devices",
            evidence=[config.evidence(FRONTEND)],
            fixes=[
                Fix("kernel", "enable the PCI frontend", commands=(f"scripts/config --module {FRONTEND}",))
            ],
        )
