"""PB109: the admin's waivers. Waivers are applied to the findings after the checks ran
(facts/waivers.py: apply_waivers), so this check finds nothing itself; it is registered so the catalogue,
`explain PB109` and the SARIF / JUnit rule lists know the finding apply_waivers makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.facts.waivers import EXPIRED_ID, EXPIRED_TITLE
from pciback_doctor.model import Finding, Severity

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis


@check(
    EXPIRED_ID,
    Severity.WARNING,
    EXPIRED_TITLE,
    """A waiver in the --waivers file has passed its 'expires' date, so it covers nothing any more and the
    findings it covered count toward the exit status again. The file is TOML with one [[waiver]] table per
    accepted finding: id = "PB305" (a check ID, or a prefix such as "PB3" for the whole range), optional
    device = "0000:05:00.0" and path = "etc/modprobe.d/x.conf" (the waiver then covers only findings about
    that device, or with evidence in that file), justification = "why it is accepted" (required) and optional
    expires = 2027-01-31 (the last day it applies). A waived finding stays in the report with its
    justification but does not count toward the exit status. Fix what the waiver covered and remove it, or
    give it a later date.""",
)
def expired_waiver(chk: Check, a: Analysis) -> Iterator[Finding]:
    return iter(())
