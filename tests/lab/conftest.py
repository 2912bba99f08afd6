"""Boot lab tier: skipped locally when its tools or packages are missing; on CI (CI=true) a
missing piece fails the tier instead, since CI installs everything the lab needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from harness import BootResult, dom0_kernel, require_tools, xen_elf

from debian import Unavailable

_HERE = Path(__file__).resolve().parent


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    try:
        require_tools()
        dom0_kernel()
        xen_elf()
    except Unavailable as exc:
        return str(exc)
    return None


#: The scenarios the selected tests need (all of them unless every selected lab test is one
#: scenario's `name` parameter): `-m lab -k qubes` boots only those.
_NEEDED: set[str] | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _NEEDED
    lab_items = [item for item in session.items if _HERE in Path(item.path).resolve().parents]
    names = [getattr(item, "callspec", None) and item.callspec.params.get("name") for item in lab_items]  # type: ignore[attr-defined]
    _NEEDED = {n for n in names if isinstance(n, str)} if lab_items and all(names) else None


def _scenarios() -> list[Any]:
    from scenarios import SCENARIOS

    return [s for s in SCENARIOS.values() if _NEEDED is None or s.name in _NEEDED]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lab_items = [item for item in items if _HERE in Path(item.path).resolve().parents]
    if not lab_items or on_ci():
        return
    reason = lab_unavailable()
    if reason is not None:
        for item in lab_items:
            item.add_marker(pytest.mark.skip(reason=f"boot lab unavailable: {reason}"))


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Fails (CI) or skips (locally) when the lab cannot run."""
    reason = lab_unavailable()
    if reason is None:
        return
    if on_ci():
        pytest.fail(f"boot lab unavailable on CI: {reason}")
    pytest.skip(f"boot lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab_images(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scenario name -> image, all built in parallel (scenarios sharing an image share the build)."""
    from harness import build_images

    return build_images(_scenarios(), tmp_path_factory.mktemp("lab-images"))


@pytest.fixture(scope="session")
def lab_boots(lab_images: dict[str, Path]) -> dict[str, BootResult]:
    """scenario name -> boot result; every scenario booted once, in parallel."""
    from harness import boot_all

    _BOOTS.update(boot_all(_scenarios(), lab_images))
    return _BOOTS


_BOOTS: dict[str, BootResult] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per boot: the owners of the scenario's devices and the boot time."""
    if not _BOOTS:
        return
    from scenarios import SCENARIOS, watched

    terminalreporter.section("boot lab")
    for name, result in _BOOTS.items():
        owners = " ".join(f"{bdf}={result.owners.get(bdf, '?')}" for bdf in watched(SCENARIOS[name]))
        state = "" if result.completed else " (stopped before the probe)"
        terminalreporter.write_line(f"{name:24} {result.seconds:5.1f}s {owners}{state}")
