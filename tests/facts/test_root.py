"""Reading through a root: absolute and relative symlinks stay inside it (SPEC §2)."""

import os
from pathlib import Path

from pciback_doctor.facts.root import Root


def test_absolute_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/modules/6.1").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.1/modules.dep").write_text("x")
    os.symlink("/usr/lib", tmp_path / "lib")  # merged /usr: /lib -> /usr/lib
    root = Root(tmp_path)
    assert root.read_text("lib/modules/6.1/modules.dep") == "x"
    assert root.listdir("lib/modules") == ["6.1"]


def test_dotdot_cannot_leave_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_text("s")
    inner = tmp_path / "root"
    (inner / "etc").mkdir(parents=True)
    os.symlink("../../../outside", inner / "etc/link")
    root = Root(inner)
    assert root.read_text("etc/link/secret") is None
    assert root.read_text("../outside/secret") is None


def test_symlink_loops_end(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert Root(tmp_path).resolve("a") is None


def test_readlink_gives_the_driver_name_target(tmp_path: Path) -> None:
    dev = tmp_path / "sys/devices/pci0000:00/0000:00:04.0"
    dev.mkdir(parents=True)
    os.symlink("../../../bus/pci/drivers/e1000e", dev / "driver")
    assert (
        Root(tmp_path).readlink("sys/devices/pci0000:00/0000:00:04.0/driver")
        == "../../../bus/pci/drivers/e1000e"
    )
