"""Debian's real arm64 kernel package (linux-image-ABI-arm64-unsigned) as a dom0 root: the backend is
the stub (CONFIG_XEN_PCIDEV_STUB=m builds xen-pciback.ko, drivers/xen/xen-pciback/Makefile), and
without the config the kernel's own bytes (its modules' ELF headers, its Image header) still make
the advice name XEN_PCIDEV_STUB, never the x86-only XEN_PCIDEV_BACKEND."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import debian
from helpers import doctor, unavailable

pytestmark = pytest.mark.realworld
NIC = "0000:01:00.0=8086:10d3:020000"  # an Intel 82574L: e1000e, a module in Debian's arm64 kernel


@pytest.fixture(scope="module")
def arm64() -> tuple[Path, str]:
    try:
        return debian.kernel_tree("arm64")
    except (debian.Unavailable, subprocess.CalledProcessError) as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc


def check(root: Path, release: str, *extra: str) -> dict:  # type: ignore[type-arg]
    args = ("check", "--root", str(root), "--kernel", release, "--cmdline", "ro", "--device", NIC, *extra)
    run = doctor(*args)
    assert "XEN_PCIDEV_BACKEND" not in run.out, run.out
    return doctor(*args, "--format", "json").json()  # type: ignore[no-any-return]


def test_the_real_package_has_the_stub(arm64: tuple[Path, str]) -> None:
    root, release = arm64
    doc = check(root, release)
    assert doc["backend"]["mode"] == "module"
    assert doc["target"]["arch"]["name"] == "arm64"
    assert doc["target"]["arch"]["evidence"]["text"] == "CONFIG_ARM64=y"
    pb103 = next(f for f in doc["findings"] if f["id"] == "PB103")
    assert "CONFIG_XEN_PCIDEV_STUB: the arm64 stub" in pb103["message"]
    assert "PB101" not in [f["id"] for f in doc["findings"]]


def test_without_config_a_real_module_names_the_architecture(arm64: tuple[Path, str], tmp_path: Path) -> None:
    """No config, and a module tree whose backend is gone: the real e1000e.ko's ELF header says arm64."""
    root, release = arm64
    real = root / "lib" / "modules" / release
    tree = tmp_path / "lib" / "modules" / release
    (tree / "kernel").mkdir(parents=True)
    shutil.copy(real / "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", tree / "kernel" / "e1000e.ko")
    (tree / "modules.dep").write_text("kernel/e1000e.ko:\n")
    (tree / "modules.alias").write_text("alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n")
    doc = check(tmp_path, release)
    assert doc["backend"]["mode"] == "missing"
    assert doc["target"]["arch"]["name"] == "arm64"
    pb101 = next(f for f in doc["findings"] if f["id"] == "PB101")
    assert pb101["fixes"][0]["commands"] == ["scripts/config --module XEN_PCIDEV_STUB", "make olddefconfig"]


def test_without_config_or_modules_the_real_image_header(arm64: tuple[Path, str], tmp_path: Path) -> None:
    """Debian's arm64 vmlinuz is an uncompressed Image ("ARM\\x64" at 0x38, booting.rst): its first
    bytes are enough."""
    root, release = arm64
    (tmp_path / "boot").mkdir()
    with open(root / "boot" / f"vmlinuz-{release}", "rb") as image:
        (tmp_path / "boot" / f"vmlinuz-{release}").write_bytes(image.read(4096))
    (tmp_path / "lib" / "modules" / release).mkdir(parents=True)
    (tmp_path / "lib" / "modules" / release / "modules.dep").write_text("")
    (tmp_path / "lib" / "modules" / release / "modules.alias").write_text("")
    doc = check(tmp_path, release)
    assert doc["target"]["arch"] == {
        "name": "arm64",
        "evidence": {"path": f"boot/vmlinuz-{release}", "line": None, "text": "kernel image for arm64"},
    }
    pb101 = next(f for f in doc["findings"] if f["id"] == "PB101")
    assert "XEN_PCIDEV_STUB" in pb101["fixes"][0]["commands"][0]


@pytest.mark.parametrize("what", ["boot/vmlinuz-{r}", "lib/modules/{r}", "boot/config-{r}"])
def test_the_real_arm64_kernel_as_a_domu(arm64: tuple[Path, str], what: str) -> None:
    """Image, module tree or config: each says arm64, whose guests are never PV (no pcifront exists
    there: XEN_PCIDEV_FRONTEND depends on XEN_PV, x86 only), so the domU gate passes."""
    root, release = arm64
    run = doctor("domu", str(root / what.format(r=release)), "--format", "json")
    assert run.code == 0, run.out
    found = run.json()["findings"]
    assert [f["id"] for f in found] == ["PB503"]
    assert "an arm64 guest is never PV" in found[0]["message"]


def test_built_in_drivers_of_the_real_image(arm64: tuple[Path, str], tmp_path: Path) -> None:
    """Debian's 6.1 records no PCI ids of built-in drivers in modules.builtin.modinfo, so they are read
    from the Image itself: 8250_pci ("serial") is built in and binds an Oxford PCIe serial card
    (1415:c158) during kernel init, while e1000e is a module the modprobe fix can order."""
    from pciback_doctor.facts.arm64_image import arm64_builtin_pci

    root, release = arm64
    found = arm64_builtin_pci((root / "boot" / f"vmlinuz-{release}").read_bytes(), "vmlinuz")
    assert found is not None and found.error is None
    names = {d.name for d in found.drivers}
    assert {"serial", "pcieport", "8250_pericom"} <= names
    serial = next(d for d in found.drivers if d.name == "serial")
    assert len(serial.ids) > 400  # 8250_pci's table
    devices = {
        d["bdf"]: d for d in check(root, release, "--device", "0000:02:00.0=1415:c158:070002")["devices"]
    }
    assert (
        devices["0000:02:00.0"]["winner"] == "serial" and devices["0000:02:00.0"]["native_mode"] == "builtin"
    )
    assert devices["0000:01:00.0"]["native_driver"] == "e1000e"
    fix = doctor("fix", "--root", str(root), "--kernel", release, "--cmdline", "ro", "--device", NIC)
    assert fix.out.startswith("# modprobe:"), fix.out[:400]  # the simplest fix is offered on arm64 too
