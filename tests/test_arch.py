"""Per-architecture backend advice when the root has no kernel config: the kernel's own bytes (a
module's ELF header, the image header) say which architecture it is, and the advice names that
architecture's symbol, never one it lacks (XEN_PCIDEV_BACKEND `depends on X86`, drivers/xen/Kconfig)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from facts.test_machine import ARM64_IMAGE, bzimage, elf
from helpers import FIXTURES, doctor
from test_cli import schema
from test_kernel_gate import ARM64_DOM0, X86_DOM0, XENLINUX

K = "6.1.0-test"


def root_with(tmp_path: Path, module: bytes | None = None, image: bytes | None = None) -> Path:
    """A root without a config: a module tree holding one module (not the backend), and/or an image."""
    tree = tmp_path / "lib" / "modules" / K
    tree.mkdir(parents=True)
    (tree / "modules.alias").write_text("")
    if module is not None:
        (tree / "kernel").mkdir()
        (tree / "kernel" / "e1000e.ko").write_bytes(module)
        (tree / "modules.dep").write_text("kernel/e1000e.ko:\n")
    else:
        (tree / "modules.dep").write_text("")
    if image is not None:
        (tmp_path / "boot").mkdir()
        (tmp_path / "boot" / f"vmlinuz-{K}").write_bytes(image)
    return tmp_path


def pb101(root: Path) -> dict:  # type: ignore[type-arg]
    run = doctor("check", "--root", str(root), "--kernel", K, "--cmdline", "ro", "--format", "json")
    jsonschema.validate(run.json(), schema())
    found = [f for f in run.json()["findings"] if f["id"] == "PB101"]
    assert len(found) == 1, run.out
    return {"finding": found[0], "target": run.json()["target"], "out": run.out}


@pytest.mark.parametrize(
    ("module", "image", "arch", "symbol"),
    [
        (elf(183), None, "arm64", "XEN_PCIDEV_STUB"),  # an arm64 module
        (elf(40, wide=False), None, "arm", "XEN_PCIDEV_STUB"),
        (elf(62), None, "x86_64", "XEN_PCIDEV_BACKEND"),
        (None, ARM64_IMAGE, "arm64", "XEN_PCIDEV_STUB"),  # no module: Debian's arm64 Image header
        (None, bzimage(0x020F, 1), "x86_64", "XEN_PCIDEV_BACKEND"),
    ],
)
def test_no_config_advice_follows_the_kernels_bytes(
    tmp_path: Path, module: bytes | None, image: bytes | None, arch: str, symbol: str
) -> None:
    got = pb101(root_with(tmp_path, module, image))
    fixes = got["finding"]["fixes"]
    assert fixes[0]["commands"] == [f"scripts/config --module {symbol}", "make olddefconfig"]
    other = {"XEN_PCIDEV_STUB", "XEN_PCIDEV_BACKEND"} - {symbol}
    assert not any(o in got["out"] for o in other), got["out"]  # nowhere: not in fix --strategy text either
    assert got["target"]["arch"]["name"] == arch
    assert f"an {arch} kernel" in got["finding"]["message"]


def test_unknown_architecture_names_no_command(tmp_path: Path) -> None:
    """Neither a config nor the kernel's bytes: both symbols are named, with their architectures,
    and no command is offered (it could be the wrong one)."""
    got = pb101(root_with(tmp_path))
    fix = got["finding"]["fixes"][0]
    assert fix["commands"] == []
    assert "CONFIG_XEN_PCIDEV_BACKEND on x86" in fix["description"]
    assert "CONFIG_XEN_PCIDEV_STUB on arm64" in fix["description"]
    assert got["target"]["arch"] is None


def test_fix_names_the_arm_symbol(tmp_path: Path) -> None:
    root = root_with(tmp_path, elf(183))
    run = doctor(
        "fix", "--root", str(root), "--kernel", K, "--cmdline", "ro", "--device", "0000:01:00.0=8086:10d3"
    )
    assert "build it with CONFIG_XEN_PCIDEV_STUB=y or =m" in run.out
    assert "XEN_PCIDEV_BACKEND" not in run.out


RISCV = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/riscv 6.1.0 Kernel Configuration\n#\nCONFIG_RISCV=y\nCONFIG_PCI=y\n"


def test_architecture_without_xen(tmp_path: Path) -> None:
    """Linux defines CONFIG_XEN only for x86, arm64 and arm: a riscv kernel gets no symbol to set."""
    config = tmp_path / "config"
    config.write_text(RISCV)
    run = doctor("kernel", "--config", str(config), "--format", "json")
    found = {f["id"]: f for f in run.json()["findings"]}
    assert run.code == 1
    assert "Linux has Xen only on x86, arm64 and arm" in found["PB101"]["message"]
    assert all(fix["commands"] == [] for f in found.values() for fix in f["fixes"])
    assert "XEN_PCIDEV" not in run.out


def test_header_shows_the_architecture(tmp_path: Path) -> None:
    """Text, Markdown and JSON say which architecture the advice is for, and from what."""
    root = root_with(tmp_path, elf(183))
    common = ("check", "--root", str(root), "--kernel", K, "--cmdline", "ro")
    text = doctor(*common).out
    shown = f"  arch       arm64  [lib/modules/{K}/kernel/e1000e.ko: ELF machine: arm64]"
    assert shown in text.splitlines()
    assert (
        f"- **arch:** `arm64 [lib/modules/{K}/kernel/e1000e.ko: ELF machine: arm64]`"
        in doctor(*common, "--format", "markdown").out
    )
    arch = doctor(*common, "--format", "json").json()["target"]["arch"]
    assert arch == {
        "name": "arm64",
        "evidence": {"path": f"lib/modules/{K}/kernel/e1000e.ko", "line": None, "text": "ELF machine: arm64"},
    }


@pytest.mark.parametrize(
    ("config", "arch", "line"),
    [(ARM64_DOM0, "arm64", "CONFIG_ARM64=y"), (XENLINUX, "x86_64", "CONFIG_X86_64=y")],
)
def test_gate_names_the_configs_architecture(tmp_path: Path, config: str, arch: str, line: str) -> None:
    path = tmp_path / "config"
    path.write_text(config)
    run = doctor("kernel", "--config", str(path), "--format", "json")
    jsonschema.validate(run.json(), schema())  # a XenLinux backend is the module `pciback`
    assert run.json()["target"]["arch"]["name"] == arch
    assert run.json()["target"]["arch"]["evidence"]["text"] == line
    assert f": {arch}, backend" in doctor("kernel", "--config", str(path)).out.splitlines()[0]


def test_fixture_config_names_the_architecture() -> None:
    """A root with a config: the architecture is the config's. This hand-made one has neither
    CONFIG_X86_64 nor CONFIG_64BIT: its header says x86, and the width is not claimed."""
    run = doctor("check", "--root", str(FIXTURES / "builtin-cmdline-hide"), "--format", "json")
    arch = run.json()["target"]["arch"]
    assert arch["name"] == "x86"
    assert arch["evidence"]["path"] == "boot/config-6.1.0-56-xendom0"
    assert arch["evidence"]["text"] == "header: Linux/x86 6.1.192"


def arm_root(tmp_path: Path, config: str = ARM64_DOM0) -> Path:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{K}").write_text(config)
    return tmp_path


def pb111(root: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    run = doctor("check", "--root", str(root), "--kernel", K, "--cmdline", "ro", "--format", "json", *args)
    jsonschema.validate(run.json(), schema())
    return [f for f in run.json()["findings"] if f["id"] == "PB111"]


DEVICE = ("--device", "0000:01:00.0=8086:10d3")


@pytest.mark.parametrize(
    ("xen", "severity", "cited"),
    [
        ("dom0_mem=1G console=dtuart", "warning", "dom0_mem=1G console=dtuart"),  # Xen's default: off
        ("pci-passthrough=on", None, None),
        ("pci-passthrough", None, None),  # a bare boolean is true (parse_params)
        ("pci-passthrough=1 dom0_mem=1G", None, None),
        ("pci-passthrough=on no-pci-passthrough", "warning", "no-pci-passthrough"),  # the last one wins
        ("pci-passthrough=off", "warning", "pci-passthrough=off"),
        ("no-pci-passthrough=off", None, None),  # `no-` inverts the value
        ("pci_passthrough=on", "warning", "pci_passthrough=on"),  # Xen compares names exactly (strcmp)
        ("pci-passthrough=maybe", "warning", "pci-passthrough=maybe"),  # a bad value changes nothing
        ("pci-passthrough=ON", "warning", "pci-passthrough=ON"),  # parse_bool is case-sensitive
        ("pci-passthrough=", None, None),  # an empty value is true
    ],
)
def test_xen_on_arm_needs_pci_passthrough_on(
    tmp_path: Path, xen: str, severity: str | None, cited: str | None
) -> None:
    found = pb111(arm_root(tmp_path), *DEVICE, "--xen-cmdline", xen)
    if severity is None:
        assert found == []
        return
    assert [f["severity"] for f in found] == [severity]
    assert found[0]["evidence"][0]["text"] == cited
    assert "pci-passthrough=on" in found[0]["fixes"][0]["description"]


def test_xen_on_arm_without_a_xen_command_line_is_a_reminder(tmp_path: Path) -> None:
    found = pb111(arm_root(tmp_path), *DEVICE)
    assert [f["severity"] for f in found] == ["info"]
    assert "Xen's command line was not found" in found[0]["message"]


@pytest.mark.parametrize(
    ("config", "args"),
    [
        (ARM64_DOM0, ()),  # no device meant for passthrough: nothing to assign
        (X86_DOM0, DEVICE),  # x86: Xen assigns PCI devices without such a switch
    ],
)
def test_pb111_only_for_arm_passthrough(tmp_path: Path, config: str, args: tuple[str, ...]) -> None:
    assert pb111(arm_root(tmp_path, config), *args, "--xen-cmdline", "dom0_mem=1G") == []


def module_tree(where: Path, module: bytes) -> Path:
    tree = where / K
    (tree / "kernel").mkdir(parents=True)
    (tree / "kernel" / "e1000e.ko").write_bytes(module)
    (tree / "modules.dep").write_text("kernel/e1000e.ko:\n")
    (tree / "modules.alias").write_text("")
    return tree


def arm64_image(where: Path) -> Path:
    """An arm64 Image header and nothing the image reader can use: no IKCONFIG, no symbols."""
    (where / "vmlinuz").write_bytes(ARM64_IMAGE + bytes(4096))
    return where / "vmlinuz"


@pytest.mark.parametrize(
    ("make", "code", "ids"),
    [
        # an arm64 module tree has no xen-pcifront because Arm has no PV guests: not an error
        (lambda p: module_tree(p, elf(183)), 0, ["PB503"]),
        (lambda p: module_tree(p, elf(62)), 1, ["PB501"]),  # x86_64 without the frontend: it may run PV
        (arm64_image, 0, ["PB503"]),
    ],
)
def test_domu_kernel_architecture_from_its_bytes(
    tmp_path: Path, make: Callable[[Path], Path], code: int, ids: list[str]
) -> None:
    run = doctor("domu", str(make(tmp_path)), "--format", "json")
    assert run.code == code
    found = run.json()["findings"]
    assert [f["id"] for f in found] == ids
    if code == 0:
        assert "an arm64 guest is never PV" in found[0]["message"]
        assert found[0]["evidence"][0]["text"] in ("ELF machine: arm64", "kernel image for arm64")


def test_defconfig_form_config_without_an_architecture_symbol(tmp_path: Path) -> None:
    """A defconfig-form config lists no CONFIG_ARM64 (`def_bool y`) and has no header: the modules'
    ELF header decides, so the advice is Arm's."""
    root = root_with(tmp_path, elf(183))
    (root / "boot").mkdir()
    (root / "boot" / f"config-{K}").write_text("CONFIG_XEN=y\nCONFIG_PCI=y\n")
    got = pb101(root)
    assert got["target"]["arch"]["name"] == "arm64"
    assert got["target"]["config"] == f"boot/config-{K}"
    assert got["finding"]["fixes"][0]["commands"][0] == "scripts/config --module XEN_PCIDEV_STUB"


HEADERLESS = (
    "# hand-written, no header\nCONFIG_XEN=y\nCONFIG_PCI=y\nCONFIG_XEN_BACKEND=y\nCONFIG_XEN_DOM0=y\n"
)


@pytest.mark.parametrize(
    ("args", "dom0_symbol", "domu"),
    [
        ((), "CONFIG_XEN_PCIDEV_BACKEND", "PB501"),  # nothing says: x86's symbols (the mainline default)
        (("--arch", "arm64"), "CONFIG_XEN_PCIDEV_STUB", "PB503"),  # Arm: the stub; guests never PV
    ],
)
def test_gate_arch_option_names_the_architecture(
    tmp_path: Path, args: tuple[str, ...], dom0_symbol: str, domu: str
) -> None:
    config = tmp_path / "config"
    config.write_text(HEADERLESS)
    run = doctor("kernel", "--config", str(config), "--role", "both", "--format", "json", *args)
    found = {f["id"]: f for f in run.json()["findings"]}
    assert dom0_symbol in found["PB101"]["message"]
    assert domu in found
    if args:
        assert run.json()["target"]["arch"]["evidence"] == {
            "path": "--arch",
            "line": None,
            "text": "ARCH=arm64",
        }
        assert "XEN_PCIDEV_BACKEND" not in run.out and "XEN_PCIDEV_FRONTEND" not in run.out


def test_gate_arch_option_never_overrides_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(X86_DOM0)
    run = doctor("kernel", "--config", str(config), "--arch", "arm64", "--format", "json")
    assert run.json()["target"]["arch"]["name"] == "x86_64"
