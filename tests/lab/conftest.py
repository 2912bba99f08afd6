"""Boot lab tier: skipped locally when its tools or packages are missing; on CI (CI=true) a
missing piece fails the tier instead, since CI installs everything the lab needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from harness import BootResult, dom0_kernel, require_tools, xen_elf

from debian import Unavailable

_HERE = Path(__file__).resolve().parent
T = TypeVar("T")


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


class _OnDemand(dict[str, T]):
    """A dict that makes a missing entry when it is first asked for."""

    def __init__(self, make: Callable[[str], T]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, name: str) -> T:
        value = self[name] = self._make(name)
        return value


def _selected(session: pytest.Session) -> list[str]:
    """The scenarios the selected tests are parametrized with (`-k NAME` boots only those; the rest
    are made when a test asks for them); all of them when every observed scenario is selected."""
    from scenarios import EXPECTED, SCENARIOS

    names = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "name" in callspec.params:
            names.add(callspec.params["name"])
    return list(SCENARIOS) if names >= set(EXPECTED) else [n for n in SCENARIOS if n in names]


@pytest.fixture(scope="session")
def lab_images(
    lab_ready: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Path]:
    """scenario name -> image; the selected ones built in parallel (scenarios sharing an image
    share the build), any other when first asked for."""
    from harness import build_images
    from scenarios import SCENARIOS

    out = tmp_path_factory.mktemp("lab-images")

    def one(name: str) -> Path:
        built = out / f"initramfs-{SCENARIOS[name].key()}.img"
        return built if built.exists() else build_images([SCENARIOS[name]], out)[name]

    images: dict[str, Path] = _OnDemand(one)
    images.update(build_images([SCENARIOS[n] for n in _selected(request.session)], out))
    return images


@pytest.fixture(scope="session")
def lab_boots(lab_images: dict[str, Path], request: pytest.FixtureRequest) -> dict[str, BootResult]:
    """scenario name -> boot result; the selected scenarios booted once, in parallel, any other
    when first asked for."""
    from harness import boot, boot_all
    from scenarios import SCENARIOS

    def one(name: str) -> BootResult:
        _BOOTS[name] = boot(SCENARIOS[name], lab_images[name])
        return _BOOTS[name]

    boots: dict[str, BootResult] = _OnDemand(one)
    selected = [SCENARIOS[n] for n in _selected(request.session)]
    _BOOTS.update(boot_all(selected, {s.name: lab_images[s.name] for s in selected}))
    boots.update(_BOOTS)
    return boots


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
        terminalreporter.write_line(f"{name:36} {result.seconds:5.1f}s {owners}{state}")
