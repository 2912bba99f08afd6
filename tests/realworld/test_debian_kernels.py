"""The doctor on real Debian kernel packages (the dom0 flavour and the cloud flavour)."""

from __future__ import annotations

import pytest

from helpers import devices, doctor, finding_ids
from pciback_doctor.facts.modules import read_modinfo
from pciback_doctor.facts.root import Root
from pciback_doctor.facts.system import Options, read_module_tree

pytestmark = pytest.mark.realworld

E1000E = "0000:05:00.0=8086:10d3:020000"


def test_amd64_backend_is_a_module_with_dom0_support(amd64) -> None:  # type: ignore[no-untyped-def]
    run = doctor(
        "--root", str(amd64.root), "--kernel", amd64.release, "--cmdline", "ro xen-pciback.hide=(0000:05:00.0)",
        "--device", E1000E, "--format", "json",
    )  # fmt: skip
    doc = run.json()
    assert doc["backend"]["mode"] == "module"
    assert doc["target"]["config"] == f"boot/config-{amd64.release}"
    ids = finding_ids(run)
    assert "PB103" in ids and "PB106" not in ids and "PB101" not in ids
    dev = devices(run)["0000:05:00.0"]
    assert (dev["native_driver"], dev["native_mode"]) == ("e1000e", "module")
    # no initramfs in a bare kernel package, but nothing orders the backend first: e1000e wins
    # wherever it loads (FACTS: the first row of the lab table)
    assert (dev["prediction"], dev["winner"], dev["phase"]) == ("not-claimed", "e1000e", None)


def test_cloud_kernel_cannot_be_dom0(cloud) -> None:  # type: ignore[no-untyped-def]
    run = doctor("--root", str(cloud.root), "--kernel", cloud.release, "--cmdline", "ro", "--format", "json")
    assert run.json()["backend"]["mode"] == "module"  # built, but useless without XEN_DOM0
    pb106 = next(f for f in run.json()["findings"] if f["id"] == "PB106")
    assert pb106["evidence"][0]["text"] == "# CONFIG_XEN_DOM0 is not set"
    assert run.code == 1


def test_kernel_gate_on_real_configs(amd64, cloud) -> None:  # type: ignore[no-untyped-def]
    assert doctor("kernel", "--config", str(amd64.config), "--role", "both").code == 0
    assert doctor("kernel", "--config", str(cloud.config), "--role", "dom0").code == 1
    gate = doctor("kernel", "--config", str(cloud.config), "--role", "domu", "--format", "json")
    assert gate.code == 0 and "PB506" in finding_ids(gate)  # the cloud kernel is a fine PV domU
    builtin = doctor(
        "kernel", "--config", str(amd64.config), "--modules-builtin", str(amd64.moddir / "modules.builtin"),
        "--format", "json",
    )  # fmt: skip
    assert "PB104" not in finding_ids(builtin)


def test_real_xen_pciback_parameters(amd64) -> None:  # type: ignore[no-untyped-def]
    tree = read_module_tree(Options(), Root(amd64.root), amd64.release)
    assert tree is not None and tree.has_file("xen-pciback")
    path = amd64.moddir / tree.files["xen_pciback"]
    info = read_modinfo(path.read_bytes(), str(path))
    params = info.params
    assert params["hide"] == "charp"
    # FACTS lists verbose_request too; the real 6.1 module records only these three
    assert params == {"hide": "charp", "passthrough": "bool", "permissive": "bool"}
    assert info.values("name") == ["xen_pciback"]
    assert not [v for v in info.values("alias") if v.startswith("pci:")]  # udev never autoloads it


@pytest.mark.parametrize(
    ("modalias", "module"),
    [
        ("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", "e1000e"),
        ("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", "nvme"),
        ("pci:v00008086d0000A36Dsv00001043sd00008694bc0Csc03i30", "xhci_pci"),
        ("pci:v00008086d00001521sv00008086sd00000001bc02sc00i00", "igb"),
    ],
)
def test_real_modules_alias_lookups(amd64, modalias: str, module: str) -> None:  # type: ignore[no-untyped-def]
    tree = read_module_tree(Options(), Root(amd64.root), amd64.release)
    assert tree is not None
    modules, builtins = tree.lookup_modalias(modalias)
    assert module in [a.module for a in modules]
    assert builtins == []


def test_real_modules_alias_is_case_sensitive(amd64) -> None:  # type: ignore[no-untyped-def]
    tree = read_module_tree(Options(), Root(amd64.root), amd64.release)
    assert tree is not None
    modules, _ = tree.lookup_modalias("pci:v00008086d000010d3sv00008086sd0000a01fbc02sc00i00")
    assert "e1000e" not in [a.module for a in modules]  # kmod: fnmatch without FNM_CASEFOLD


def test_pci_serial_native_driver_is_read_from_the_kernel_image(amd64) -> None:  # type: ignore[no-untyped-def]
    # 8250_pci is built into Debian's kernel, and 6.1 records no PCI ids for built-ins: the doctor
    # reads them from boot/vmlinuz (8250_pci's table matches class 0700)
    run = doctor(
        "--root", str(amd64.root), "--kernel", amd64.release, "--cmdline", "ro",
        "--device", "0000:00:05.0=1b36:0002:070002", "--format", "json",
    )  # fmt: skip
    dev = devices(run)["0000:00:05.0"]
    assert (dev["native_driver"], dev["native_mode"]) == ("serial", "builtin")
    assert (dev["prediction"], dev["phase"], dev["winner"]) == ("not-claimed", "kernel", "serial")
