"""Real-world tier: real Debian kernel packages and real dracut images, cached outside the repo."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import debian
from helpers import unavailable


@dataclass(frozen=True)
class KernelTree:
    root: Path
    release: str

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"


def _tree(flavour: str) -> KernelTree:
    try:
        root, release = debian.kernel_tree(flavour)
    except (debian.Unavailable, subprocess.CalledProcessError) as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    return KernelTree(root, release)


@pytest.fixture(scope="session")
def amd64() -> KernelTree:
    return _tree("amd64")


@pytest.fixture(scope="session")
def cloud() -> KernelTree:
    return _tree("cloud-amd64")


@pytest.fixture(scope="session")
def dracut_image(amd64: KernelTree, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Build an image with the real dracut from the real Debian module tree."""
    if shutil.which("dracut") is None:
        unavailable("dracut not installed (Debian package dracut-core)")
    confdir = tmp_path_factory.mktemp("dracut-confdir")
    out = tmp_path_factory.mktemp("images")

    def build(
        name: str, drivers: list[str], files: dict[str, str], modules: str = "base udev-rules rootfs-block"
    ) -> Path:
        image = out / f"{name}.img"
        cmd = [
            "dracut", "-q", "--force", "--no-hostonly", "--kver", amd64.release,
            "--kmoddir", str(amd64.moddir), "--conf", "/dev/null", "--confdir", str(confdir),
            "-m", modules, "--drivers", " ".join(drivers),
        ]  # fmt: skip
        for inner, content in files.items():
            src = out / f"{name}-{inner.replace('/', '_')}"
            src.write_text(content)
            cmd += ["--include", str(src), inner]
        result = subprocess.run([*cmd, str(image)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        return image

    return build
