"""Expanding a minimal (`make savedefconfig`) config the way Kconfig does: the kernel tree's own
`make olddefconfig`, run out of tree into a temporary directory (`O=`), so the user's tree is never
written. Only Kconfig's defaults can say what an absent symbol is; nothing here guesses them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pciback_doctor.arches import make_arch as arch_for_make
from pciback_doctor.errors import UsageError
from pciback_doctor.facts.kconfig import ConfigError, KernelConfig, parse_config

# `make olddefconfig` builds scripts/kconfig/conf (a few seconds) and runs it (one more)
_TIMEOUT = 300


def source_of_build(build_dir: Path) -> Path | None:
    """The source tree behind a build tree: `make O=D` leaves a `source` link in D; an in-tree
    build is its own source."""
    link = build_dir / "source"
    if (link / "Kconfig").is_file():
        return link.resolve()
    if (build_dir / "Kconfig").is_file() and (build_dir / "scripts" / "kconfig").is_dir():
        return build_dir
    return None


def expand(config: KernelConfig, text: str, source: Path, arch: str) -> KernelConfig:
    """`config` (minimal, its decoded `text`) as `make ARCH=arch olddefconfig` in `source` expands it."""
    make = shutil.which("make")
    if make is None:
        raise UsageError("expanding a defconfig-form config needs make, a C compiler, flex and bison")
    with tempfile.TemporaryDirectory(prefix="pciback-doctor-kconfig-") as tmp:
        (Path(tmp) / ".config").write_text(text)
        env = {**os.environ, "LC_ALL": "C"}
        env.pop("KCONFIG_CONFIG", None)  # the output must land in tmp/.config
        jobs = f"-j{min(os.cpu_count() or 1, 4)}"  # building scripts/kconfig/conf is most of the time
        cmd = [make, "-s", jobs, "-C", str(source), f"O={tmp}", f"ARCH={arch}", "olddefconfig"]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise UsageError(f"make olddefconfig in {source} took over {_TIMEOUT} s") from None
        if run.returncode != 0:
            last = (run.stderr.strip() or run.stdout.strip() or "no output").splitlines()[-1]
            raise UsageError(f"make ARCH={arch} olddefconfig in {source} failed: {last[:200]}")
        expanded = (Path(tmp) / ".config").read_text(errors="replace")
    how = f"make ARCH={arch} olddefconfig in {source}"
    try:
        full = parse_config(expanded, config.path)
    except ConfigError as exc:  # cannot happen with a working Kconfig; say so in one line
        raise UsageError(f"{how} wrote no usable config: {exc}") from None
    return config.expanded(full, how)


def expand_minimal(
    config: KernelConfig, text: str, source_dir: str | None, build_dir: str | None, arch: str | None
) -> KernelConfig:
    """The CI gate's minimal config, expanded with the tree it names; without a tree, exit 2."""
    source = Path(source_dir) if source_dir else source_of_build(Path(build_dir)) if build_dir else None
    if source is None:
        raise UsageError(
            f"{config.path} is a defconfig-form config (make savedefconfig): its absent symbols take "
            "Kconfig defaults, which only the kernel tree knows; pass --source-dir SRC (the kernel source "
            "tree) or expand it first with 'make olddefconfig'"
        )
    if not (source / "Kconfig").is_file() or not (source / "scripts" / "kconfig").is_dir():
        raise UsageError(f"--source-dir {source}: not a kernel source tree (no Kconfig, scripts/kconfig)")
    make_arch = arch or arch_for_make(config)
    if make_arch is None:
        raise UsageError(
            f"{config.path} is a defconfig-form config that does not say its architecture; pass --arch "
            "(as make's ARCH=, e.g. x86_64, i386, arm64, arm)"
        )
    return expand(config, text, source, make_arch)
