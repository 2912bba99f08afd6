"""Boot lab: what really owns the device after udev settles (SPEC §9).

Each scenario (`scenarios.py`) boots Xen 4.17 + Debian's dom0 kernel under qemu with an image built
by the real dracut; the boots run once per session, in parallel (`conftest.lab_boots`).
"""

from __future__ import annotations

import pytest
from harness import BootResult, describe
from scenarios import E1000E, EXPECTED, SERIAL

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", list(EXPECTED))
def test_owner(name: str, lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots[name]
    assert result.completed, describe(result)
    want = EXPECTED[name]
    got = {bdf: result.owners.get(bdf, "?") for bdf in want}
    assert got == want, describe(result, list(want))


def test_module_runs_before_udev(lab_boots: dict[str, BootResult]) -> None:
    """At cmdline 00 udevd is not running and no module-backed driver owns the e1000e yet."""
    result = lab_boots["module-e1000e"]
    assert result.early.get("udevd") == "no", result.early
    assert result.early_owners.get(E1000E) == "none", result.early_owners
    assert result.lines("xen-pciback: 0000:00:04.0: owned by pciback"), describe(result)


def test_builtin_driver_is_unbound(lab_boots: dict[str, BootResult]) -> None:
    """8250_pci is built in: it owns the serial card before any hook; the module unbinds it."""
    result = lab_boots["module-serial-builtin"]
    assert result.early_owners.get(SERIAL) == "serial", result.early_owners
    assert result.lines("0000:00:05.0: unbinding from serial"), describe(result)


def test_malformed_entry_is_logged(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-malformed"]
    assert result.lines("xen-pciback: ERROR: rd.xen_pciback.hide: malformed device 'zz:99.9'")
    assert result.lines("1 device(s) owned by pciback, 1 failure(s)"), describe(result)


def test_no_failures_logged(lab_boots: dict[str, BootResult]) -> None:
    for name in ("module-e1000e", "module-serial-builtin", "module-hide-token", "module-conf-file"):
        result = lab_boots[name]
        assert not result.lines("xen-pciback: ERROR"), describe(result)


def test_disabled_logs_it(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-disabled"]
    assert result.lines("xen-pciback: disabled by rd.xen_pciback=0"), describe(result)


def test_strict_failure_is_fatal(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-strict"]
    assert not result.completed, describe(result)
    assert result.lines("FATAL: xen-pciback: 1 failure(s)"), describe(result)
