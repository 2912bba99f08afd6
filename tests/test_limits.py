"""Hostile and broken input (issue 16): every input is a regular file within its limit, every bomb
stops at a named limit. Each case runs the doctor as a user would, in a subprocess with a timeout:
a hang fails the test, a traceback fails it, and the user sees a one-line error or a finding.
Bombs are generated here at test time, never committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import FIXTURES

RELEASE = "6.1.0-56-xendom0"  # the example fixture's kernel (its boot/config-R)
TIMEOUT = 60  # seconds: every case here finishes in about one; a hang or a bomb does not


def run_doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PCIBACK_DOCTOR_DEBUG"}
    run = subprocess.run(
        [sys.executable, "-m", "pciback_doctor", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    return run


def usage_error(*args: str) -> str:
    run = run_doctor(*args)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr.count("\n") == 1, run.stderr
    return run.stderr


def findings(*args: str) -> dict[str, list[str]]:
    run = run_doctor(*args, "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    found: dict[str, list[str]] = {}
    for f in json.loads(run.stdout)["findings"]:
        found.setdefault(f["id"], []).append(f["message"])
    return found


def analysis(*args: str) -> Any:
    run = run_doctor(*args, "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(FIXTURES / "example", copy, symlinks=True)
    return copy


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


# --- 1. only regular files are inputs -----------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        f"boot/initrd.img-{RELEASE}",
        f"boot/config-{RELEASE}",
        "boot/grub/grub.cfg",
        "etc/modprobe.d/x.conf",
        "etc/xen/guest.cfg",
        "etc/dracut.conf",
    ],
)
def test_a_fifo_inside_the_root_is_reported_not_waited_for(root: Path, rel: str) -> None:
    fifo(root / rel)
    found = findings("--root", str(root), "--kernel", RELEASE)
    assert f"{rel}: a FIFO, not a regular file" in found["PB110"]
    if rel.startswith("boot/initrd"):
        assert any("cannot be read: a FIFO" in m for m in found["PB403"])


@pytest.mark.parametrize(
    "option", ["--waivers", "--config", "--cmdline-file", "--domu-config", "--initramfs"]
)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_named_on_the_command_line_is_a_usage_error(
    tmp_path: Path, option: str, special: str
) -> None:
    path = str(fifo(tmp_path / "fifo")) if special == "fifo" else special
    err = usage_error("--root", str(FIXTURES / "example"), option, path)
    kind = "a FIFO" if special == "fifo" else "a character device"
    assert err == f"pciback-doctor: {option} {path}: {kind}, not a regular file\n"


@pytest.mark.parametrize(
    "command", [("domu",), ("initramfs",), ("--root", str(FIXTURES / "example"), "--domu-kernel")]
)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_domu_and_initramfs_arguments_must_be_regular_files(
    tmp_path: Path, command: tuple[str, ...], special: str
) -> None:
    path = str(fifo(tmp_path / "fifo")) if special == "fifo" else special
    assert "not a regular file" in usage_error(*command, path)


def test_an_oversized_text_file_is_reported_by_its_limit(root: Path) -> None:
    with open(root / "etc/modprobe.d/big.conf", "wb") as big:
        big.truncate((16 << 20) + 1)  # sparse: costs no disk
    found = findings("--root", str(root))
    assert "etc/modprobe.d/big.conf: larger than the text file size (16 MiB) limit" in found["PB110"]


def test_an_oversized_explicit_input_is_a_usage_error(tmp_path: Path) -> None:
    big = tmp_path / "cmdline"
    with open(big, "wb") as out:
        out.truncate((16 << 20) + 1)
    err = usage_error("--root", str(FIXTURES / "example"), "--cmdline-file", str(big))
    assert err.endswith("larger than the text file size (16 MiB) limit\n")


def test_a_device_inside_the_root_is_never_opened() -> None:
    from pciback_doctor.facts.root import Root

    live = Root("/")
    assert live.read_bytes("dev/zero") is None  # would never end
    assert live.unreadable["dev/zero"] == "a character device, not a regular file"
