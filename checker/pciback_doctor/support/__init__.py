"""The support report (`pciback-doctor report`): one file to attach to a ticket, with the verdicts,
the findings and the facts behind them. Collected once (facts.py), then redacted as a separate pass
(redact.py), then rendered (html.py, markdown.py), which only lays out what it is given."""

from __future__ import annotations

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.facts.system import System
from pciback_doctor.model import Report
from pciback_doctor.support.facts import SupportReport, collect
from pciback_doctor.support.redact import redact as redact_report

__all__ = ["SupportReport", "build"]


def build(system: System, analysis: Analysis, report: Report, redact: bool = True) -> SupportReport:
    facts = collect(system, analysis, report)
    return redact_report(facts) if redact else facts
