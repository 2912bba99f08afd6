"""Shared test helpers: the fixture roots, running the CLI in-process, the real-world tier's skip rule."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def doctor(*args: str) -> Run:
    """Run `pciback-doctor ARGS` in-process, as a user would from the shell."""
    from pciback_doctor.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


def copy_fixture(name: str, where: Path) -> Path:
    """A copy of fixture `name` under `where`, for tests that write into the root."""
    import shutil

    root = where / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    return root


def devices(run: Run) -> dict[str, dict[str, Any]]:
    return {d["bdf"]: d for d in run.json()["devices"]}


def finding_ids(run: Run) -> list[str]:
    return [f["id"] for f in run.json()["findings"]]


def unavailable(reason: str) -> None:
    """A real-world input cannot be had: skip locally, fail on CI (which installs everything)."""
    if on_ci():
        pytest.fail(f"real-world tier unavailable on CI: {reason}")
    pytest.skip(f"real-world tier unavailable: {reason}")
