"""The check catalogue (SPEC §7): one module per ID range, each check a small function registered
with its ID, severity, title and explanation. Checks read no files: they look at an `Analysis`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pciback_doctor.model import Evidence, Finding, Fix, Severity

if TYPE_CHECKING:
    from pciback_doctor.boot.analysis import Analysis


@dataclass(frozen=True)
class Check:
    id: str
    severity: Severity
    title: str
    explanation: str
    run: Callable[[Check, Analysis], Iterable[Finding]]
    role: str = "dom0"  # dom0 | domu: which side of passthrough the check is about

    def evaluate(self, analysis: Analysis) -> list[Finding]:
        return list(self.run(self, analysis))

    def finding(
        self,
        message: str,
        *,
        device: str | None = None,
        evidence: Iterable[Evidence] = (),
        fixes: Iterable[Fix] = (),
        severity: Severity | None = None,
    ) -> Finding:
        return Finding(
            self.id,
            severity or self.severity,
            self.title,
            message,
            device,
            tuple(evidence),
            tuple(fixes),
        )


REGISTRY: dict[str, Check] = {}


def check(
    id: str, severity: Severity, title: str, explanation: str, role: str = "dom0"
) -> Callable[[Callable[[Check, Analysis], Iterable[Finding]]], Check]:
    """Register a check; the function gets the check itself (to make findings) and the analysis."""

    def register(fn: Callable[[Check, Analysis], Iterable[Finding]]) -> Check:
        REGISTRY[id] = Check(id, severity, title, " ".join(explanation.split()), fn, role)
        return REGISTRY[id]

    return register


def all_checks() -> dict[str, Check]:
    # importing the modules registers their checks
    from pciback_doctor.checks import (  # noqa: F401
        backend,
        binders,
        boot,
        domu,
        dracut,
        hide,
        initramfs,
        nextboot,
        waivers,
    )

    return dict(sorted(REGISTRY.items()))


def run_checks(analysis: Analysis, roles: frozenset[str] = frozenset({"dom0"})) -> list[Finding]:
    findings: list[Finding] = []
    for chk in all_checks().values():
        if chk.role in roles:
            findings.extend(chk.evaluate(analysis))
    return findings
