"""Real Debian packages for the real-world and boot-lab tiers.

Packages are fetched with `apt-get download` into a cache outside the repository
(`$PCIBACK_DOCTOR_CACHE`, default `~/.cache/pciback-doctor`) and extracted once. The kernel ABI
comes from `apt-cache depends linux-image-amd64` (or `$PCIBACK_DOCTOR_KABI`), so the tests follow
Debian's ABI bumps instead of pinning a version that will vanish from the archive.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Unavailable(Exception):
    """A package or tool this tier needs cannot be had here; the message says why."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "pciback-doctor"
    path = Path(os.environ.get("PCIBACK_DOCTOR_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    # pytest-xdist or two CI runs may fetch the same package at once.
    with open(cache_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kernel_abi() -> str:
    """The ABI of Debian's current default kernel, e.g. `6.1.0-56`."""
    if abi := os.environ.get("PCIBACK_DOCTOR_KABI"):
        return abi
    if shutil.which("apt-cache") is None:
        raise Unavailable("apt-cache not found: not a Debian machine")
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"Depends: linux-image-(\d+\.\d+\.\d+-\d+)-amd64", out)
    if match is None:
        raise Unavailable("apt-cache knows no linux-image-amd64 (run apt-get update)")
    return match.group(1)


def fetch_deb(package: str, arch: str | None = None) -> Path:
    """Download `package` (current candidate; of a foreign `arch` when given, which needs
    `dpkg --add-architecture ARCH && apt-get update`) into the cache and return the .deb."""
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    with _locked(package):
        found = sorted(debs.glob(f"{package}_*_{arch or '*'}.deb"))
        if found:
            return found[-1]
        if shutil.which("apt-get") is None:
            raise Unavailable("apt-get not found: cannot download Debian packages")
        result = subprocess.run(
            ["apt-get", "download", "-q", f"{package}:{arch}" if arch else package],
            cwd=debs,
            capture_output=True,
            text=True,
            check=False,
        )
        found = sorted(debs.glob(f"{package}_*_{arch or '*'}.deb"))
        if result.returncode != 0 or not found:
            raise Unavailable(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
        return found[-1]


def extract_deb(package: str) -> Path:
    """The package's files extracted under the cache (a root-like tree)."""
    deb = fetch_deb(package)
    tree = cache_dir() / "trees" / deb.stem
    with _locked(deb.stem):
        stamp = tree / ".extracted"
        if not stamp.exists():
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
            stamp.touch()
    return tree


def kernel_tree(flavour: str = "amd64") -> tuple[Path, str]:
    """An extracted `linux-image-ABI-FLAVOUR-unsigned` with depmod run; returns (root, release).

    Debian's package ships no modules.alias / modules.dep (the postinst runs depmod), so we run
    depmod ourselves, as an installed system would have.
    """
    release = f"{kernel_abi()}-{flavour}"
    root = extract_deb(f"linux-image-{release}-unsigned")
    with _locked(f"depmod-{release}"):
        moddir = _module_dir(root, release)
        if not (moddir / "modules.alias").exists():
            depmod = shutil.which("depmod") or "/usr/sbin/depmod"
            if not Path(depmod).exists():
                raise Unavailable("depmod not found (Debian package kmod)")
            subprocess.run([depmod, "-b", str(root), release], check=True)
    return root, release


def _module_dir(root: Path, release: str) -> Path:
    for base in ("lib/modules", "usr/lib/modules"):
        if (root / base / release).is_dir():
            return root / base / release
    raise Unavailable(f"no module tree for {release} under {root}")
