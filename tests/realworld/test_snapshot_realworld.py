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
    """The unpacked linux-image package (hard links where the file system allows) with its real
    config and module indexes, the devices, modprobe.d and cmdline of a fixture, and a dracut
    image (the root's own file) with the native driver in it."""
    root = tmp_path_factory.mktemp("snapshot") / "root"

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(amd64.root, root, symlinks=True, copy_function=link_or_copy)
    # the fixture's devices, modprobe.d and cmdline, in directories of the root's own: the
    # package's files (hard links into the shared cache) are never written to
    fixture = FIXTURES / "classic-pciback-hide"
    for top in ("etc", "proc", "sys"):
        assert not (root / top).exists()
        shutil.copytree(fixture / top, root / top, symlinks=True)
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
