"""Snapshots of a root with the real Debian kernel (module tree, config, bzImage) and a real dracut
image: the collector under dash and busybox sh, then `--root SNAPSHOT` must answer as the root does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import FIXTURES
from test_snapshot import check_json, collect, manifest

pytestmark = pytest.mark.realworld


@pytest.fixture(scope="module")
def debian_root(amd64, dracut_image, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The unpacked linux-image package (hard links where the file system allows), the devices,
    modprobe.d and cmdline of a fixture, and a dracut image with the native driver in it."""
    root = tmp_path_factory.mktemp("snapshot") / "root"

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def replace(src: str, dst: str) -> None:
        # never write through a hard link: the linked file is the shared package cache
        Path(dst).unlink(missing_ok=True)
        shutil.copy2(src, dst)

    shutil.copytree(amd64.root, root, symlinks=True, copy_function=link_or_copy)
    shutil.copytree(
        FIXTURES / "classic-pciback-hide", root, symlinks=True, dirs_exist_ok=True, copy_function=replace
    )
    (root / f"boot/config-{amd64.release}").unlink()  # the fixture's belongs to another kernel
    shutil.copy2(amd64.config, root / f"boot/config-{amd64.release}")
    image = dracut_image(
        "snapshot", ["e1000e"], {"etc/modprobe.d/pciback.conf": "options xen-pciback hide=(0000:05:00.0)\n"}
    )
    shutil.copy2(image, root / f"boot/initrd.img-{amd64.release}")
    return root


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_snapshot_of_a_debian_kernel_root_answers_like_the_root(
    shell: str, debian_root: Path, amd64, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    snapshot = collect(debian_root, tmp_path / "host.tar.gz", shell)
    live = check_json("--root", str(debian_root))
    assert live["target"]["initramfs"] == f"boot/initrd.img-{amd64.release}"
    assert check_json("--root", str(snapshot)) == live
    files = manifest(snapshot)["files"]
    backend = next(p for p in files if p.endswith(("xen-pciback.ko", "xen-pciback.ko.xz")))
    assert files[backend]["status"] == "read"
    assert files[f"boot/initrd.img-{amd64.release}"]["status"] == "read"
    # module files the doctor does not read stay on the host
    assert sum(1 for p, f in files.items() if p.endswith(".ko") and f["status"] == "read") == 1
